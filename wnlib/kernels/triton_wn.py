"""Fused Triton kernels for weight normalization, forward (eq. 2) and backward (eq. 3–4).

Salimans & Kingma (2016) reparameterize a weight as ``w = g · v / ‖v‖`` (eq. 2), one norm per slice
along the kept axis ``dim``. Its gradients are (eq. 3–4)::

    ∇g = ∇w · v / ‖v‖
    ∇v = (g / ‖v‖) · ∇w − (g · ∇g / ‖v‖²) · v        (= (g/‖v‖) M_w ∇w)

Done with PyTorch ops this is a chain of kernels (norm, divide, multiply; then several more for the
backward), each a full pass over the weight. Here the forward is one kernel (per slice: the sum of
squares, then ``w``) and so is the backward (per slice: the dot product ``∇w·v``, then ``∇v``); when a
slice fits in one tile (rows of up to 16384 elements, 8192 in float64), each element is read once.

Layout. Every case is viewed as a contiguous ``(A, S, B)`` tensor with the slices along the middle axis:
``dim=0`` gives ``A = 1`` (each slice a contiguous row), the last dim gives ``B = 1`` (each slice a
strided column), a middle dim (ConvTranspose weights, ``dim=1``) gives both ``A, B > 1``, and
``dim=None`` gives ``S = 1`` (the whole tensor one slice). Element ``k = a·B + b`` of slice ``s`` lives
at offset ``a·S·B + s·B + b``. A program owns a tile of ``BLOCK_S`` slices × ``BLOCK_K`` elements:

* row-like slices (``A = 1``, or long contiguous runs ``B``) use a tall tile along ``k``; short rows are
  batched several to a program so a program still moves a few thousand elements;
* column slices (``B = 1``, or short runs) use ``BLOCK_S`` adjacent slices, so each load of the tile
  reads 128 contiguous bytes across slices;
* a slice that fits in one tile is read once (``ONE_TILE``): 2 passes over memory for the forward
  (read ``v``, write ``w``), 3 for the backward (read ``∇w`` and ``v``, write ``∇v``), the minimum;
* few, long slices (``dim=None``, or a handful of output units) are split over ``SPLIT`` programs each:
  a first kernel writes partial sums, the second adds them up (deterministically, no atomics) and
  writes its chunk.

Accumulation is float32 for float16/bfloat16 inputs and float64 for float64; the norm buffer has that
accumulation dtype and the kernels take their compute dtype from it.

This module imports Triton at import time; use it through :mod:`wnlib.kernels`, which loads it lazily.
On CPU tensors it only runs under Triton's interpreter (``TRITON_INTERPRET=1`` set before import).
Tensors on the ``meta`` device go through the host code without launching anything real; that is how
:mod:`wnlib.kernels.compile_check` records the launches to compile them for a GPU that is not there.
The Implementation chapter describes the design and benchmarks it (``python -m wnlib.bench_gpu``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wnlib._extras import missing_extra

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as error:  # pragma: no cover - exercised by tests/test_packaging.py
    if error.name is None or error.name.partition(".")[0] != "triton":
        raise
    raise missing_extra("triton", "wnlib.kernels.triton_wn (the fused GPU kernels)") from error

__all__ = [
    "COLUMNS",
    "COLUMN_ONE_TILE",
    "COLUMN_TILE",
    "GENERAL",
    "LONG_RUN",
    "MAX_BLOCK_K",
    "MAX_BLOCK_K_F64",
    "MIN_ROW_TILE",
    "ROWS",
    "SUPPORTED_DTYPES",
    "Plan",
    "backward",
    "default_plan",
    "forward",
    "grid_for",
    "interpreted",
    "make_plan",
    "view_3d",
]

#: The dtypes the kernels take (accumulating in float32, or float64 for float64).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Memory layouts of a slice (constexpr ``LAYOUT`` in the kernels).
#: Layout ``ROWS``: A == 1: slice s is the contiguous run [s·B, (s+1)·B).
ROWS = 0
#: Layout ``COLUMNS``: B == 1: element k of slice s is at k·S + s.
COLUMNS = 1
#: Layout ``GENERAL``: A > 1 and B > 1: element k = a·B + b is at a·S·B + s·B + b.
GENERAL = 2


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _offsets(rs, rk, S, B, LAYOUT: tl.constexpr, IDX64: tl.constexpr):
    """Offsets of the [BLOCK_S, BLOCK_K] tile: slices ``rs`` (rows) × in-slice indices ``rk``."""
    s = rs[:, None]
    k = rk[None, :]
    if IDX64:
        s = s.to(tl.int64)
        k = k.to(tl.int64)
    if LAYOUT == 0:
        off = s * B + k
    elif LAYOUT == 1:
        off = k * S + s
    else:
        a = k // B
        off = a * S * B + s * B + (k - a * B)
    return off


@triton.jit
def _sqrt(x, ACC64: tl.constexpr):
    """IEEE round-to-nearest square root (``tl.sqrt`` is the fast approximation for float32)."""
    if ACC64:
        r = tl.sqrt(x)
    else:
        r = tl.sqrt_rn(x)
    return r


@triton.jit
def _div(a, b, ACC64: tl.constexpr):
    """IEEE round-to-nearest division (``/`` is approximate, within 2 ulp, for float32)."""
    if ACC64:
        r = a / b
    else:
        r = tl.div_rn(a, b)
    return r


@triton.jit
def _wn_partial_kernel(
    x_ptr,
    y_ptr,
    part_ptr,
    S,
    B,
    L,
    CHUNK,
    LAYOUT: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Split pass 1: part[c, s] = Σ_{k in chunk c} x_sk·y_sk (DOT) or x_sk² (not DOT)."""
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    rs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = rs < S
    acc = tl.zeros([BLOCK_S, BLOCK_K], dtype=part_ptr.dtype.element_ty)
    k0 = pid_c * CHUNK
    for start in range(k0, k0 + CHUNK, BLOCK_K):
        rk = start + tl.arange(0, BLOCK_K)
        mask = s_mask[:, None] & (rk < L)[None, :]
        off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(acc.dtype)
        if DOT:
            y = tl.load(y_ptr + off, mask=mask, other=0.0).to(acc.dtype)
            acc += x * y
        else:
            acc += x * x
    tl.store(part_ptr + pid_c * S + rs, tl.sum(acc, axis=1), mask=s_mask)


@triton.jit
def _wn_fwd_kernel(
    v_ptr,
    g_ptr,
    w_ptr,
    norm_ptr,
    part_ptr,
    S,
    B,
    L,
    CHUNK,
    N_SPLIT,
    EPS: tl.constexpr,
    LAYOUT: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr,
    ONE_TILE: tl.constexpr,
    IDX64: tl.constexpr,
    ACC64: tl.constexpr,
):
    """w_sk = g_s · v_sk / norm_s with norm_s = max(sqrt(Σ_k v_sk²), EPS)  (eq. 2); also stores norm_s."""
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    acc_dtype = norm_ptr.dtype.element_ty
    rs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = rs < S
    k0 = pid_c * CHUNK

    if SPLIT:
        # Sum of squares from the partial sums of _wn_partial_kernel, in a fixed order.
        ssq = tl.zeros([BLOCK_S], dtype=acc_dtype)
        for c in range(0, N_SPLIT):
            ssq += tl.load(part_ptr + c * S + rs, mask=s_mask, other=0.0)
    elif ONE_TILE:
        # The whole slice fits in the tile: read v once, keep it in registers for the store.
        rk = tl.arange(0, BLOCK_K)
        tile_mask = s_mask[:, None] & (rk < L)[None, :]
        tile_off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
        v_tile = tl.load(v_ptr + tile_off, mask=tile_mask, other=0.0).to(acc_dtype)
        ssq = tl.sum(v_tile * v_tile, axis=1)
    else:
        acc = tl.zeros([BLOCK_S, BLOCK_K], dtype=acc_dtype)
        for start in range(0, L, BLOCK_K):
            rk = start + tl.arange(0, BLOCK_K)
            mask = s_mask[:, None] & (rk < L)[None, :]
            off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
            x = tl.load(v_ptr + off, mask=mask, other=0.0).to(acc_dtype)
            acc += x * x
        ssq = tl.sum(acc, axis=1)

    norm = _sqrt(ssq, ACC64)
    norm = tl.maximum(norm, tl.zeros_like(norm) + EPS)  # EPS in the accumulation dtype, not float32
    g = tl.load(g_ptr + rs, mask=s_mask, other=0.0).to(acc_dtype)
    scale = _div(g, norm, ACC64)
    tl.store(norm_ptr + rs, norm, mask=s_mask & (pid_c == 0))

    if ONE_TILE and not SPLIT:
        w_tile = v_tile * scale[:, None]
        tl.store(w_ptr + tile_off, w_tile.to(w_ptr.dtype.element_ty), mask=tile_mask)
    else:
        for start in range(k0, k0 + CHUNK, BLOCK_K):
            rk = start + tl.arange(0, BLOCK_K)
            mask = s_mask[:, None] & (rk < L)[None, :]
            off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
            x = tl.load(v_ptr + off, mask=mask, other=0.0).to(acc_dtype)
            tl.store(w_ptr + off, (x * scale[:, None]).to(w_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _wn_bwd_kernel(
    gw_ptr,
    v_ptr,
    g_ptr,
    norm_ptr,
    gv_ptr,
    gg_ptr,
    part_ptr,
    S,
    B,
    L,
    CHUNK,
    N_SPLIT,
    LAYOUT: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr,
    ONE_TILE: tl.constexpr,
    IDX64: tl.constexpr,
    ACC64: tl.constexpr,
    EPS: tl.constexpr,
):
    """∇g_s = (∇w_s·v_s)/norm_s (eq. 3); ∇v_s = (g_s/norm_s)∇w_s − (g_s∇g_s/norm_s²)v_s (eq. 4).

    Where the forward clamped the norm (norm_s ≤ EPS) it does not depend on v, so the second term is 0.
    """
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    acc_dtype = norm_ptr.dtype.element_ty
    rs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = rs < S
    k0 = pid_c * CHUNK

    if SPLIT:
        dot = tl.zeros([BLOCK_S], dtype=acc_dtype)
        for c in range(0, N_SPLIT):
            dot += tl.load(part_ptr + c * S + rs, mask=s_mask, other=0.0)
    elif ONE_TILE:
        rk = tl.arange(0, BLOCK_K)
        tile_mask = s_mask[:, None] & (rk < L)[None, :]
        tile_off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
        gw_tile = tl.load(gw_ptr + tile_off, mask=tile_mask, other=0.0).to(acc_dtype)
        v_tile = tl.load(v_ptr + tile_off, mask=tile_mask, other=0.0).to(acc_dtype)
        dot = tl.sum(gw_tile * v_tile, axis=1)
    else:
        acc = tl.zeros([BLOCK_S, BLOCK_K], dtype=acc_dtype)
        for start in range(0, L, BLOCK_K):
            rk = start + tl.arange(0, BLOCK_K)
            mask = s_mask[:, None] & (rk < L)[None, :]
            off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
            x = tl.load(gw_ptr + off, mask=mask, other=0.0).to(acc_dtype)
            y = tl.load(v_ptr + off, mask=mask, other=0.0).to(acc_dtype)
            acc += x * y
        dot = tl.sum(acc, axis=1)

    # Masked-off slices load norm = 1 so that no 0/0 is ever formed.
    norm = tl.load(norm_ptr + rs, mask=s_mask, other=1.0).to(acc_dtype)
    g = tl.load(g_ptr + rs, mask=s_mask, other=0.0).to(acc_dtype)
    grad_g = _div(dot, norm, ACC64)
    alpha = _div(g, norm, ACC64)  # coefficient of ∇w in eq. 4
    beta = _div(alpha * grad_g, norm, ACC64)  # coefficient of v in eq. 4: g·∇g/norm²
    beta = tl.where(norm > tl.zeros_like(norm) + EPS, beta, tl.zeros_like(beta))  # EPS in acc dtype
    tl.store(gg_ptr + rs, grad_g.to(gg_ptr.dtype.element_ty), mask=s_mask & (pid_c == 0))

    if ONE_TILE and not SPLIT:
        gv_tile = alpha[:, None] * gw_tile - beta[:, None] * v_tile
        tl.store(gv_ptr + tile_off, gv_tile.to(gv_ptr.dtype.element_ty), mask=tile_mask)
    else:
        for start in range(k0, k0 + CHUNK, BLOCK_K):
            rk = start + tl.arange(0, BLOCK_K)
            mask = s_mask[:, None] & (rk < L)[None, :]
            off = _offsets(rs, rk, S, B, LAYOUT, IDX64)
            x = tl.load(gw_ptr + off, mask=mask, other=0.0).to(acc_dtype)
            y = tl.load(v_ptr + off, mask=mask, other=0.0).to(acc_dtype)
            gv = alpha[:, None] * x - beta[:, None] * y
            tl.store(gv_ptr + off, gv.to(gv_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------
# Launch plans
# ---------------------------------------------------------------------------------------------------


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Plan:
    """How the kernels tile an ``(A, S, B)`` problem.

    ``layout``: ROWS / COLUMNS / GENERAL (see the module docstring). A program owns ``block_s`` slices;
    its tile is ``block_s × block_k`` elements. ``split`` programs share each group of slices, each
    reducing/writing ``chunk`` elements (a multiple of ``block_k``); ``split == 1`` fuses reduce and
    write in one kernel, and ``one_tile`` (slice length ≤ ``block_k``) reads each element only once.
    """

    layout: int
    block_s: int
    block_k: int
    split: int
    chunk: int
    num_warps: int
    one_tile: bool


def grid_for(plan: Plan, S: int) -> tuple[int, int]:
    """Launch grid: (groups of ``block_s`` slices, splits per group)."""
    return (_cdiv(S, plan.block_s), plan.split)


# Tile-size limits. A tile is held in registers: 16384 float32 over 16 warps is 32 values per thread
# (64 in the backward, which holds ∇w and v). Short slices are batched to at least ~2048 elements per
# program; column tiles span 128 contiguous bytes across adjacent slices.
#: The longest slice a program reduces in one tile (float16/bfloat16/float32).
MAX_BLOCK_K = 16384
#: The longest one-tile slice in float64.
MAX_BLOCK_K_F64 = 8192
#: Short slices are batched to at least this many elements per program.
MIN_ROW_TILE = 2048
#: Elements per program of a column tile (128 contiguous bytes across adjacent slices).
COLUMN_TILE = 4096
#: The longest column slice reduced in one tile.
COLUMN_ONE_TILE = 8192
#: A GENERAL layout with runs of at least this many contiguous elements is tiled like rows.
LONG_RUN = 32


def make_plan(
    A: int,
    S: int,
    B: int,
    elem_size: int,
    n_sm: int,
    *,
    block_s: int | None = None,
    block_k: int | None = None,
    split: int | None = None,
    num_warps: int | None = None,
) -> Plan:
    """Choose tile shape, split and warps for slices of ``L = A·B`` elements.

    ``n_sm`` is the number of streaming multiprocessors: slices are split over several programs only
    when there are fewer than ``4·n_sm`` programs otherwise. ``block_s``, ``block_k``, ``split`` and
    ``num_warps`` override the heuristic (blocks and warps are powers of two); the tests use them to
    force every code path, and ``python -m wnlib.bench_gpu --sweep`` to time alternatives on a GPU.
    """
    L = A * B
    layout = ROWS if A == 1 else COLUMNS if B == 1 else GENERAL
    row_like = layout == ROWS or (layout == GENERAL and B >= LONG_RUN)
    max_k = MAX_BLOCK_K_F64 if elem_size >= 8 else MAX_BLOCK_K
    if row_like:
        bk = min(_next_pow2(L), max_k)
        bs = min(_next_pow2(S), max(1, MIN_ROW_TILE // bk))
    else:
        bs = min(_next_pow2(S), max(1, 128 // elem_size))
        if _next_pow2(L) * bs <= COLUMN_ONE_TILE:
            bk = _next_pow2(L)
        else:
            bk = max(1, COLUMN_TILE // bs)
    if block_s is not None:
        bs = block_s
    if block_k is not None:
        bk = block_k
    for name, value in (("block_s", bs), ("block_k", bk)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value}")

    n_groups = _cdiv(S, bs)
    k_blocks = max(1, _cdiv(L, bk))
    if split is None:
        target = 4 * max(1, n_sm)
        split = 1
        if n_groups < target and k_blocks >= 4:
            split = min(k_blocks, _cdiv(target, n_groups))
    split = max(1, min(int(split), k_blocks))
    chunk = _cdiv(k_blocks, split) * bk
    split = max(1, _cdiv(L, chunk))
    if split == 1:
        chunk = max(L, 1)
    if num_warps is None:
        num_warps = max(1, min(16, (bs * bk) // 512))
    elif num_warps < 1 or num_warps > 32 or num_warps & (num_warps - 1):
        raise ValueError(f"num_warps must be a power of two from 1 to 32, got {num_warps}")
    return Plan(
        layout=layout,
        block_s=bs,
        block_k=bk,
        split=split,
        chunk=chunk,
        num_warps=num_warps,
        one_tile=split == 1 and L <= bk,
    )


@functools.lru_cache(maxsize=1024)
def default_plan(A: int, S: int, B: int, elem_size: int, n_sm: int) -> Plan:
    """:func:`make_plan` without overrides, memoized (the host code runs on every call)."""
    return make_plan(A, S, B, elem_size, n_sm)


# ---------------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------------


def view_3d(shape: tuple[int, ...] | torch.Size, dim: int | None) -> tuple[int, int, int]:
    """(A, S, B) for slices along ``dim`` (None: the whole tensor is one slice)."""
    if dim is None:
        return 1, 1, math.prod(shape)
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float16/bfloat16/float32 accumulate (and return norms) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def interpreted() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return type(_wn_fwd_kernel).__name__ == "InterpretedFunction"


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _n_sm(device: torch.device) -> int:
    if device.type == "cuda":
        return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 1  # interpreter: programs run one after another anyway


def _normalize_dim(dim: int | None, ndim: int) -> int | None:
    if dim is None:
        return None
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(f"dim={dim} is out of range for a weight with {ndim} dimensions")
    if ndim == 0:
        raise ValueError("a 0-d weight has no dim to slice along; use dim=None")
    return dim % ndim


def _check(v: Tensor, g: Tensor, dim: int | None, S: int, others: tuple[Tensor, ...] = ()) -> None:
    if v.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"v has dtype {v.dtype}; the Triton kernels support float16, bfloat16, float32, float64"
        )
    if g.numel() != S:
        where = "the whole tensor (dim=None) is 1 slice" if dim is None else f"v has {S} slices"
        raise ValueError(
            f"g has {g.numel()} elements (shape {tuple(g.shape)}) but {where}"
            + ("" if dim is None else f" along dim {dim}")
        )
    for t in (g, *others):
        if t.device != v.device:
            raise ValueError(f"all tensors must be on {v.device}; got one on {t.device}")
    if v.device.type not in ("cuda", "meta") and not interpreted():
        raise RuntimeError(
            f"the Triton weight-norm kernels run on CUDA tensors, got a tensor on {v.device}; "
            "set TRITON_INTERPRET=1 before wnlib.kernels loads them to run on CPU (slow, for tests)"
        )


def _flat(t: Tensor) -> Tensor:
    """``t`` as a contiguous 1-d tensor (no op, and no dispatch, when it already is one)."""
    if t.ndim != 1:
        t = t.reshape(-1)
    return t if t.is_contiguous() else t.contiguous()


def _launch(kernel: Any, grid: tuple[int, int], *args: Any, **meta: Any) -> None:
    """Launch ``kernel`` on ``grid``. A single seam: :mod:`wnlib.kernels.compile_check` replaces it to
    record launches (with ``meta``-device tensors) and compile them for a GPU that is not present."""
    kernel[grid](*args, **meta)


def forward(
    v: Tensor, g: Tensor, dim: int | None, eps: float, plan: Plan | None = None
) -> tuple[Tensor, Tensor]:
    """(w, norm) with norm_s = max(sqrt(Σ v_s²), eps) and w = g_s · v_s / norm_s  (eq. 2).

    ``w`` is contiguous with ``v``'s shape and dtype; ``norm`` has shape (S,) in the accumulation
    dtype (float32, or float64 for float64 ``v``). ``plan`` overrides :func:`make_plan`.
    """
    dim = _normalize_dim(dim, v.ndim)
    A, S, B = view_3d(v.shape, dim)
    _check(v, g, dim, S)
    acc_dtype = _accumulation_dtype(v.dtype)
    L = A * B
    w = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    norm = torch.empty(S, dtype=acc_dtype, device=v.device)
    if S == 0:
        return w, norm
    if L == 0:
        norm.fill_(eps)
        return w, norm
    v_c = v.contiguous()
    g_c = _flat(g)
    if plan is None:
        plan = default_plan(A, S, B, v.element_size(), _n_sm(v.device))
    idx64 = v.numel() >= 2**31 - 1
    grid = grid_for(plan, S)
    common = dict(LAYOUT=plan.layout, BLOCK_S=plan.block_s, BLOCK_K=plan.block_k, IDX64=idx64)
    if plan.split > 1:
        part = torch.empty((plan.split, S), dtype=acc_dtype, device=v.device)
        _launch(
            _wn_partial_kernel,
            grid,
            v_c,
            v_c,
            part,
            S,
            B,
            L,
            plan.chunk,
            DOT=False,
            num_warps=plan.num_warps,
            **common,
        )
    else:
        part = norm  # unused
    _launch(
        _wn_fwd_kernel,
        grid,
        v_c,
        g_c,
        w,
        norm,
        part,
        S,
        B,
        L,
        plan.chunk,
        plan.split,
        EPS=float(eps),
        SPLIT=plan.split > 1,
        ONE_TILE=plan.one_tile,
        ACC64=acc_dtype == torch.float64,
        num_warps=plan.num_warps,
        **common,
    )
    return w, norm


def backward(
    grad_w: Tensor,
    v: Tensor,
    g: Tensor,
    norm: Tensor,
    dim: int | None,
    plan: Plan | None = None,
    eps: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """(∇v, ∇g) from eq. 3–4, given the per-slice ``norm`` returned by :func:`forward`.

    ∇g_s = ∇w_s·v_s / norm_s and ∇v_s = (g_s/norm_s)·∇w_s − (g_s·∇g_s/norm_s²)·v_s; ``∇v`` has ``v``'s
    shape and dtype, ``∇g`` has ``g``'s shape and dtype. Slices whose norm the forward clamped at ``eps``
    drop the second term (the clamped norm is constant in v).
    """
    dim = _normalize_dim(dim, v.ndim)
    A, S, B = view_3d(v.shape, dim)
    _check(v, g, dim, S, (grad_w, norm))
    if grad_w.shape != v.shape:
        raise ValueError(f"grad_w has shape {tuple(grad_w.shape)} but v has {tuple(v.shape)}")
    if norm.numel() != S:
        raise ValueError(f"norm has {norm.numel()} elements but v has {S} slices")
    acc_dtype = _accumulation_dtype(v.dtype)
    L = A * B
    grad_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    grad_g = torch.empty(S, dtype=g.dtype, device=v.device)
    if S == 0 or L == 0:
        return grad_v, grad_g.zero_().reshape(g.shape)
    gw_c = (grad_w if grad_w.dtype == v.dtype else grad_w.to(v.dtype)).contiguous()
    v_c = v.contiguous()
    g_c = _flat(g)
    norm_c = _flat(norm if norm.dtype == acc_dtype else norm.to(acc_dtype))
    if plan is None:
        plan = default_plan(A, S, B, v.element_size(), _n_sm(v.device))
    idx64 = v.numel() >= 2**31 - 1
    grid = grid_for(plan, S)
    common = dict(LAYOUT=plan.layout, BLOCK_S=plan.block_s, BLOCK_K=plan.block_k, IDX64=idx64)
    if plan.split > 1:
        part = torch.empty((plan.split, S), dtype=acc_dtype, device=v.device)
        _launch(
            _wn_partial_kernel,
            grid,
            gw_c,
            v_c,
            part,
            S,
            B,
            L,
            plan.chunk,
            DOT=True,
            num_warps=plan.num_warps,
            **common,
        )
    else:
        part = norm_c  # unused
    _launch(
        _wn_bwd_kernel,
        grid,
        gw_c,
        v_c,
        g_c,
        norm_c,
        grad_v,
        grad_g,
        part,
        S,
        B,
        L,
        plan.chunk,
        plan.split,
        SPLIT=plan.split > 1,
        ONE_TILE=plan.one_tile,
        ACC64=acc_dtype == torch.float64,
        EPS=float(eps),
        num_warps=plan.num_warps,
        **common,
    )
    return grad_v, grad_g if g.ndim == 1 else grad_g.reshape(g.shape)
