"""data_dependent_init's guarantees (issue 10): atomic on any error; non-finite and constant-feature errors
that name the layer and the features; σ computed stably; init_scale validated."""

import math

import pytest
import torch
from torch import nn

import wnlib
from wnlib import nn as wnn
from wnlib.init import InitError, constant_rtol


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).clone()


def state(model: nn.Module) -> dict:
    """Every parameter and buffer as raw bytes (so NaNs compare too), every mode and requires_grad."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    raw = {k: (t.dtype, tuple(t.shape), as_bytes(t)) for k, t in tensors.items()}
    modes = {n: m.training for n, m in model.named_modules()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    return {"raw": raw, "modes": modes, "requires_grad": grads}


def assert_same_state(before: dict, after: dict) -> None:
    assert before["modes"] == after["modes"] and before["requires_grad"] == after["requires_grad"]
    assert before["raw"].keys() == after["raw"].keys()
    for k, (dtype, shape, raw) in before["raw"].items():
        dtype2, shape2, raw2 = after["raw"][k]
        assert (dtype, shape) == (dtype2, shape2) and torch.equal(raw, raw2), f"{k} changed"


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.log()


class Fails(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("this module always fails")


def busy_model(middle: nn.Module | None = None, out_in: int = 8) -> nn.Sequential:
    """Layer 0 initializes first; then batch norm (running stats), dropout, frozen and eval-mode parts."""
    torch.manual_seed(0)
    model = nn.Sequential(
        wnn.Linear(3, 8),
        nn.BatchNorm1d(8),
        nn.Dropout(0.3),
        middle or nn.ReLU(),
        wnn.Linear(out_in, 4),
        wnn.MeanOnlyBatchNorm(4),
        nn.Tanh(),
        wnn.Linear(4, 2),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].num_batches_tracked.fill_(7)
        model[5].running_mean.uniform_(-1, 1)
        model[7].bias.fill_(float("nan"))  # even a NaN must come back bit for bit
    model[4].weight_v.requires_grad_(False)
    model[1].eval()
    return model


def nan_row(x: torch.Tensor) -> torch.Tensor:
    x[5] = math.nan
    return x


X = torch.randn(64, 3, generator=torch.Generator().manual_seed(5))
FAILURES = {  # name: (model, x, error, match)
    "a later layer's shape": (lambda: busy_model(out_in=5), X, ValueError, "failed in layer '4'"),
    "a later module's own error": (lambda: busy_model(Fails()), X, TypeError, "always fails"),
    "NaN after layer 0": (lambda: busy_model(Log()), X, InitError, r"layer '4' \(Linear\)"),
    "empty batch": (busy_model, X[:0], ValueError, "layer '0'"),
    "batch of 1": (busy_model, X[:1], ValueError, "layer '0'"),
    "NaN in x": (busy_model, nan_row(X.clone()), InitError, "x has 3 non-finite"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_any_error_leaves_every_parameter_buffer_and_mode_as_it_was(case):
    make, x, error, match = FAILURES[case]
    model = make()
    before = state(model)
    with pytest.raises(error, match=match):
        wnlib.data_dependent_init(model, x)
    assert_same_state(before, state(model))


class DropLastUnit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor([1.0, 1.0, 1.0, 0.0])


def test_a_later_constant_feature_leaves_layer_0_untouched():
    torch.manual_seed(1)
    model = nn.Sequential(wnn.Linear(3, 4), DropLastUnit(), wnn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight_v[1] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # feature 1 of layer 2 sees only zeros
    before = state(model)
    with pytest.raises(InitError, match=r"layer '2': feature\(s\) \[1\] are constant"):
        wnlib.data_dependent_init(model, torch.randn(64, 3))
    assert_same_state(before, state(model))


def test_success_changes_only_g_and_biases():
    model = busy_model()
    before = state(model)
    wnlib.data_dependent_init(model, torch.randn(64, 3))
    after = state(model)
    changed = {k for k in before["raw"] if not torch.equal(before["raw"][k][2], after["raw"][k][2])}
    assert (
        changed <= {f"{i}.{p}" for i in (0, 4, 7) for p in ("weight_g", "bias")} and "0.weight_g" in changed
    )
    assert before["modes"] == after["modes"] and before["requires_grad"] == after["requires_grad"]


# ---- non-finite values -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_x_raises_before_anything(bad):
    x = torch.randn(32, 3)
    x[4, 1] = bad
    with pytest.raises(InitError, match=r"x has 1 non-finite values \(NaN or inf\) out of 96"):
        wnlib.data_dependent_init(nn.Sequential(wnn.Linear(3, 2)), x)
    with pytest.raises(InitError, match=r"x\[1\] has 1 non-finite"):
        wnlib.data_dependent_init(Two(), (torch.randn(32, 3), x))


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = wnn.Linear(3, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x + y)


def test_non_finite_preactivations_name_the_layer_and_where_they_came_from():
    torch.manual_seed(2)
    model = nn.Sequential(wnn.Linear(3, 4), Log(), wnn.Linear(4, 2))
    with pytest.raises(
        InitError,
        match=r"layer '2' \(Linear\): \d+ of 128 pre-activations .* are non-finite "
        r"\(NaN or inf\); the first non-finite output came from layer '1'",
    ):
        wnlib.data_dependent_init(model, torch.randn(64, 3))
    overflow = torch.full((8, 3), 3e38) * torch.randn(8, 3).sign()  # finite x, t overflows float32
    with pytest.raises(InitError, match=r"layer '0' \(Linear\): \d+ of 16 pre-activations"):
        wnlib.data_dependent_init(nn.Sequential(wnn.Linear(3, 2)), overflow.abs())


# ---- constant features and a stable σ --------------------------------------------------------------


def test_constant_inputs_raise_instead_of_a_huge_g():
    torch.manual_seed(1)
    model = nn.Sequential(wnn.Linear(4, 1))
    with pytest.raises(InitError, match=r"layer '0': feature\(s\) \[0\] are constant over the init batch"):
        wnlib.data_dependent_init(model, torch.full((500, 4), 0.3))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_error_lists_exactly_the_constant_features(seed, dtype):
    torch.manual_seed(seed)
    layer = wnn.Linear(4, 6, dtype=dtype)
    constant = [1, 4] if seed % 2 else [0, 2, 5]
    with torch.no_grad():
        layer.weight_v[constant, 2:] = 0  # these units only see the constant inputs
    x = torch.randn(300, 4, dtype=dtype)
    x[:, :2] = torch.tensor([0.3, -1.7], dtype=dtype)
    with pytest.raises(InitError, match=rf"feature\(s\) \[{', '.join(map(str, constant))}\] are constant"):
        wnlib.data_dependent_init(nn.Sequential(layer), x)


@pytest.mark.parametrize("offset", [3e4, 1e5, 1e6])
def test_a_large_offset_in_float64_gives_sigma_one_and_is_not_constant(offset):
    torch.manual_seed(3)
    model = nn.Sequential(wnn.Linear(4, 3, dtype=torch.float64))
    x = offset + 1e-3 * torch.randn(500, 4, dtype=torch.float64)
    wnlib.data_dependent_init(model, x)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(
        y.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_constant_rtol_is_a_few_hundred_ulps_of_the_dtype():
    assert constant_rtol(torch.float64) == 1000 * torch.finfo(torch.float64).eps
    assert constant_rtol(torch.float32) == 1000 * torch.finfo(torch.float32).eps
    assert constant_rtol(torch.bfloat16) == 1e-2


# ---- init_scale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0, -1.0, math.nan, math.inf, -math.inf])
def test_init_scale_must_be_positive_and_finite(scale):
    model = nn.Sequential(wnn.Linear(3, 2))
    before = state(model)
    with pytest.raises(ValueError, match=rf"init_scale must be positive and finite, got {scale}"):
        wnlib.data_dependent_init(model, torch.randn(8, 3), init_scale=scale)
    assert_same_state(before, state(model))
    with pytest.raises(TypeError, match="init_scale must be a positive finite number, got str"):
        wnlib.data_dependent_init(model, torch.randn(8, 3), init_scale="1")


# ---- normalization layers right before a mean-only batch norm ---------------------------------------


@pytest.mark.parametrize("middle", [nn.PReLU, lambda: nn.LayerNorm(4), lambda: nn.BatchNorm1d(4)])
def test_a_layer_between_the_weight_normed_layer_and_mean_only_bn(middle):
    torch.manual_seed(4)
    model = nn.Sequential(wnn.Linear(3, 4), middle(), wnn.MeanOnlyBatchNorm(4), wnn.Linear(4, 2))
    x = torch.randn(200, 3) + 1
    report = wnlib.data_dependent_init(model, x)
    assert not report[0].followed_by_mean_only_bn  # not *directly* followed: it gets b too
    torch.testing.assert_close(report[0].std_after, torch.ones(4, dtype=torch.float64), rtol=1e-5, atol=0)
