"""weight_norm(module), remove_weight_norm, the wnlib.nn layers, state_dict interop and serialization."""

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import wnlib
from wnlib import nn as wnn

LAYERS = [
    (nn.Linear, wnn.Linear, (6, 4), (3, 6), 0),
    (nn.Conv1d, wnn.Conv1d, (3, 4, 3), (2, 3, 8), 0),
    (nn.Conv2d, wnn.Conv2d, (3, 4, 3), (2, 3, 6, 6), 0),
    (nn.Conv3d, wnn.Conv3d, (2, 3, 2), (1, 2, 4, 4, 4), 0),
    (nn.ConvTranspose1d, wnn.ConvTranspose1d, (3, 4, 3), (2, 3, 5), 1),
    (nn.ConvTranspose2d, wnn.ConvTranspose2d, (3, 4, 3), (2, 3, 5, 5), 1),
    (nn.ConvTranspose3d, wnn.ConvTranspose3d, (2, 3, 2), (1, 2, 3, 3, 3), 1),
]
IDS = [layer[0].__name__ for layer in LAYERS]


def slice_norms(w: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.linalg.vector_norm(w, dim=[d for d in range(w.ndim) if d != dim])


@pytest.mark.parametrize("plain_cls, wn_cls, args, x_shape, dim", LAYERS, ids=IDS)
def test_layer_matches_plain_layer_with_same_weight(plain_cls, wn_cls, args, x_shape, dim):
    torch.manual_seed(0)
    layer = wn_cls(*args)
    assert {n for n, _ in layer.named_parameters()} == {"weight_v", "weight_g", "bias"}
    assert layer.weight_g.shape == (layer.weight_v.shape[dim],)
    torch.testing.assert_close(slice_norms(layer.weight, dim), layer.weight_g.detach())
    plain = plain_cls(*args)
    plain.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    x = torch.randn(x_shape)
    torch.testing.assert_close(layer(x), plain(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("plain_cls, wn_cls, args, x_shape, dim", LAYERS, ids=IDS)
def test_weight_norm_on_torch_module_is_the_wnlib_layer_and_keeps_outputs(
    plain_cls, wn_cls, args, x_shape, dim
):
    torch.manual_seed(1)
    plain = plain_cls(*args)
    x = torch.randn(x_shape)
    before = plain(x)
    module = wnlib.weight_norm(plain)
    assert type(module) is wn_cls and module is plain
    assert wnlib.weight_norm_specs(module)["weight"].dim == dim
    torch.testing.assert_close(module(x), before, rtol=1e-5, atol=1e-6)
    wnlib.remove_weight_norm(module)
    assert type(module) is plain_cls and isinstance(module.weight, nn.Parameter)
    torch.testing.assert_close(module(x), before, rtol=1e-5, atol=1e-6)


def test_constructor_arguments_are_torch_ones_plus_dim_and_eps():
    layer = wnn.Conv2d(4, 8, kernel_size=3, stride=2, padding=1, groups=2, bias=False, dtype=torch.float64)
    assert layer.stride == (2, 2) and layer.groups == 2 and layer.bias is None
    assert layer.weight_v.dtype == torch.float64 and layer.weight_v.shape == (8, 2, 3, 3)
    whole = wnn.Linear(3, 2, dim=None, eps=1e-8)
    assert whole.weight_g.shape == () and wnlib.weight_norm_specs(whole)["weight"].eps == 1e-8
    x = torch.randn(4, 3)
    torch.testing.assert_close(whole(x), nn.functional.linear(x, whole.weight, whole.bias))


def test_reset_parameters_initializes_v_and_sets_g_to_its_norm():
    layer = wnn.Linear(5, 3)
    with torch.no_grad():
        layer.weight_g.fill_(7.0)
    layer.reset_parameters()
    torch.testing.assert_close(layer.weight_g.detach(), slice_norms(layer.weight_v.detach(), 0))
    assert layer.weight.abs().max() <= 1 / 5**0.5 + 1e-6  # torch's kaiming-uniform bound for fan_in 5


def test_any_module_and_any_parameter():
    torch.manual_seed(2)
    emb = wnlib.weight_norm(nn.Embedding(10, 4))  # dim 0: one norm per embedding row
    torch.testing.assert_close(emb.weight.norm(dim=1), emb.weight_g.detach())
    idx = torch.tensor([1, 2, 3])
    assert emb(idx).shape == (3, 4)
    lin = wnlib.weight_norm(nn.Linear(4, 3), name="bias", dim=None)
    assert type(lin).__name__ == "WeightNormLinear" and lin.bias_g.shape == ()
    lin = wnlib.weight_norm(lin)  # a second parameter on the same module
    assert set(wnlib.weight_norm_specs(lin)) == {"weight", "bias"}
    wnlib.remove_weight_norm(lin, "bias")
    assert type(lin) is wnn.Linear
    wnlib.remove_weight_norm(lin)
    assert type(lin) is nn.Linear


def test_user_subclass_keeps_its_class():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    m = wnlib.weight_norm(Scaled(3, 2))
    assert isinstance(m, Scaled) and m.weight_v.shape == (2, 3)
    x = torch.randn(2, 3)
    torch.testing.assert_close(m(x), 2 * nn.functional.linear(x, m.weight, m.bias))
    wnlib.remove_weight_norm(m)
    assert type(m) is Scaled


def test_gradients_flow_to_v_and_g_only():
    layer = wnn.Conv2d(2, 3, 3)
    layer(torch.randn(1, 2, 5, 5)).sum().backward()
    assert layer.weight_v.grad is not None and layer.weight_g.grad is not None
    # eq. 4: ∇v is orthogonal to v, per output channel
    dots = (layer.weight_v.grad * layer.weight_v).sum(dim=(1, 2, 3))
    assert dots.abs().max() < 1e-5 * layer.weight_v.grad.abs().max()


# ---- state dict interop with torch's two APIs -------------------------------------------------------


def torch_parametrized(module, dim=0):
    return nn.utils.parametrizations.weight_norm(module, dim=dim)


def torch_legacy(module, dim=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module, dim=dim)


@pytest.mark.parametrize("wrap", [torch_parametrized, torch_legacy], ids=["parametrizations", "legacy"])
@pytest.mark.parametrize("plain_cls, wn_cls, args, x_shape, dim", LAYERS, ids=IDS)
def test_load_torch_state_dict_then_identical_outputs(wrap, plain_cls, wn_cls, args, x_shape, dim):
    torch.manual_seed(3)
    reference = wrap(plain_cls(*args), dim=dim)
    with torch.no_grad():  # a g that is not ‖v‖, so a wrong mapping would show
        for p in reference.parameters():
            p.mul_(1.5).add_(0.1)
    layer = wn_cls(*args)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(x_shape)
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-6, atol=1e-6)
    # and back: a fresh torch module loads wnlib's export in either format
    for fmt, wrap_back in (("parametrizations", torch_parametrized), ("legacy", torch_legacy)):
        back = wrap_back(plain_cls(*args), dim=dim)
        back.load_state_dict(wnlib.to_torch_state_dict(layer, format=fmt))
        torch.testing.assert_close(back(x), reference(x), rtol=1e-6, atol=1e-6)


def test_interop_in_a_model_and_with_dim_none():
    def make(wrap):
        torch.manual_seed(4)
        return nn.Sequential(wrap(nn.Linear(5, 4)), nn.ReLU(), wrap(nn.Linear(4, 2)))

    reference = make(lambda m: torch_parametrized(m, dim=None))
    model = make(lambda m: wnlib.weight_norm(m, dim=None))
    model.load_state_dict(reference.state_dict())
    x = torch.randn(3, 5)
    torch.testing.assert_close(model(x), reference(x))
    legacy = make(lambda m: torch_legacy(m, dim=None))
    legacy.load_state_dict(wnlib.to_torch_state_dict(model, "legacy"))
    torch.testing.assert_close(legacy(x), reference(x))


def test_load_plain_state_dict_into_weight_norm_layer():
    plain = nn.Conv2d(3, 4, 3)
    layer = wnn.Conv2d(3, 4, 3)
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(layer(x), plain(x))


def test_torch_convtranspose_default_dim_gives_a_clear_error():
    saved = torch_parametrized(nn.ConvTranspose2d(3, 5, 3))  # torch's default dim=0: per input channel
    with pytest.raises(ValueError, match="dim=0: build this layer with dim=0"):
        wnn.ConvTranspose2d(3, 5, 3).load_state_dict(saved.state_dict())
    layer = wnn.ConvTranspose2d(3, 5, 3, dim=0)
    layer.load_state_dict(saved.state_dict())
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(layer(x), saved(x))


# ---- copying and serialization --------------------------------------------------------------------


def model_with_every_kind():
    torch.manual_seed(5)
    return nn.Sequential(
        wnn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        wnlib.weight_norm(nn.ConvTranspose2d(3, 2, 3, padding=1)),
        nn.Flatten(),
        wnlib.weight_norm(nn.Bilinear(32, 32, 3)),  # a generated WeightNormBilinear class
        wnn.Linear(3, 2),
    )


def test_deepcopy_pickle_and_save_load_roundtrip():
    model = model_with_every_kind()
    x = torch.randn(2, 2, 4, 4)
    bilinear_in = model[:4](x)
    expected = model[5](model[4](bilinear_in, bilinear_in))

    def run(m):
        h = m[:4](x)
        return m[5](m[4](h, h))

    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert [type(m) for m in clone] == [type(m) for m in model]
        torch.testing.assert_close(run(clone), expected)
        clone[0].weight_v.data.add_(1.0)  # independent storage
        torch.testing.assert_close(run(model), expected)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = model_with_every_kind()
    for p in fresh.parameters():
        p.data.zero_()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(run(fresh), expected)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(6)
    model = nn.Sequential(wnn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), wnn.Linear(4 * 4 * 4, 3))
    x = torch.randn(5, 2, 6, 6)
    eager_out = model(x)
    eager_out.sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model)
    out = compiled(x)
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    for p, expected in zip(model.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_raise_specific_errors():
    v = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"g has shape \(5, 1\) but v .* has 4 slice\(s\) along dim 0"):
        wnlib.functional.weight_norm(v, torch.ones(5, 1))
    with pytest.raises(ValueError, match=r"expected g of shape \(3,\) or \(1, 3\)"):
        wnlib.functional.weight_norm(v, torch.ones(4), dim=1)
    with pytest.raises(IndexError, match=r"dim 2 is out of range for v with 2 dimensions"):
        wnlib.functional.weight_norm(v, torch.ones(4), dim=2)
    with pytest.raises(IndexError, match=r"dim -3 is out of range"):
        wnlib.weight_norm(nn.Linear(3, 4), dim=-3)
    with pytest.raises(TypeError, match="floating-point tensors, but v is torch.int64"):
        wnlib.functional.weight_norm(torch.ones(4, 3, dtype=torch.long), torch.ones(4, dtype=torch.long))
    with pytest.raises(TypeError, match="v is torch.float32 but g is torch.float64"):
        wnlib.functional.weight_norm(v, torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="v is empty"):
        wnlib.functional.weight_norm(torch.ones(0, 3), torch.ones(0))
    with pytest.raises(ValueError, match="input has 5 features but v has shape"):
        wnn.Linear(3, 4)(torch.randn(2, 5))


def test_module_level_errors():
    layer = wnn.Linear(3, 4)
    with pytest.raises(ValueError, match="weight norm is already applied to 'weight' of this Linear"):
        wnlib.weight_norm(layer)
    with pytest.raises(ValueError, match="has no weight norm on 'bias' to remove; it has weight norm on"):
        wnlib.remove_weight_norm(layer, "bias")
    with pytest.raises(ValueError, match="Linear has no weight norm on 'weight' to remove"):
        wnlib.remove_weight_norm(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"no parameter 'kernel'; its parameters are \['weight', 'bias'\]"):
        wnlib.weight_norm(nn.Linear(3, 4), name="kernel")
    with pytest.raises(ValueError, match="parametrized by torch.nn.utils.parametrize"):
        wnlib.weight_norm(torch_parametrized(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match=r"already has weight_v/weight_g"):
        wnlib.weight_norm(torch_legacy(nn.Linear(3, 4)))
    with pytest.raises(AttributeError, match="is computed from weight_v and weight_g"):
        layer.weight = nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="takes an nn.Module"):
        wnlib.weight_norm(torch.zeros(3))
    with pytest.raises(ValueError, match=r"weight_g has shape \(4, 1\), which does not fit"):
        wnn.Linear(3, 4, dim=None).load_state_dict(torch_legacy(nn.Linear(3, 4)).state_dict())


BAD_EPS = [(float("nan"), ValueError), (float("inf"), ValueError), (-1e-3, ValueError), ("1e-12", TypeError)]


@pytest.mark.parametrize("eps, error", BAD_EPS, ids=["nan", "inf", "negative", "str"])
def test_bad_eps_is_refused_where_it_enters_before_any_change(eps, error):
    with pytest.raises(error, match="eps must be"):
        wnn.Linear(3, 4, eps=eps)
    with pytest.raises(error, match="eps must be"):
        wnn.ConvTranspose2d(3, 4, 3, eps=eps)
    plain = nn.Linear(3, 4)
    with pytest.raises(error, match="eps must be"):
        wnlib.weight_norm(plain, eps=eps)
    assert type(plain) is nn.Linear and set(plain._parameters) == {"weight", "bias"}
    assert wnlib.weight_norm_specs(wnn.Linear(3, 4, eps=0)).get("weight").eps == 0.0  # 0: no clamp


def test_conv_forwards_keep_torch_options_output_size_and_padding_mode():
    torch.manual_seed(7)
    layer = wnn.ConvTranspose2d(2, 3, 3, stride=2)
    plain = nn.ConvTranspose2d(2, 3, 3, stride=2)
    plain.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    x = torch.randn(1, 2, 4, 4)
    out = layer(x, output_size=[10, 10])
    assert out.shape == (1, 3, 10, 10)
    torch.testing.assert_close(out, plain(x, output_size=[10, 10]))
    conv = wnn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect")
    plain_conv = nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect")
    plain_conv.load_state_dict({"weight": conv.weight.detach(), "bias": conv.bias.detach()})
    x = torch.randn(2, 2, 7)
    torch.testing.assert_close(conv(x), plain_conv(x))
