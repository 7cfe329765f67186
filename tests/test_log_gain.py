"""Log-scale gain, g = eˢ (the variant of §2 the paper tried): the layers and weight_norm's option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wnlib
from wnlib.parametrize import set_gain


def test_log_gain_layer_starts_as_the_plain_layer_and_matches_the_formula():
    torch.manual_seed(0)
    plain = nn.Linear(6, 4)
    w0 = plain.weight.detach().clone()
    layer = wnlib.weight_norm(plain, log_gain=True)
    assert sorted(n for n, _ in layer.named_parameters()) == ["bias", "weight_s", "weight_v"]
    torch.testing.assert_close(layer.weight, w0)
    with torch.no_grad():
        layer.weight_s.add_(torch.linspace(-1, 1, 4))
    v, s = layer.weight_v, layer.weight_s
    want = torch.exp(s)[:, None] * v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(layer.weight, want)
    assert "log_gain" in repr(layer)


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda: wnlib.nn.Linear(5, 3, log_gain=True), (4, 5)),
        (lambda: wnlib.nn.Conv1d(2, 3, 3, log_gain=True), (2, 2, 7)),
    ],
)
def test_gradients_are_the_chain_rule_through_exp(make, x_shape):
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(x_shape, dtype=torch.float64)
    names = [n for n, _ in layer.named_parameters()]

    def run(*params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    params = tuple(p.detach().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(run, params)
    assert torch.autograd.gradgradcheck(run, params)


def test_data_dependent_init_sets_log_gain():
    torch.manual_seed(0)
    model = nn.Sequential(
        wnlib.nn.Linear(4, 8, log_gain=True), nn.ReLU(), wnlib.nn.Linear(8, 2, log_gain=True)
    )
    x = torch.randn(256, 4) * 3 + 1
    wnlib.data_dependent_init(model, x)
    t = model[0](x)
    torch.testing.assert_close(t.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.std(0, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)


def test_states_convert_between_linear_and_log_gain_and_torch():
    torch.manual_seed(0)
    lin = wnlib.nn.Linear(5, 3)
    log = wnlib.nn.Linear(5, 3, log_gain=True)
    log.load_state_dict(lin.state_dict())  # g -> s = log g
    x = torch.randn(2, 5)
    torch.testing.assert_close(log(x), lin(x))
    back = wnlib.nn.Linear(5, 3)
    back.load_state_dict(log.state_dict())  # s -> g = eˢ
    torch.testing.assert_close(back(x), lin(x))
    target = torch.nn.utils.parametrizations.weight_norm(nn.Linear(5, 3))
    target.load_state_dict(wnlib.to_torch_state_dict(log))
    torch.testing.assert_close(target(x), log(x))
    plain = nn.Linear(5, 3)
    fresh = wnlib.nn.Linear(5, 3, log_gain=True)
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh(x), plain(x))


def test_reinit_remove_and_errors():
    torch.manual_seed(0)
    layer = wnlib.nn.Linear(5, 3, log_gain=True)
    wnlib.reinit(layer, lambda w: nn.init.constant_(w, 0.5))
    torch.testing.assert_close(layer.weight, torch.full((3, 5), 0.5))
    with pytest.raises(ValueError, match="log-scale gain"):
        set_gain(layer, -torch.ones(3))  # g ≤ 0 has no logarithm
    torch.testing.assert_close(layer.weight, torch.full((3, 5), 0.5))  # unchanged
    wnlib.reinit(layer, nn.init.zeros_)  # a zero slice: g = eps (the clamp), w = 0
    assert torch.equal(layer.weight, torch.zeros(3, 5))
    w = layer.weight.detach().clone()
    wnlib.remove_weight_norm(layer)
    assert type(layer) is nn.Linear and torch.equal(layer.weight, w)
    with pytest.raises(TypeError, match="log_gain must be True or False"):
        wnlib.nn.Linear(2, 2, log_gain="yes")


def test_log_gain_layers_under_torch_func_and_channels_last():
    """The log-scale gain composes exp with the op, so torch.func and any layout work as for g."""
    torch.manual_seed(0)
    conv = wnlib.nn.Conv2d(2, 3, 3, log_gain=True).double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    params = {k: p.detach() for k, p in conv.named_parameters()}

    def loss(p, xi):
        return torch.func.functional_call(conv, p, (xi[None],)).pow(2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(4):
        conv.zero_grad()
        conv(x[i : i + 1]).pow(2).sum().backward()
        for k, p in conv.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad)
    y = conv(x)
    conv = conv.to(memory_format=torch.channels_last)
    torch.testing.assert_close(conv(x.to(memory_format=torch.channels_last)), y)
