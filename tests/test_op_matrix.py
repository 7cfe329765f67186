"""The weight-norm op against an independent oracle in every mode, layout, dtype and dim (OpInfo style).

One table of sample inputs (shape × kept axis × memory layout × dtype) runs through every autograd
mode a user can reach: values, plain backward, ``create_graph`` first-order gradients, second order,
forward mode, ``torch.func`` (grad, vmap over an ensemble, per-sample grads, jacrev), and on a smaller
table ``torch.compile(fullgraph=True)`` and strict ``torch.export``. The oracle is autograd of the naive
formula w = g·v/max(‖v‖, eps) per slice, in float64 on the same values. A new path is one more entry
in ``PATHS``, a new mode one more entry in ``MODES``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, func

from wnlib import functional as wnf
from wnlib import kernels

EPS = wnf.DEFAULT_EPS
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
TOL = {  # (rtol, atol) against the float64 oracle on the same (rounded) inputs
    torch.float64: (1e-9, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (4e-3, 4e-3),
}


# --------------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------------


def naive(v: Tensor, g: Tensor, dim: int | None, eps: float = EPS) -> Tensor:
    """w = g v / max(‖v‖, eps) per slice, in plain autograd ops: the definition, nothing else."""
    if dim is None:
        return g.reshape(()) * v / torch.sqrt((v * v).sum()).clamp_min(eps)
    d = dim % v.ndim
    reduce = [k for k in range(v.ndim) if k != d]
    sq = v * v
    n = torch.sqrt(sq.sum(reduce, keepdim=True) if reduce else sq).clamp_min(eps)
    shape = [1] * v.ndim
    shape[d] = -1
    return g.reshape(shape) * v / n


# --------------------------------------------------------------------------------------------------
# Sample inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    shape: tuple[int, ...]
    dim: int | None
    layout: str

    def __str__(self) -> str:
        return f"{'x'.join(map(str, self.shape))}-dim{self.dim}-{self.layout}"


def _layouts(shape: tuple[int, ...]) -> list[str]:
    out = ["contiguous", "expanded", "sliced"]
    if len(shape) >= 2:
        out.append("transposed")
    if len(shape) == 4:
        out.append("channels_last")
    if len(shape) == 5:
        out.append("channels_last_3d")
    return out


CASES = [
    ((5, 3), 0),
    ((5, 3), 1),
    ((5, 3), -1),
    ((5, 3), None),
    ((4, 3, 2, 2), 0),
    ((3, 4, 2, 2), 1),
    ((4, 3, 2, 2), None),
    ((3, 2, 2, 2, 2), 0),
    ((2, 3, 4), -2),
    ((6,), 0),
]
SAMPLES = [Sample(s, d, lay) for s, d in CASES for lay in _layouts(s)]


def in_layout(t: Tensor, layout: str) -> Tensor:
    """A leaf with ``t``'s values (up to the layout's own structure) in the given memory layout."""
    if layout == "contiguous":
        out = t.clone()
    elif layout == "transposed":
        perm = list(reversed(range(t.ndim)))
        out = t.permute(perm).contiguous().permute(perm)
    elif layout == "channels_last":
        out = t.contiguous(memory_format=torch.channels_last)
    elif layout == "channels_last_3d":
        out = t.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "expanded":  # stride 0 along axis 0: every index along it holds the same values
        out = t[:1].expand(t.shape)
    elif layout == "sliced":  # every other entry of a wider tensor along the last axis
        wide = torch.stack([t, torch.full_like(t, 7.0)], dim=-1).flatten(-2)
        out = wide[..., ::2]
    else:
        raise ValueError(layout)
    out = out.detach().requires_grad_()
    assert torch.equal(out, t if layout != "expanded" else t[:1].expand(t.shape))
    return out


def make(sample: Sample, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(v, g, ∇w) for a sample: v in its layout, g of shape (S,), a non-contiguous upstream ∇w."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(sample.shape, generator=gen, dtype=torch.float64).to(dtype)
    s = 1 if sample.dim is None else sample.shape[sample.dim]
    g = (torch.rand(s, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    g = g.reshape(()) if sample.dim is None else g
    up = torch.randn(tuple(reversed(sample.shape)), generator=gen, dtype=torch.float64).to(dtype)
    up = up.permute(list(reversed(range(len(sample.shape)))))  # transposed: ∇w is rarely contiguous
    return in_layout(v, sample.layout), g.requires_grad_(), up


def upcast(*ts: Tensor) -> list[Tensor]:
    return [t.detach().double().requires_grad_(t.requires_grad) for t in ts]


# --------------------------------------------------------------------------------------------------
# Paths: the ways wnlib computes the op
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _composite() -> Iterator[None]:
    original = wnf._composite_mode
    wnf._composite_mode = lambda v: True
    try:
        yield
    finally:
        wnf._composite_mode = original


@contextlib.contextmanager
def _triton() -> Iterator[None]:
    if not kernels.available():
        pytest.skip("triton is not installed")
    with wnf.use_backend("triton"):
        yield


PATHS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "function": contextlib.nullcontext,  # eager: WeightNormFunction
    "composite": _composite,  # what torch.func / compile / export see
    "triton": _triton,  # the fused kernels, under Triton's CPU interpreter
}


# --------------------------------------------------------------------------------------------------
# Modes: each maps (op, v, g, ∇w) to the tensors it produces; compared against the same mode of naive
# --------------------------------------------------------------------------------------------------

Op = Callable[[Tensor, Tensor], Tensor]


def m_forward(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    return (op(v, g),)


def m_backward(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(op(v, g), (v, g), up)


def m_create_graph(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(op(v, g), (v, g), up, create_graph=True)


def m_second_order(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    """d/d(v, g, ∇w) of a gradient penalty Σ(∇v)² + Σ(∇g)² + Σ ∇v·v²."""
    up = up.detach().requires_grad_()
    gv, gg = torch.autograd.grad(op(v, g), (v, g), up, create_graph=True)
    penalty = (gv.float() ** 2).sum() + (gg.float() ** 2).sum() + (gv.float() * v.float() ** 2).sum()
    return torch.autograd.grad(penalty, (v, g, up))


def m_forward_ad(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    """torch.autograd.forward_ad in eager mode (the Function's jvp)."""
    import torch.autograd.forward_ad as fwad

    tv, tg = torch.ones_like(v) * 0.3 + up.detach().to(v.dtype) * 0.1, torch.full_like(g, 0.7)
    with fwad.dual_level():
        w = op(fwad.make_dual(v.detach(), tv), fwad.make_dual(g.detach(), tg))
        return (fwad.unpack_dual(w).tangent,)


def m_func_jvp(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    tv, tg = up.detach().to(v.dtype), torch.full_like(g, 0.7)
    return tuple(func.jvp(op, (v.detach(), g.detach()), (tv, tg)))


def m_func_grad(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    up = up.detach()
    def loss(v: Tensor, g: Tensor) -> Tensor:
        return (op(v, g).float() * up.float()).sum()

    return func.grad(loss, argnums=(0, 1))(v.detach(), g.detach())


def m_vmap_ensemble(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    """vmap over a stacked ensemble of three (v, g) pairs."""
    vs = torch.stack([v.detach(), 2 * v.detach(), -v.detach()])
    gs = torch.stack([g.detach(), 0.5 * g.detach(), g.detach()])
    return (func.vmap(op)(vs, gs),)


def m_vmap_grad(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    """Per-sample gradients: vmap(grad) over a batch of three upstreams."""
    ups = torch.stack([up.detach(), 2 * up.detach(), up.detach() ** 2])

    def loss(v: Tensor, g: Tensor, u: Tensor) -> Tensor:
        return (op(v, g).float() * u.float()).sum()

    return func.vmap(func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0))(v.detach(), g.detach(), ups)


def m_jacrev(op: Op, v: Tensor, g: Tensor, up: Tensor) -> tuple[Tensor, ...]:
    return func.jacrev(op, argnums=(0, 1))(v.detach(), g.detach())


MODES = {
    "forward": m_forward,
    "backward": m_backward,
    "create_graph": m_create_graph,
    "second_order": m_second_order,
    "forward_ad": m_forward_ad,
    "func_jvp": m_func_jvp,
    "func_grad": m_func_grad,
    "vmap_ensemble": m_vmap_ensemble,
    "vmap_grad": m_vmap_grad,
    "jacrev": m_jacrev,
}
# The Triton path under the interpreter is slow: its rows skip the torch.func modes, which do not reach
# it anyway (functorch transforms take the composite formula).
TRITON_MODES = ("forward", "backward", "create_graph", "second_order", "forward_ad")


def assert_matches(got: tuple[Tensor, ...], want: tuple[Tensor, ...], dtype: torch.dtype) -> None:
    rtol, atol = TOL[dtype]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        scale = max(1.0, b.abs().max().item())  # tolerances relative to the largest entry
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol * scale)


def _params():
    for path in PATHS:
        for mode in MODES:
            if path == "triton" and mode not in TRITON_MODES:
                continue
            for dtype in DTYPES:
                for s in SAMPLES:
                    if path == "triton" and (s.layout not in ("contiguous", "transposed", "expanded")):
                        continue
                    yield pytest.param(path, mode, dtype, s, id=f"{path}-{mode}-{str(dtype)[6:]}-{s}")


# torch itself cannot make a dual tensor whose primal has overlapping memory (stride 0).
FORWARD_MODES = ("forward_ad", "func_jvp")


@pytest.mark.parametrize("path, mode, dtype, sample", list(_params()))
def test_op_matches_oracle(path: str, mode: str, dtype: torch.dtype, sample: Sample) -> None:
    if mode in FORWARD_MODES and sample.layout == "expanded":
        pytest.skip("torch's make_dual rejects a primal with overlapping memory, for any op")
    v, g, up = make(sample, dtype)
    dim = sample.dim
    with PATHS[path]():
        got = MODES[mode](lambda v, g: wnf.weight_norm(v, g, dim), v, g, up)
    v64, g64 = upcast(v, g)
    want = MODES[mode](lambda v, g: naive(v, g, dim), v64, g64, up.double())
    assert_matches(got, want, dtype)


# --------------------------------------------------------------------------------------------------
# gradcheck and gradgradcheck in float64 on every path
# --------------------------------------------------------------------------------------------------

GRADCHECK_LAYOUTS = ("contiguous", "channels_last", "transposed", "sliced")
GRADCHECK_SAMPLES = [s for s in SAMPLES if s.layout in GRADCHECK_LAYOUTS]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("sample", GRADCHECK_SAMPLES, ids=str)
def test_gradcheck_and_gradgradcheck(path: str, sample: Sample) -> None:
    if path == "triton" and sample.layout != "contiguous":
        pytest.skip("the interpreter is slow; contiguous inputs suffice for the kernels' gradcheck")
    v, g, _ = make(sample, torch.float64)
    with PATHS[path]():
        fn = functools.partial(wnf.weight_norm, dim=sample.dim)
        assert torch.autograd.gradcheck(fn, (v, g), check_forward_ad=True)
        assert torch.autograd.gradgradcheck(fn, (v, g))


# --------------------------------------------------------------------------------------------------
# The scaled dense layer (wnlib.functional.linear without materializing w)
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scaled_linear() -> Iterator[None]:
    """Force ScaledLinearFunction for any size (float32/float64 only: half precision materializes w)."""
    original = wnf.SCALED_LINEAR_MIN_NUMEL
    wnf.SCALED_LINEAR_MIN_NUMEL = 0
    try:
        yield
    finally:
        wnf.SCALED_LINEAR_MIN_NUMEL = original


def naive_linear(x: Tensor, v: Tensor, g: Tensor, b: Tensor) -> Tensor:
    return x @ naive(v, g, 0).t() + b


LINEAR_LAYOUTS = ["contiguous", "transposed", "expanded", "sliced"]


LINEAR_MODES = ["forward", "backward", "create_graph", "second_order", "func_grad", "vmap_grad"]


@pytest.mark.parametrize("mode", LINEAR_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LINEAR_LAYOUTS)
def test_linear_matches_oracle(mode: str, dtype: torch.dtype, layout: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    v = in_layout(torch.randn(5, 7, generator=gen, dtype=torch.float64).to(dtype), layout)
    g = (torch.rand(5, generator=gen, dtype=torch.float64) + 0.5).to(dtype).requires_grad_()
    b = torch.randn(5, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    up = torch.randn(5, 3, generator=gen, dtype=torch.float64).to(dtype).t()

    def as_op(fn: Callable) -> Callable[[Tensor, Tensor], Tensor]:
        return lambda v_, g_: fn(x if v_.dtype == x.dtype else x.double(), v_, g_, b.to(v_.dtype))

    with _scaled_linear():
        got = MODES[mode](as_op(wnf.linear), v, g, up)
    v64, g64 = upcast(v, g)
    want = MODES[mode](as_op(naive_linear), v64, g64, up.double())
    assert_matches(got, want, dtype)


def test_linear_gradcheck_and_gradgradcheck_through_the_scaled_path() -> None:
    gen = torch.Generator().manual_seed(2)
    shapes = ((4, 6), (3, 6), (3,), (3,))
    args = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    args[2] = args[2].detach().abs().add(0.5).requires_grad_()
    with _scaled_linear():
        assert wnf.linear(*args).grad_fn.name() == "ScaledLinearFunctionBackward"
        assert torch.autograd.gradcheck(wnf.linear, args)
        assert torch.autograd.gradgradcheck(wnf.linear, args)


# --------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True) and strict torch.export (a smaller table: compiling is slow)
# --------------------------------------------------------------------------------------------------

COMPILE_SAMPLES = [
    Sample((5, 3), 0, "contiguous"),
    Sample((5, 3), -1, "transposed"),
    Sample((4, 3, 2, 2), 0, "channels_last"),
    Sample((4, 3, 2, 2), None, "contiguous"),
]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("sample", COMPILE_SAMPLES, ids=str)
def test_compile_fullgraph_forward_and_backward(backend: str, sample: Sample) -> None:
    torch._dynamo.reset()
    v, g, up = make(sample, torch.float32)
    op = functools.partial(wnf.weight_norm, dim=sample.dim)
    compiled = torch.compile(op, fullgraph=True, backend=backend)
    got = (*m_backward(compiled, v, g, up), compiled(v, g))
    v64, g64 = upcast(v, g)
    oracle = functools.partial(naive, dim=sample.dim)
    want = (*m_backward(oracle, v64, g64, up.double()), oracle(v64, g64))
    assert_matches(got, want, torch.float32)


class _Op(torch.nn.Module):
    def __init__(self, dim: int | None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, v: Tensor, g: Tensor) -> Tensor:
        return wnf.weight_norm(v, g, self.dim)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("sample", COMPILE_SAMPLES, ids=str)
def test_export(strict: bool, sample: Sample) -> None:
    v, g, _ = make(sample, torch.float64)
    ep = torch.export.export(_Op(sample.dim), (v.detach(), g.detach()), strict=strict)
    v2, g2, _ = make(sample, torch.float64, seed=5)
    torch.testing.assert_close(ep.module()(v2.detach(), g2.detach()), naive(v2, g2, sample.dim).detach())
