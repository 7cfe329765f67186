"""The fused Triton kernels of :mod:`wnlib.kernels` against eq. 2–4, on CPU under Triton's interpreter.

``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before the kernels load, so every kernel below runs
on CPU tensors (slowly: shapes are small). With ``TRITON_INTERPRET=0`` on a machine with CUDA the same
tests run the compiled kernels on the GPU. The oracle is eq. 2 written in float64 PyTorch ops, whose
autograd gives eq. 3–4; the NumPy reference :mod:`wnlib.reference` is a second oracle.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip(
    "triton",
    reason="Triton is not installed: the optional fused kernels (pip install wnlib[gpu]) are untested",
)

from wnlib import DEFAULT_EPS, kernels
from wnlib.functional import TritonWeightNorm
from wnlib.kernels import triton_wn as T

if T.interpreted():
    DEVICE = torch.device("cpu")
elif torch.cuda.is_available():
    DEVICE = torch.device("cuda")
else:  # pragma: no cover - depends on the environment
    pytest.skip(
        "kernels were compiled for a GPU (TRITON_INTERPRET is off) and there is no CUDA device; "
        "set TRITON_INTERPRET=1 to run them on CPU",
        allow_module_level=True,
    )

EPS = DEFAULT_EPS  # the op's default, which the kernels are called with

# (shape, dim): rows (dim 0), columns (last dim), a middle dim (ConvTranspose), the whole tensor (None);
# slices of 1, 7, 130, 1000 elements, none a multiple of a block.
CASES = [
    ((5, 130), 0),
    ((130, 5), 1),
    ((130, 5), -1),
    ((4, 1000), 0),
    ((1000, 3), -1),
    ((7,), 0),
    ((1, 1), 0),
    ((6, 9), None),
    ((2, 3, 5), None),
    ((), None),
    ((4, 3, 3, 3), 0),
    ((3, 4, 7, 3), 1),
    ((3, 5, 2, 2), 1),
    ((2, 3, 40), 1),
    ((2, 3, 40), 2),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]

# (rtol, atol relative to the largest expected magnitude). Inputs are exact in every dtype (the oracle
# reads the same rounded values), so the error is accumulation plus one rounding of each output.
TOL = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (2e-6, 1e-6),
    torch.float16: (2e-3, 1e-4),
    torch.bfloat16: (8e-3, 1e-3),
}


def case_id(case: tuple[tuple[int, ...], int | None]) -> str:
    shape, dim = case
    return f"{'x'.join(map(str, shape)) or 'scalar'}-dim{dim}"


def n_slices(shape: tuple[int, ...], dim: int | None) -> int:
    return 1 if dim is None else shape[dim]


def make(
    shape: tuple[int, ...], dim: int | None, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = 0.5 + torch.rand(n_slices(shape, dim), generator=gen, dtype=torch.float64)
    g[::2] *= -1  # negative gains too
    grad_w = torch.randn(shape, generator=gen, dtype=torch.float64)
    return tuple(t.to(dtype).to(DEVICE) for t in (v, g, grad_w))


def oracle(v: torch.Tensor, g: torch.Tensor, dim: int | None, eps: float = EPS) -> tuple[torch.Tensor, ...]:
    """Eq. 2 in float64 PyTorch ops: (w, norm) with norm = max(sqrt(Σ v²), eps) per slice.

    The clamp is applied to Σ v² (at eps²) so that autograd through it stays finite at v = 0."""
    v = v.double()
    g = g.double().reshape(-1)
    if dim is None:
        norm = torch.sqrt((v * v).sum().clamp_min(eps * eps)).reshape(1)
        return (g[0] / norm[0]) * v, norm
    d = dim % v.ndim
    axes = [a for a in range(v.ndim) if a != d]
    squares = (v * v).sum(dim=axes) if axes else v * v
    norm = torch.sqrt(squares.clamp_min(eps * eps))
    shape = [1] * v.ndim
    shape[d] = -1
    return (g / norm).reshape(shape) * v, norm


def oracle_grads(
    grad_w: torch.Tensor, v: torch.Tensor, g: torch.Tensor, dim: int | None, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇v, ∇g) by autograd through the float64 oracle: eq. 3–4 without writing them down."""
    v64 = v.detach().double().requires_grad_()
    g64 = g.detach().double().requires_grad_()
    w, _ = oracle(v64, g64, dim, eps)
    grad_v, grad_g = torch.autograd.grad(w, (v64, g64), grad_w.double())
    return grad_v, grad_g


def grad_v_scale(grad_w: torch.Tensor, v: torch.Tensor, g: torch.Tensor, dim: int | None) -> float:
    """max |(g/‖v‖)·∇w|: the size of the terms of eq. 4, whose difference ∇v can be far smaller
    (∇v = 0 for one-element slices), so the natural scale for ∇v's absolute error."""
    _, norm = oracle(v, g, dim)
    alpha = g.double().reshape(-1) / norm
    shape = [1] * v.ndim
    if dim is not None:
        shape[dim % v.ndim] = -1
    return float((alpha.reshape(shape) * grad_w.double()).abs().max()) if v.numel() else 1.0


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float | None = None
) -> None:
    """Within TOL[dtype]; the absolute tolerance is relative to ``scale`` (default: max |expected|)."""
    rtol, atol = TOL[dtype]
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol * max(scale, 1e-30)
    )


# --------------------------------------------------------------------------------------------------
# Forward and backward against the oracle, default launch plans
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_eq2(case: tuple, dtype: torch.dtype) -> None:
    shape, dim = case
    v, g, _ = make(shape, dim, dtype)
    w, norm = kernels.weight_norm_forward(v, g, dim, EPS)
    w_ref, norm_ref = oracle(v, g, dim)
    assert w.shape == v.shape and w.dtype == dtype and w.is_contiguous()
    assert norm.shape == (n_slices(shape, dim),)
    assert norm.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(w, w_ref, dtype)
    assert_close(norm, norm_ref, norm.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_matches_autograd(case: tuple, dtype: torch.dtype) -> None:
    shape, dim = case
    v, g, grad_w = make(shape, dim, dtype, seed=1)
    _, norm = kernels.weight_norm_forward(v, g, dim, EPS)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, dim)
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, dim)
    assert grad_v.shape == v.shape and grad_v.dtype == dtype
    assert grad_g.shape == g.shape and grad_g.dtype == g.dtype
    assert_close(grad_v, grad_v_ref, dtype, grad_v_scale(grad_w, v, g, dim))
    assert_close(grad_g, grad_g_ref, dtype)


def test_float16_and_keepdim_gain() -> None:
    """float16 accumulates in float32; g may come in torch's keep-dim shape, ∇g comes back in it."""
    v, g, grad_w = make((6, 3, 3, 3), 0, torch.float16)
    g = g.reshape(6, 1, 1, 1)
    w, norm = kernels.weight_norm_forward(v, g, 0, EPS)
    assert norm.dtype == torch.float32
    assert_close(w, oracle(v, g, 0)[0], torch.float16)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, 0)
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, 0)
    assert grad_g.shape == (6, 1, 1, 1)
    assert_close(grad_v, grad_v_ref, torch.float16)
    assert_close(grad_g, grad_g_ref.reshape(6, 1, 1, 1), torch.float16)


# --------------------------------------------------------------------------------------------------
# Every code path: forced tiles (several blocks per slice), split reductions, partial slice groups
# --------------------------------------------------------------------------------------------------

FORCED = [
    # (shape, dim, overrides, expected (layout, split > 1, one_tile))
    ((5, 130), 0, dict(block_k=16, split=1), (T.ROWS, False, False)),
    ((5, 130), 0, dict(block_k=16, block_s=2, split=3), (T.ROWS, True, False)),
    ((3, 1000), 0, dict(block_k=128, split=4), (T.ROWS, True, False)),
    ((130, 5), 1, dict(block_k=16, block_s=2, split=1), (T.COLUMNS, False, False)),
    ((130, 5), 1, dict(block_k=32, block_s=4, split=3), (T.COLUMNS, True, False)),
    ((1000, 3), 1, dict(block_k=64, block_s=2, split=5), (T.COLUMNS, True, False)),
    ((3, 5, 2, 2), 1, dict(block_k=4, block_s=2, split=1), (T.GENERAL, False, False)),
    ((3, 5, 2, 2), 1, dict(block_k=4, block_s=4, split=2), (T.GENERAL, True, False)),
    ((2, 3, 40), 1, dict(block_k=32, split=1), (T.GENERAL, False, False)),
    ((6, 9), None, dict(block_k=8, split=3), (T.ROWS, True, False)),
    ((5, 130), 0, dict(block_s=4), (T.ROWS, False, True)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "shape,dim,overrides,expected",
    FORCED,
    ids=[f"{case_id((s, d))}-{'-'.join(f'{k}{v}' for k, v in o.items())}" for s, d, o, _ in FORCED],
)
def test_forced_plans(
    shape: tuple, dim: int | None, overrides: dict, expected: tuple, dtype: torch.dtype
) -> None:
    d = None if dim is None else dim % len(shape)
    A, S, B = T.view_3d(shape, d)
    v, g, grad_w = make(shape, dim, dtype, seed=2)
    plan = T.make_plan(A, S, B, v.element_size(), 1, **overrides)
    assert (plan.layout, plan.split > 1, plan.one_tile) == expected, plan
    w, norm = T.forward(v, g, dim, EPS, plan=plan)
    w_ref, norm_ref = oracle(v, g, dim)
    assert_close(w, w_ref, dtype)
    assert_close(norm, norm_ref, torch.float32)
    grad_v, grad_g = T.backward(grad_w, v, g, norm, dim, plan=plan)
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, dim)
    assert_close(grad_v, grad_v_ref, dtype, grad_v_scale(grad_w, v, g, dim))
    assert_close(grad_g, grad_g_ref, dtype)


def test_heuristic_split_on_few_long_slices() -> None:
    """With many SMs and one long slice (dim=None) the default plan splits it; results still match."""
    v, g, grad_w = make((40, 50), None, torch.float32, seed=3)
    plan = T.make_plan(1, 1, 2000, 4, n_sm=132, block_k=128)
    assert plan.split > 1
    w, norm = T.forward(v, g, None, EPS, plan=plan)
    assert_close(w, oracle(v, g, None)[0], torch.float32)
    grad_v, grad_g = T.backward(grad_w, v, g, norm, None, plan=plan)
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, None)
    assert_close(grad_v, grad_v_ref, torch.float32)
    assert_close(grad_g, grad_g_ref, torch.float32)


# --------------------------------------------------------------------------------------------------
# Zero slices, non-contiguous inputs, empty tensors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [((4, 130), 0), ((130, 4), -1), ((3, 4, 5, 2), 1)], ids=str)
def test_zero_slice_is_finite(shape: tuple, dim: int, dtype: torch.dtype) -> None:
    """‖v‖ clamped at eps: a zero slice gives w = 0, norm = eps, finite gradients."""
    v, g, grad_w = make(shape, dim, dtype, seed=4)
    v.select(dim, 1).zero_()
    w, norm = kernels.weight_norm_forward(v, g, dim, EPS)
    assert torch.isfinite(w).all() and torch.isfinite(norm).all()
    assert (w.select(dim, 1) == 0).all()
    assert float(norm[1]) == pytest.approx(EPS, rel=1e-6)
    assert_close(w, oracle(v, g, dim)[0], dtype)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, dim)
    assert torch.isfinite(grad_v).all() and torch.isfinite(grad_g).all()
    assert float(grad_g[1]) == 0.0
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, dim)
    assert_close(grad_g, grad_g_ref, dtype)
    # The zero slice's ∇v is (g/eps)·∇w, far larger than the others: compare each slice on its own.
    for s in range(v.shape[dim]):
        assert_close(grad_v.select(dim, s), grad_v_ref.select(dim, s), dtype)


def test_all_zero_whole_tensor() -> None:
    v = torch.zeros(3, 7, device=DEVICE)
    g = torch.full((1,), 2.0, device=DEVICE)
    w, norm = kernels.weight_norm_forward(v, g, None, 1e-8)
    assert (w == 0).all() and float(norm[0]) == pytest.approx(1e-8, rel=1e-6)
    grad_v, grad_g = kernels.weight_norm_backward(torch.ones_like(v), v, g, norm, None)
    assert float(grad_g[0]) == 0.0
    torch.testing.assert_close(grad_v, torch.full_like(v, 2.0 / 1e-8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dim", [0, 1, None])
def test_non_contiguous_inputs(dim: int | None, dtype: torch.dtype) -> None:
    """Transposed and strided views give the same results as their contiguous copies."""
    base_v, _, base_grad = make((130, 6), None, dtype, seed=5)
    v = base_v.t()  # (6, 130), transposed view
    grad_w = base_grad[::1, :].t()
    g_storage = torch.randn(2 * n_slices(v.shape, dim), dtype=torch.float64).to(dtype).to(DEVICE)
    g = g_storage[::2]  # strided view
    assert not v.is_contiguous() and not grad_w.is_contiguous()
    assert dim is None or not g.is_contiguous()
    w, norm = kernels.weight_norm_forward(v, g, dim, EPS)
    assert w.is_contiguous()
    assert_close(w, oracle(v, g, dim)[0], dtype)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, dim)
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, dim)
    assert_close(grad_v, grad_v_ref, dtype, grad_v_scale(grad_w, v, g, dim))
    assert_close(grad_g, grad_g_ref, dtype)


def test_sliced_view_and_expanded_grad() -> None:
    """A column-sliced weight and a stride-0 (expanded) upstream gradient, as from ``w.sum()``."""
    base = make((5, 40), None, torch.float32, seed=6)[0]
    v = base[:, ::3]
    g = make((5, 14), 0, torch.float32, seed=7)[1]
    grad_w = torch.ones((), device=DEVICE).expand(v.shape)
    w, norm = kernels.weight_norm_forward(v, g, 0, EPS)
    assert_close(w, oracle(v, g, 0)[0], torch.float32)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, 0)
    grad_v_ref, grad_g_ref = oracle_grads(grad_w, v, g, 0)
    assert_close(grad_v, grad_v_ref, torch.float32)
    assert_close(grad_g, grad_g_ref, torch.float32)


def test_empty_tensors() -> None:
    v = torch.empty(0, 3, device=DEVICE)
    w, norm = kernels.weight_norm_forward(v, torch.empty(0, device=DEVICE), 0, EPS)
    assert w.shape == (0, 3) and norm.shape == (0,)
    v = torch.empty(3, 0, device=DEVICE)
    g = torch.ones(3, device=DEVICE)
    w, norm = kernels.weight_norm_forward(v, g, 0, EPS)
    assert w.shape == (3, 0)
    torch.testing.assert_close(norm, torch.full((3,), EPS, device=DEVICE))
    grad_v, grad_g = kernels.weight_norm_backward(torch.empty_like(v), v, g, norm, 0)
    assert grad_v.shape == (3, 0) and (grad_g == 0).all()


def test_eps_is_exact_in_float64() -> None:
    """eps reaches the float64 kernel unrounded (a constexpr, not a float32 argument)."""
    v = torch.zeros(2, 3, dtype=torch.float64, device=DEVICE)
    g = torch.ones(2, dtype=torch.float64, device=DEVICE)
    _, norm = kernels.weight_norm_forward(v, g, 0, 1e-12)
    assert float(norm[0]) == 1e-12


# --------------------------------------------------------------------------------------------------
# Second oracle: the NumPy reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [((5, 130), 0), ((130, 5), -1), ((3, 4, 7, 3), 1), ((6, 9), None)], ids=case_id
)
def test_matches_numpy_reference(case: tuple) -> None:
    reference = pytest.importorskip("wnlib.reference", reason="wnlib.reference is not written yet")
    needed = ("norm", "weight", "grad_g", "grad_v")
    if not all(hasattr(reference, name) for name in needed):
        pytest.skip(f"wnlib.reference lacks one of {needed}")
    shape, dim = case
    v, g, grad_w = make(shape, dim, torch.float64, seed=8)
    v_np, g_np, gw_np = (t.cpu().numpy() for t in (v, g, grad_w))
    g_np = g_np.reshape(()) if dim is None else g_np
    w, norm = kernels.weight_norm_forward(v, g, dim, EPS)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, dim)
    np.testing.assert_allclose(
        w.cpu().numpy(), reference.weight(v_np, g_np, dim, EPS), rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(norm.cpu().numpy().reshape(-1), np.reshape(reference.norm(v_np, dim, EPS), -1))
    np.testing.assert_allclose(
        grad_g.cpu().numpy().reshape(-1),
        np.reshape(reference.grad_g(gw_np, v_np, dim, EPS), -1),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_allclose(
        grad_v.cpu().numpy(), reference.grad_v(gw_np, v_np, g_np, dim, EPS), rtol=1e-12, atol=1e-14
    )


# --------------------------------------------------------------------------------------------------
# The autograd Function
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,dim", [((3, 5), 0), ((4, 3), 1), ((2, 3, 2), 1), ((2, 3), None)], ids=str)
def test_autograd_function_gradcheck(shape: tuple, dim: int | None) -> None:
    v, g, _ = make(shape, dim, torch.float64, seed=9)
    v.requires_grad_()
    g.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, g: TritonWeightNorm.apply(v, g, dim, EPS)[0], (v, g))


def test_autograd_function_matches_oracle_and_partial_grads() -> None:
    v, g, grad_w = make((4, 130), 0, torch.float32, seed=10)
    v.requires_grad_()
    w = TritonWeightNorm.apply(v, g, 0, EPS)[0]  # g does not require grad
    assert_close(w.detach(), oracle(v.detach(), g, 0)[0], torch.float32)
    (grad_v,) = torch.autograd.grad(w, v, grad_w)
    assert_close(grad_v, oracle_grads(grad_w, v, g, 0)[0], torch.float32)


# --------------------------------------------------------------------------------------------------
# Errors, launch plans, lazy import, compilation for a real GPU
# --------------------------------------------------------------------------------------------------


def test_errors_say_what_was_expected() -> None:
    v = torch.randn(4, 3, device=DEVICE)
    with pytest.raises(ValueError, match=r"g has 3 elements .* v has 4 slices along dim 0"):
        kernels.weight_norm_forward(v, torch.ones(3, device=DEVICE), 0, EPS)
    with pytest.raises(ValueError, match="whole tensor"):
        kernels.weight_norm_forward(v, torch.ones(2, device=DEVICE), None, EPS)
    with pytest.raises(TypeError, match="float16, bfloat16, float32, float64"):
        kernels.weight_norm_forward(v.int(), torch.ones(4, device=DEVICE).int(), 0, EPS)
    with pytest.raises(ValueError, match="out of range"):
        kernels.weight_norm_forward(v, torch.ones(4, device=DEVICE), 2, EPS)
    with pytest.raises(ValueError, match="grad_w has shape"):
        kernels.weight_norm_backward(v[:2], v, torch.ones(4, device=DEVICE), torch.ones(4, device=DEVICE), 0)


def test_plans_for_an_h100() -> None:
    """The tiles chosen for the benchmark's shapes on a 132-SM GPU."""
    big = T.make_plan(1, 16384, 16384, 4, 132)  # Linear 16384×16384, dim 0
    assert (big.block_s, big.block_k, big.split, big.one_tile, big.num_warps) == (1, 16384, 1, True, 16)
    small = T.make_plan(1, 256, 256, 4, 132)  # short rows are batched
    assert small.block_s * small.block_k >= 2048 and small.one_tile
    cols = T.make_plan(4096, 4096, 1, 4, 132)  # dim = last: 32 adjacent columns = 128 bytes
    assert cols.layout == T.COLUMNS and cols.block_s == 32
    whole = T.make_plan(1, 1, 4096 * 4096, 4, 132)  # dim=None: split over many programs
    assert whole.split >= 132


@settings(max_examples=200, deadline=None)
@given(
    A=st.integers(1, 5000),
    S=st.integers(1, 5000),
    B=st.integers(1, 5000),
    elem_size=st.sampled_from([2, 4, 8]),
    n_sm=st.sampled_from([1, 8, 132]),
    split=st.one_of(st.none(), st.integers(1, 64)),
)
def test_plan_invariants(A: int, S: int, B: int, elem_size: int, n_sm: int, split: int | None) -> None:
    plan = T.make_plan(A, S, B, elem_size, n_sm, split=split)
    L = A * B
    for block in (plan.block_s, plan.block_k, plan.num_warps):
        assert block >= 1 and block & (block - 1) == 0
    assert 1 <= plan.num_warps <= 16
    assert plan.block_s * plan.block_k <= 16384
    assert plan.split * plan.chunk >= L  # every element covered ...
    if plan.split > 1:
        # ... once: whole blocks per chunk, and no chunk left empty
        assert plan.chunk % plan.block_k == 0 and (plan.split - 1) * plan.chunk < L
    assert plan.one_tile == (plan.split == 1 and L <= plan.block_k)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )


def test_import_is_lazy_and_works_without_triton() -> None:
    code = """
import sys
import wnlib, wnlib.kernels
assert "triton" not in sys.modules, "importing wnlib.kernels imported triton"
sys.modules["triton"] = None  # as if it were not installed
import wnlib.kernels as k
assert not k.available()
import torch
try:
    k.weight_norm_forward(torch.ones(2, 2), torch.ones(2), 0, 1e-12)
except ImportError as e:
    assert "Triton" in str(e), e
else:
    raise AssertionError("no ImportError")
print("ok")
"""
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cpu_tensors_need_the_interpreter() -> None:
    code = """
import torch, wnlib.kernels as k
try:
    k.weight_norm_forward(torch.ones(2, 2), torch.ones(2), 0, 1e-12)
except RuntimeError as e:
    assert "TRITON_INTERPRET" in str(e), e
    print("ok")
"""
    result = _run_python(code, TRITON_INTERPRET="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_kernels_compile_for_hopper() -> None:
    """The compiled (not interpreted) kernels build for sm_90 with Triton's ptxas, without spilling."""
    result = subprocess.run(
        [sys.executable, "-m", "wnlib.kernels.compile_check", "--quick", "--strict"],
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "0"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed, 0 spill" in result.stdout


@pytest.mark.parametrize("dim", [0, -1, None])
def test_clamped_slice_backward_is_the_derivative_of_the_clamped_norm(dim: int | None) -> None:
    """0 < ‖v‖ < eps: the norm is the constant eps, so ∇v = (g/eps)·∇w and ∇g = ∇w·v/eps."""
    eps = 1e-5
    v = torch.full((3, 4), 0.1 * eps, dtype=torch.float64, device=DEVICE)  # every slice far below eps
    n = 1 if dim is None else v.shape[dim]
    g = torch.linspace(0.5, 2.0, n, dtype=torch.float64, device=DEVICE)
    grad_w = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    _, norm = kernels.weight_norm_forward(v, g, dim, eps)
    assert torch.all(norm == eps)
    grad_v, grad_g = kernels.weight_norm_backward(grad_w, v, g, norm, dim, eps)
    shape = [1, 1] if dim is None else [n if d == dim % 2 else 1 for d in range(2)]
    torch.testing.assert_close(grad_v, g.reshape(shape) * grad_w / eps, rtol=1e-12, atol=0)
    axes = [0, 1] if dim is None else [1 - dim % 2]
    torch.testing.assert_close(grad_g, (grad_w * v).sum(axes).reshape(-1) / eps, rtol=1e-12, atol=0)
