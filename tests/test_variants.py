"""L1 weight norm and its zero-centered form: an OpInfo-style matrix against a NumPy float64 oracle.

Rows: op ∈ {l1, centered_l1} × sample (shape, kept axis incl. None and negative, memory layout) ×
mode (eager VJP per dtype, create_graph, gradcheck/gradgradcheck, torch.func grad / vmap(grad) /
jacrev / jvp / jacfwd, torch.compile fullgraph, strict export). The oracle below is written
independently of wnlib, in NumPy, from the formulas w = g·u/‖u‖₁ (u = v, or v − mean(v) per slice).
"""

from __future__ import annotations

import copy
import doctest
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import wnlib
from wnlib import variants as V

OPS = {"l1": V.l1_weight_norm, "centered_l1": V.centered_l1_weight_norm}
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


# --------------------------------------------------------------------------------------------------
# The NumPy oracle (float64), written from the formulas
# --------------------------------------------------------------------------------------------------


def _axes(ndim: int, dim: int | None) -> tuple[int, ...]:
    return tuple(range(ndim)) if dim is None else tuple(d for d in range(ndim) if d != dim % ndim)


def _gshape(v: np.ndarray, dim: int | None) -> list[int]:
    shape = [1] * v.ndim
    if dim is not None:
        shape[dim % v.ndim] = v.shape[dim % v.ndim]
    return shape


def _center(x: np.ndarray, dim: int | None, centered: bool) -> np.ndarray:
    return x - x.mean(_axes(x.ndim, dim), keepdims=True) if centered else x


def oracle_w(v, g, dim, centered):
    u = _center(v, dim, centered)
    n = np.abs(u).sum(_axes(v.ndim, dim), keepdims=True)
    return np.reshape(g, _gshape(v, dim)) * u / n


def oracle_vjp(v, g, dim, centered, gw):
    """(∇v, ∇g) for upstream gw: ∇g = gw·u/‖u‖₁, ∇u = (g/‖u‖₁)(gw − ∇g·sign(u)), ∇v = center(∇u)."""
    ax, shape = _axes(v.ndim, dim), _gshape(v, dim)
    u = _center(v, dim, centered)
    n = np.abs(u).sum(ax, keepdims=True)
    gg = (gw * u).sum(ax, keepdims=True) / n
    gu = np.reshape(g, shape) / n * (gw - gg * np.sign(u))
    return _center(gu, dim, centered), gg.reshape(np.shape(g))


def oracle_jvp(v, g, dim, centered, tv, tg):
    """dw for tangents (tv, tg): dg·u/n + g·du/n − g·u·(sign(u)·du)/n²."""
    ax, shape = _axes(v.ndim, dim), _gshape(v, dim)
    u, du = _center(v, dim, centered), _center(tv, dim, centered)
    n = np.abs(u).sum(ax, keepdims=True)
    dn = (np.sign(u) * du).sum(ax, keepdims=True)
    g, tg = np.reshape(g, shape), np.reshape(tg, shape)
    return tg * u / n + g * du / n - g * u * dn / n**2


# --------------------------------------------------------------------------------------------------
# Samples: (name, base shape, layout transform, dim)
# --------------------------------------------------------------------------------------------------

LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "contiguous": lambda t: t,
    "transposed": lambda t: t.transpose(0, 1),
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "expanded": lambda t: t.expand(4, -1, -1),  # base (1, 3, 5): a stride-0 axis
    "sliced": lambda t: t[:, ::2],
}
SAMPLES = [
    ("2d-dim0", (5, 3), "contiguous", 0),
    ("2d-dim1", (5, 3), "contiguous", 1),
    ("2d-dim-1", (5, 3), "contiguous", -1),
    ("3d-None", (4, 3, 2), "contiguous", None),
    ("conv-dim0", (4, 3, 2, 2), "contiguous", 0),
    ("transposed-dim0", (3, 5), "transposed", 0),
    ("transposed-None", (3, 5), "transposed", None),
    ("channels_last-dim0", (4, 3, 2, 2), "channels_last", 0),
    ("channels_last-dim-3", (4, 3, 2, 2), "channels_last", -3),
    ("expanded-dim0", (1, 3, 5), "expanded", 0),
    ("expanded-dim-1", (1, 3, 5), "expanded", -1),
    ("sliced-dim1", (4, 6), "sliced", 1),
]
IDS = [s[0] for s in SAMPLES]


def make(sample, dtype=torch.float64, seed=0):
    """(base, v, g): v = layout(base), entries and centered entries kept away from 0 (|·| > 0.05),
    where sign(·) jumps and finite differences would straddle the kink."""
    _, shape, layout, dim = sample
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    base = base + 0.1 * torch.sign(base)
    v = LAYOUTS[layout](base)
    d = None if dim is None else dim % v.ndim
    n = 1 if d is None else v.shape[d]
    g = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    assert np.abs(_center(v.numpy(), dim, True)).min() > 0.01  # the seed keeps u away from the kink too
    return base.to(dtype), v.to(dtype), g.to(dtype)


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def upstream(v: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return torch.randn(v.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_forward_and_vjp_match_oracle(op, sample, dtype):
    _, v, g = make(sample, dtype)
    dim, centered = sample[3], op == "centered_l1"
    v = v.detach().requires_grad_()  # a leaf that keeps the layout's strides
    g = g.requires_grad_()
    gw = upstream(v).to(dtype)
    w = OPS[op](v, g, dim)
    assert w.dtype == dtype and w.shape == v.shape
    gv, gg = torch.autograd.grad(w, (v, g), gw)
    assert gv.shape == v.shape and gg.shape == g.shape and gv.dtype == dtype
    vn, gn, un, tol = np64(v), np64(g), np64(gw), TOL[dtype]
    np.testing.assert_allclose(np64(w), oracle_w(vn, gn, dim, centered), rtol=tol, atol=tol)
    gv0, gg0 = oracle_vjp(vn, gn, dim, centered, un)
    scale = max(1.0, float(np.abs(gv0).max()))
    np.testing.assert_allclose(np64(gv), gv0, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(np64(gg), gg0, rtol=tol, atol=tol * scale)


def _composed(op, sample):
    """f(base, g) = op(layout(base), g): the op seen through the sample's layout, for gradcheck."""
    layout, dim = LAYOUTS[sample[2]], sample[3]
    return lambda base, g: OPS[op](layout(base), g, dim)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_and_gradgradcheck_float64(op, sample):
    base, _, g = make(sample)
    inputs = (base.requires_grad_(), g.requires_grad_())
    f = _composed(op, sample)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_create_graph_second_order_matches_finite_difference_of_oracle(op, sample):
    # φ(v) = <∇v(v), s>: its gradient (double backward through create_graph) along r must equal a
    # central difference of the NumPy VJP oracle.
    _, v, g = make(sample)
    dim, centered = sample[3], op == "centered_l1"
    v = v.detach().requires_grad_()
    gw, s, r = upstream(v, 1), upstream(v, 2), upstream(v, 3)
    (gv,) = torch.autograd.grad(OPS[op](v, g, dim), v, gw, create_graph=True)
    (hvp,) = torch.autograd.grad((gv * s).sum(), v)
    vn, gn, h = np64(v), np64(g), 1e-6

    def phi(x):
        return float((oracle_vjp(x, gn, dim, centered, gw.numpy())[0] * s.numpy()).sum())

    fd = (phi(vn + h * r.numpy()) - phi(vn - h * r.numpy())) / (2 * h)
    np.testing.assert_allclose(float((hvp * r).sum()), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np64(gv), oracle_vjp(vn, gn, dim, centered, gw.numpy())[0], rtol=1e-10)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_torch_func_grad_vmap_jacrev_jvp_jacfwd(op, sample):
    _, v, g = make(sample)
    dim, centered, f = sample[3], op == "centered_l1", OPS[op]
    gw = upstream(v)
    vn, gn = np64(v), np64(g)
    gv0, gg0 = oracle_vjp(vn, gn, dim, centered, gw.numpy())
    gv, gg = torch.func.grad(lambda v, g: (f(v, g, dim) * gw).sum(), argnums=(0, 1))(v, g)
    np.testing.assert_allclose(np64(gv), gv0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np64(gg), gg0, rtol=1e-10, atol=1e-12)
    # vmap(grad) over a batch of three v's (the sample's v, scaled, and negated)
    vs = torch.stack([v, 2 * v, -v])
    per = torch.func.vmap(torch.func.grad(lambda v: (f(v, g, dim) * gw).sum()))(vs)
    for k in range(3):
        np.testing.assert_allclose(
            np64(per[k]), oracle_vjp(np64(vs[k]), gn, dim, centered, gw.numpy())[0], rtol=1e-10, atol=1e-12
        )
    jac_rev = torch.func.jacrev(f)(v, g, dim)  # shape v.shape + v.shape
    contracted = (jac_rev * gw.reshape(*gw.shape, *[1] * v.ndim)).sum(tuple(range(v.ndim)))
    np.testing.assert_allclose(np64(contracted), gv0, rtol=1e-10, atol=1e-12)
    # forward mode: torch.func.jvp cannot take a primal with overlapping memory (stride 0), so there
    # the expansion is applied inside the function, to the base and its tangent alike
    base, layout = (
        (make(sample)[0], LAYOUTS["expanded"]) if sample[2] == "expanded" else (v, LAYOUTS["contiguous"])
    )
    tbase, tg = upstream(base, 4), torch.linspace(-1.0, 1.0, g.numel(), dtype=torch.float64)
    _, dw = torch.func.jvp(lambda b, g: f(layout(b), g, dim), (base, g), (tbase, tg))
    tv = layout(tbase).numpy()
    np.testing.assert_allclose(
        np64(dw), oracle_jvp(vn, gn, dim, centered, tv, tg.numpy()), rtol=1e-10, atol=1e-12
    )
    jac_fwd = torch.func.jacfwd(lambda b: f(layout(b), g, dim))(base)
    jac_rev_base = torch.func.jacrev(lambda b: f(layout(b), g, dim))(base)
    torch.testing.assert_close(jac_fwd, jac_rev_base, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_compile_fullgraph_forward_and_backward(op):
    f = torch.compile(OPS[op], backend="aot_eager", fullgraph=True)
    centered = op == "centered_l1"
    for sample in (SAMPLES[0], SAMPLES[6], SAMPLES[7]):  # dim 0, None on a transposed v, channels_last
        _, v, g = make(sample)
        dim = sample[3]
        v = v.detach().requires_grad_()
        gw = upstream(v)
        w = f(v, g, dim)
        (gv,) = torch.autograd.grad(w, v, gw)
        np.testing.assert_allclose(np64(w), oracle_w(np64(v), np64(g), dim, centered), rtol=1e-12)
        np.testing.assert_allclose(
            np64(gv), oracle_vjp(np64(v), np64(g), dim, centered, gw.numpy())[0], rtol=1e-10, atol=1e-12
        )


class _Wrap(nn.Module):
    def __init__(self, op: str, dim: int | None):
        super().__init__()
        self.op, self.dim = op, dim

    def forward(self, v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return OPS[self.op](v, g, self.dim)


@pytest.mark.slow
@pytest.mark.parametrize("dim", [0, -1, None])
@pytest.mark.parametrize("op", OPS)
def test_strict_export(op, dim):
    _, v, g = make(("2d", (5, 3), "contiguous", dim))
    program = torch.export.export(_Wrap(op, dim), (v, g), strict=True)
    w = program.module()(v, g)
    np.testing.assert_allclose(np64(w), oracle_w(np64(v), np64(g), dim, op == "centered_l1"), rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_l1_norm_of_w_is_abs_g_and_centered_slices_sum_to_zero(op, sample):
    _, v, g = make(sample)
    dim = sample[3]
    g = g * torch.where(torch.arange(g.numel()) % 2 == 0, 1.0, -1.0).double()  # negative g too
    w = OPS[op](v, g, dim)
    ax = _axes(v.ndim, dim)
    torch.testing.assert_close(w.abs().sum(ax).reshape(-1), g.abs(), rtol=1e-12, atol=0)
    if op == "centered_l1":
        assert w.sum(ax).abs().max() < 1e-12


@pytest.mark.parametrize("op", OPS)
def test_keepdim_g_and_flat_g_agree(op):
    _, v, g = make(SAMPLES[4])
    torch.testing.assert_close(OPS[op](v, g.reshape(4, 1, 1, 1), 0), OPS[op](v, g, 0), rtol=0, atol=0)
    _, v, g = make(SAMPLES[3])
    for shape in ((), (1,), (1, 1, 1)):
        torch.testing.assert_close(OPS[op](v, g.reshape(shape), None), OPS[op](v, g, None), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", OPS)
def test_zero_slice_gives_zero_w_and_finite_gradients(op, dtype):
    v = torch.randn(3, 4, dtype=torch.float64).to(dtype)
    v[1] = 0.0 if op == "l1" else 0.7  # the centered op sees a constant row as zero
    v.requires_grad_()
    g = torch.ones(3, dtype=dtype, requires_grad=True)
    w = OPS[op](v, g, 0)
    assert torch.all(w[1] == 0)
    gv, gg = torch.autograd.grad(w, (v, g), torch.ones_like(w))
    assert torch.isfinite(gv).all() and torch.isfinite(gg).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_norm_accumulates_in_float32(dtype):
    v = torch.full((2, 8192), 0.5, dtype=dtype)
    n = V.l1_slice_norm(v, 0)
    assert n.dtype == torch.float32
    torch.testing.assert_close(n.reshape(-1), torch.full((2,), 4096.0), rtol=0, atol=0)


def test_subgradient_at_zero_is_sign_zero():
    # d‖v‖₁/dv_i = sign(v_i), 0 at v_i = 0: the zero entry's gradient is (g/‖v‖₁)·∇w_i, no projection term
    v = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([3.0], dtype=torch.float64)
    gw = torch.tensor([[1.0, 5.0, 2.0]], dtype=torch.float64)
    (gv,) = torch.autograd.grad(V.l1_weight_norm(v, g), v, gw)
    torch.testing.assert_close(
        gv, torch.from_numpy(oracle_vjp(v.detach().numpy(), g.numpy(), 0, False, gw.numpy())[0])
    )
    assert gv[0, 1] == 3.0 / 3.0 * 5.0


def test_docstring_examples_run():
    assert doctest.testmod(V, extraglobs={"nn": nn}).failed == 0


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "v, g, kwargs, error, match",
    [
        (
            torch.ones(3, 4),
            torch.ones(3),
            {"dim": 2},
            IndexError,
            r"dim 2 is out of range .* \[-2, 1\] or None",
        ),
        (torch.ones(3, 4), torch.ones(3), {"dim": 0.0}, TypeError, "dim must be an int or None"),
        (
            torch.ones(3, 4),
            torch.ones(4),
            {"dim": 0},
            ValueError,
            r"g has shape \(4,\) .* expected g of shape \(3,\)",
        ),
        (torch.ones(3, 4), torch.ones(3, dtype=torch.float64), {}, TypeError, "give both the same dtype"),
        (torch.ones(3, 4, dtype=torch.int64), torch.ones(3), {}, TypeError, "floating-point tensors, but v"),
        (torch.ones(0, 4), torch.ones(0), {}, ValueError, "v is empty"),
        (torch.ones(3, 4), torch.ones(3), {"eps": -1.0}, ValueError, "eps must be finite and >= 0"),
        (torch.ones(3, 4), torch.ones(3), {"eps": float("nan")}, ValueError, "eps must be finite"),
        (torch.ones(3, 4), torch.ones(3), {"eps": True}, TypeError, "eps must be a real number"),
        ([[1.0]], torch.ones(1), {}, TypeError, "v must be a torch.Tensor"),
    ],
)
def test_bad_input_errors(op, v, g, kwargs, error, match):
    with pytest.raises(error, match=match):
        OPS[op](v, g, **kwargs)


# --------------------------------------------------------------------------------------------------
# On modules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize(
    "make_layer, x_shape, dim",
    [
        (lambda: nn.Linear(6, 4), (2, 6), 0),
        (lambda: nn.Conv2d(3, 4, 3), (2, 3, 5, 5), 0),
        (lambda: nn.ConvTranspose1d(4, 3, 3), (2, 4, 7), 1),  # default: the output axis, 1
    ],
)
def test_module_parameters_weight_and_outputs(make_layer, x_shape, dim, centered):
    torch.manual_seed(0)
    layer = make_layer()
    w0 = layer.weight.detach().clone()
    x = torch.randn(x_shape)
    V.l1_weight_norm_module(layer, centered=centered)
    assert V.l1_weight_norm_specs(layer) == {
        "weight": V.L1WeightNormSpec(dim, wnlib.functional.DEFAULT_EPS, centered)
    }
    assert layer.weight_g.shape == (w0.shape[dim],) and layer.weight_v.shape == w0.shape
    expected = torch.from_numpy(_center(w0.double().numpy(), dim, centered)).float()
    torch.testing.assert_close(layer.weight, expected, rtol=1e-5, atol=1e-6)
    y = layer(x)
    y.sum().backward()
    assert layer.weight_v.grad is not None and layer.weight_g.grad is not None
    V.remove_l1_weight_norm(layer)
    assert type(layer) in (nn.Linear, nn.Conv2d, nn.ConvTranspose1d)
    torch.testing.assert_close(layer(x), y, rtol=1e-6, atol=1e-6)


def test_module_pickle_deepcopy_state_dict_and_repr():
    layer = V.l1_weight_norm_module(nn.Linear(5, 3), centered=True)
    x = torch.randn(2, 5)
    for other in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        torch.testing.assert_close(other(x), layer(x))
        assert V.is_l1_weight_normed(other, "weight")
    fresh = V.l1_weight_norm_module(nn.Linear(5, 3), centered=True)
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh(x), layer(x))
    assert "l1_weight_norm=(weight: dim=0, centered=True)" in repr(layer)


def test_module_bad_input_errors():
    layer = V.l1_weight_norm_module(nn.Linear(5, 3))
    with pytest.raises(ValueError, match="already applied to 'weight'"):
        V.l1_weight_norm_module(layer)
    with pytest.raises(AttributeError, match="computed from weight_v and weight_g"):
        layer.weight = nn.Parameter(torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"no parameter 'kernel'; its parameters are \['weight', 'bias'\]"):
        V.l1_weight_norm_module(nn.Linear(5, 3), name="kernel")
    with pytest.raises(ValueError, match=r"has \(L2\) weight norm from wnlib.weight_norm; remove it first"):
        V.l1_weight_norm_module(wnlib.weight_norm(nn.Linear(5, 3)), name="bias")
    with pytest.raises(TypeError, match="takes an nn.Module, got Tensor"):
        V.l1_weight_norm_module(torch.ones(3))
    with pytest.raises(TypeError, match="centered must be True or False"):
        V.l1_weight_norm_module(nn.Linear(5, 3), centered=1)
    with pytest.raises(ValueError, match="eps must be finite"):
        V.l1_weight_norm_module(nn.Linear(5, 3), eps=float("inf"))
    with pytest.raises(ValueError, match="no L1 weight norm on 'bias' to remove; it has L1 weight norm on"):
        V.remove_l1_weight_norm(layer, "bias")
    emb = nn.Embedding(4, 3)
    emb.weight = nn.Parameter(torch.ones(4, 3, dtype=torch.int64), requires_grad=False)
    with pytest.raises(TypeError, match="needs a floating-point parameter"):
        V.l1_weight_norm_module(emb)
    # nothing changed on a failed call
    plain = nn.Linear(5, 3)
    with pytest.raises(IndexError, match="out of range"):
        V.l1_weight_norm_module(plain, dim=2)
    assert type(plain) is nn.Linear and "weight" in plain._parameters
