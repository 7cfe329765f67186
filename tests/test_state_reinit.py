"""In-place writes into the computed weight raise (they would be lost); wnlib.reinit initializes w."""

import copy
import io

import pytest
import torch
from torch import nn

import wnlib
from wnlib import nn as wnn

FIX = r"would be lost\. To initialize weight, use wnlib\.reinit\(module, init_fn"


def hifigan_init(m, mean=0.0, std=0.01):  # HiFi-GAN's init_weights
    if "Conv" in type(m).__name__:
        m.weight.data.normal_(mean, std)


WRITES = {
    "zeros_": lambda layer: nn.init.zeros_(layer.weight),
    "xavier_uniform_": lambda layer: nn.init.xavier_uniform_(layer.weight),
    "normal_": lambda layer: nn.init.normal_(layer.weight, std=0.05),
    "orthogonal_": lambda layer: nn.init.orthogonal_(layer.weight),
    "data.fill_": lambda layer: layer.weight.data.fill_(1.0),
    "setitem": lambda layer: layer.weight.__setitem__(0, 1.0),
    "view copy_": lambda layer: layer.weight[0].copy_(torch.zeros(3)),
    "iadd": lambda layer: layer.weight.__iadd__(1.0),
    "data =": lambda layer: setattr(layer.weight, "data", torch.zeros(4, 3)),
    "out=": lambda layer: torch.add(torch.zeros(4, 3), 1.0, out=layer.weight),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=list(WRITES))
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_in_place_write_into_the_computed_weight_raises_with_the_fix(write, grad):
    layer = wnn.Linear(3, 4)
    before = copy.deepcopy(layer.state_dict())
    with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match=FIX):
        write(layer)
    assert all(torch.equal(t, before[k]) for k, t in layer.state_dict().items())


def test_hifigan_init_weights_pitfall_raises_on_every_kind_of_module():
    model = nn.Sequential(wnn.Conv1d(2, 4, 3), wnlib.weight_norm(nn.ConvTranspose1d(4, 2, 3)))
    with pytest.raises(RuntimeError, match="normal_ would write into 'weight' of this Conv1d"):
        model.apply(hifigan_init)
    emb = wnlib.weight_norm(nn.Embedding(5, 3))  # a generated WeightNormEmbedding class
    with pytest.raises(RuntimeError, match="normal_ would write into 'weight' of this WeightNormEmbedding"):
        nn.init.normal_(emb.weight)


def test_reading_the_weight_still_works_and_gives_plain_tensors():
    torch.manual_seed(0)
    layer = wnn.Linear(3, 4)
    w = layer.weight
    assert isinstance(w.detach() * 2, torch.Tensor) and type(w * 2) is torch.Tensor
    assert type(w.clone()) is torch.Tensor and type(w.norm(dim=1)) is torch.Tensor
    torch.testing.assert_close(w.norm(dim=1), layer.weight_g.detach())
    assert repr(w).startswith("tensor(")
    w.sum().backward()  # gradients flow to v and g
    assert layer.weight_v.grad is not None and layer.weight_g.grad is not None
    buffer = io.BytesIO()
    torch.save(layer.weight.detach(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert type(loaded) is torch.Tensor and torch.equal(loaded, layer.weight.detach())
    copied = layer.weight.detach().clone()
    copied.zero_()  # a copy is the user's own tensor
    assert not torch.equal(layer.weight.detach(), copied)


@pytest.mark.parametrize(
    "init_fn",
    [nn.init.xavier_uniform_, nn.init.orthogonal_, lambda w: nn.init.normal_(w, 0.0, 0.01), nn.init.zeros_],
    ids=["xavier_uniform_", "orthogonal_", "normal_", "zeros_"],
)
@pytest.mark.parametrize(
    "plain_cls, args, dim",
    [(nn.Linear, (6, 5), 0), (nn.Conv1d, (3, 4, 3), 0), (nn.ConvTranspose2d, (3, 4, 3), 1)],
    ids=["Linear", "Conv1d", "ConvTranspose2d"],
)
def test_reinit_gives_what_the_init_fn_gives_a_plain_layer(init_fn, plain_cls, args, dim):
    plain = plain_cls(*args)
    torch.manual_seed(1)
    init_fn(plain.weight.data)
    model = nn.Sequential(wnlib.weight_norm(plain_cls(*args)), nn.ReLU())
    v, g = model[0].weight_v, model[0].weight_g
    torch.manual_seed(1)
    model.apply(lambda m: wnlib.reinit(m, init_fn))
    torch.testing.assert_close(model[0].weight.detach(), plain.weight.detach(), rtol=1e-6, atol=1e-7)
    assert model[0].weight_v is v and model[0].weight_g is g  # same Parameters: optimizers stay valid
    norms = torch.linalg.vector_norm(v.detach(), dim=[d for d in range(v.ndim) if d != dim])
    torch.testing.assert_close(g.detach(), norms)  # g = ‖w‖ per slice, so w = v


def test_reinit_on_plain_parameters_other_names_and_returned_tensors():
    plain = nn.Linear(3, 2)
    wnlib.reinit(plain, nn.init.zeros_)
    assert torch.equal(plain.weight, torch.zeros(2, 3))
    layer = wnlib.weight_norm(nn.Linear(3, 2), name="bias", dim=None)
    wnlib.reinit(layer, lambda b: torch.full_like(b, 0.5), name="bias")  # out of place: the returned w
    torch.testing.assert_close(layer.bias.detach(), torch.full((2,), 0.5))
    relu = nn.ReLU()
    assert wnlib.reinit(relu, nn.init.zeros_) is relu  # nothing to do
    with pytest.raises(ValueError, match=r"in place or return a tensor of shape \(2, 3\), but returned \(\)"):
        wnlib.reinit(wnn.Linear(3, 2), lambda w: w.sum())


def test_forwards_never_build_the_guard(monkeypatch):
    calls = []
    guard = wnlib.parametrize.EffectiveWeight
    original = guard.alias
    monkeypatch.setattr(guard, "alias", lambda *a: calls.append(1) or original(*a))
    seen = []

    class Probe(nn.Linear):  # a user class: weight_norm gives it a generated WeightNormProbe class
        def forward(self, x):
            seen.append(type(self.weight))
            return super().forward(x)

    model = nn.Sequential(
        wnn.Conv1d(2, 3, 3), wnn.ConvTranspose1d(3, 2, 3), nn.Flatten(), wnn.Linear(12, 4, dim=1),
        wnlib.weight_norm(Probe(4, 2)),
    )  # fmt: skip
    x = torch.randn(5, 2, 6)
    model(x).sum().backward()
    with torch.no_grad():
        model.eval()(x)
    assert calls == [] and seen == [torch.Tensor, torch.Tensor]
    assert type(model[4].weight) is guard and calls == [1]


@pytest.mark.slow
def test_generated_classes_compile_and_export_with_the_forward_wrapper():
    torch.manual_seed(2)
    emb = wnlib.weight_norm(nn.Embedding(10, 4))
    idx = torch.tensor([[1, 2], [3, 9]])
    expected = emb(idx)
    torch.testing.assert_close(torch.compile(emb)(idx), expected)
    exported = torch.export.export(emb, (idx,))
    torch.testing.assert_close(exported.module()(idx), expected)
