"""The weight-norm op for PyTorch: w = g · v / ‖v‖ with the paper's analytic backward.

Used by every layer in :mod:`wnlib.nn` and by :func:`wnlib.weight_norm`; the Implementation chapter
walks through it. Two entry points:

- :func:`weight_norm` materializes w (any tensor shape, any kept axis ``dim``);
- :func:`linear` computes a weight-normalized dense layer without materializing w, as
  y = (g/‖v‖) ⊙ (x vᵀ) + b, which is exact because the layer is linear in its weight.

The backward of both is eq. 3–4 of Salimans & Kingma (2016), written out by hand: it saves v and the
per-slice norms, never w. Norms (and the backward's reductions) are accumulated in float32 for float16
and bfloat16 inputs. On CUDA tensors :func:`weight_norm` runs the fused Triton kernels of
:mod:`wnlib.kernels` when Triton is importable; :func:`use_backend` forces either path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

DEFAULT_EPS = 1e-12
Backend = Literal["auto", "torch", "triton"]
_BACKENDS = ("auto", "torch", "triton")
_backend: Backend = "auto"
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FUSED_DTYPES = (torch.float32, torch.float64)
# Below this many weights, per-op overhead dominates and materializing w with PyTorch's fused op wins
# (measured by ``python -m wnlib.bench``; see the Implementation chapter).
SCALED_LINEAR_MIN_NUMEL = 2**18


# --------------------------------------------------------------------------------------------------
# Checks and shapes
# --------------------------------------------------------------------------------------------------


def canonical_dim(v: Tensor, dim: int | None) -> int | None:
    """``dim`` as an index in [0, v.ndim), or None; a clear error when it is out of range."""
    if dim is None:
        return None
    if not isinstance(dim, int):
        raise TypeError(f"dim must be an int or None, got {type(dim).__name__}")
    if v.ndim == 0 or not -v.ndim <= dim < v.ndim:
        raise IndexError(
            f"dim {dim} is out of range for v with {v.ndim} dimensions (shape {tuple(v.shape)}); "
            f"use a value in [{-v.ndim}, {v.ndim - 1}] or None"
        )
    return dim % v.ndim


def check_eps(eps: object) -> float:
    """``eps`` as a float, or a clear error: it must be a finite, non-negative real number.

    eps is the lower bound of ‖v‖ (the clamp max(‖v‖, eps)); NaN would make every w NaN, inf every w 0,
    and a negative value is no bound at all. 0 is allowed (no clamp: a zero slice then gives NaN).
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__} {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0 (the lower bound of ‖v‖), got {eps}")
    return eps


def num_slices(v: Tensor, dim: int | None) -> int:
    """How many norms (and g values) v has: its size along the kept axis, or 1 for dim=None."""
    return 1 if dim is None else v.shape[dim]


def slice_shape(v: Tensor, dim: int | None) -> list[int]:
    """Shape that makes a per-slice vector broadcast against v (size S along ``dim``, 1 elsewhere)."""
    shape = [1] * v.ndim
    if dim is not None:
        shape[dim] = v.shape[dim]
    return shape


def check_inputs(v: Tensor, g: Tensor, dim: int | None) -> None:
    """Raise a specific error for anything eq. 2 cannot be applied to."""
    for name, t in (("v", v), ("g", g)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"weight norm needs floating-point tensors, but {name} is {t.dtype}")
    if v.dtype != g.dtype:
        raise TypeError(f"v is {v.dtype} but g is {g.dtype}; give both the same dtype")
    if v.device != g.device:
        raise ValueError(f"v is on {v.device} but g is on {g.device}")
    if v.numel() == 0:
        raise ValueError(f"v is empty (shape {tuple(v.shape)}): there is no direction to normalize")
    n = num_slices(v, dim)
    keepdim = tuple(slice_shape(v, dim))
    if g.numel() != n or (g.ndim > 1 and tuple(g.shape) != keepdim):
        where = "as one slice (dim=None)" if dim is None else f"along dim {dim}"
        raise ValueError(
            f"g has shape {tuple(g.shape)} but v (shape {tuple(v.shape)}) has {n} slice(s) {where}: "
            f"expected g of shape ({n},) or {keepdim}"
        )


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 (norms and dot products lose too much otherwise), else dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def slice_norm(v: Tensor, dim: int | None, eps: float = DEFAULT_EPS) -> Tensor:
    """‖v‖ per slice, clamped below at eps, shape (S,), in the accumulation dtype.

    The clamp (the convention of ``torch.nn.functional.normalize``) keeps a zero slice finite: its w is 0
    and its gradients are finite (∇g = 0, ∇v = (g/eps)·∇w). Any slice with ‖v‖ ≥ eps is untouched.
    """
    acc = accumulation_dtype(v.dtype)
    if dim is None:
        n = torch.linalg.vector_norm(v, dtype=acc).reshape(1)
    elif dim == 0 and v.is_contiguous():
        n = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1, dtype=acc)
    else:
        n = torch.linalg.vector_norm(v, dim=[d for d in range(v.ndim) if d != dim], dtype=acc)
    return n.clamp_min_(eps)


def _slice_dot(a: Tensor, b: Tensor, dim: int | None, acc: torch.dtype) -> Tensor:
    """Σ a·b per slice, shape (S,), accumulated in ``acc`` (no weight-sized temporary where possible)."""
    if a.dtype != acc:
        a, b = a.to(acc), b.to(acc)
    if dim is None:
        return torch.dot(a.reshape(-1), b.reshape(-1)).reshape(1)
    if dim == 0 and a.is_contiguous() and b.is_contiguous():
        s = a.shape[0]
        return torch.bmm(a.reshape(s, 1, -1), b.reshape(s, -1, 1)).reshape(s)
    reduce = [d for d in range(a.ndim) if d != dim]
    return (a * b).sum(reduce)


# --------------------------------------------------------------------------------------------------
# Backend switch
# --------------------------------------------------------------------------------------------------


def set_backend(name: Backend) -> None:
    """Choose how :func:`weight_norm` runs: ``"auto"`` (Triton kernels on CUDA when available, PyTorch
    ops otherwise), ``"torch"`` (always PyTorch ops) or ``"triton"`` (always the kernels; on CPU this
    needs ``TRITON_INTERPRET=1``)."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {_BACKENDS}")
    if name == "triton" and not _kernels().available():
        raise RuntimeError("backend 'triton' needs the triton package: pip install triton")
    _backend = name


def get_backend() -> Backend:
    """The backend set by :func:`set_backend` (``"auto"`` unless changed)."""
    return _backend


@contextlib.contextmanager
def use_backend(name: Backend) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous backend on exit."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _kernels():
    from wnlib import kernels

    return kernels


def _use_kernels(v: Tensor) -> bool:
    if _backend == "torch":
        return False
    if _backend == "triton":
        return True
    return v.is_cuda and _kernels().available()


# --------------------------------------------------------------------------------------------------
# The op
# --------------------------------------------------------------------------------------------------


class WeightNormFunction(torch.autograd.Function):
    """w = g·v/‖v‖ (eq. 2) with the backward of eq. 3–4, in PyTorch ops.

    Saves v, g and the per-slice norms (not w). ``g`` arrives flattened to (S,). Where the norm is
    clamped at eps it is constant in v, so that slice's ∇v is (g/eps)·∇w, without the projection.
    """

    @staticmethod
    def forward(ctx, v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
        n = slice_norm(v, dim, eps)
        scale = (g.to(n.dtype) / n).reshape(slice_shape(v, dim))
        w = (v * scale).to(v.dtype)
        ctx.save_for_backward(v, g, n)
        ctx.dim, ctx.eps = dim, eps
        return w

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        v, g, n = ctx.saved_tensors
        dim, eps = ctx.dim, ctx.eps
        if _fused_backward_applies(v, dim) and not bool((n <= eps).any()):
            shape = slice_shape(v, dim)
            grad_v, grad_g = torch.ops.aten._weight_norm_interface_backward(
                grad_w.contiguous(), v.contiguous(), g.reshape(shape), n.reshape(shape), dim
            )
            return grad_v, grad_g.reshape(g.shape), None, None
        return (*_weight_norm_backward(grad_w, v, g, n, dim, eps), None, None)


def _fused_backward_applies(v: Tensor, dim: int | None) -> bool:
    """PyTorch's own fused CPU/CUDA kernel for eq. 3–4 handles float32/float64 and the first or last axis.

    It takes the norms as an input and computes exactly :func:`_weight_norm_backward` in one pass, as long
    as no norm was clamped (it always applies the projection).
    """
    return dim is not None and v.ndim > 1 and (dim == 0 or dim == v.ndim - 1) and v.dtype in _FUSED_DTYPES


def _weight_norm_backward(
    grad_w: Tensor, v: Tensor, g: Tensor, n: Tensor, dim: int | None, eps: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Eq. 3–4 in PyTorch ops, accumulated in n's dtype (float32 for float16/bfloat16).

    Slices whose norm was clamped (n ≤ eps) get no projection term: there the norm is constant in v.
    """
    acc = n.dtype
    g_acc = g.to(acc)
    grad_g = _slice_dot(grad_w, v, dim, acc) / n  # eq. 3: ∇g = ∇w·v/‖v‖
    # eq. 3–4: ∇v = (g/‖v‖)∇w − (g∇g/‖v‖²)v, the part of ∇w orthogonal to w, scaled by g/‖v‖
    shape = slice_shape(v, dim)
    scale = (g_acc / n).reshape(shape)
    coef = (g_acc * grad_g / (n * n) * (n > eps)).reshape(shape)
    grad_v = grad_w.to(acc) * scale
    grad_v.addcmul_(v.to(acc), coef, value=-1.0)
    return grad_v.to(v.dtype), grad_g.to(g.dtype)


def weight_norm(v: Tensor, g: Tensor, dim: int | None = 0, eps: float = DEFAULT_EPS) -> Tensor:
    """w = g · v / ‖v‖  (Salimans & Kingma 2016, eq. 2).

    Args:
        v: the direction parameter, any shape, floating point.
        g: the scale, one value per slice: shape (S,) or torch's keep-dim shape (S along ``dim``, 1
            elsewhere); a single element for ``dim=None``.
        dim: the kept axis, one norm per index along it (0 for Linear/Conv weights, 1 for
            ConvTranspose weights, which are laid out (in, out, ...)); negative values count from the
            end; ``None`` normalizes the whole tensor as one vector.
        eps: lower bound on ‖v‖ (as in ``torch.nn.functional.normalize``), so a zero slice gives w = 0 and
            finite gradients; slices with ‖v‖ ≥ eps are exactly eq. 2.

    Returns:
        w, with v's shape and dtype. Along every slice ‖w‖ = |g| (up to eps).

    The backward is eq. 3–4: ∇g = ∇w·v/‖v‖ and ∇v = (g/‖v‖)·(∇w − (∇g/‖v‖)·v), so ∇v ⟂ v.
    Norms are accumulated in float32 for float16/bfloat16 inputs. CUDA tensors use fused Triton
    kernels when available (see :func:`use_backend`).
    """
    dim = canonical_dim(v, dim)
    check_inputs(v, g, dim)
    return _weight_norm(v, g, dim, eps)


def _weight_norm(v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
    """:func:`weight_norm` on checked inputs: picks the Triton kernels, PyTorch's fused op or ours."""
    if _use_kernels(v):
        return _kernels().TritonWeightNorm.apply(v, g.reshape(-1), dim, eps)
    if _native_applies(v, dim):
        w, n = torch._weight_norm_interface(v, g, dim)  # takes g as (S,) or keep-dim
        if n.min().item() >= eps:
            return w
    return WeightNormFunction.apply(v, g.reshape(-1), dim, eps)


def _native_applies(v: Tensor, dim: int | None) -> bool:
    """Whether ``torch._weight_norm_interface`` can compute w here: CPU, float32/64, first or last axis.

    It is one fused pass forward and backward with autograd in C++, but has no eps: its w equals ours
    exactly when every ‖v‖ ≥ eps (the clamp then does nothing), which :func:`_weight_norm` checks on
    the norms it returns, falling back to :class:`WeightNormFunction` otherwise. Not while compiling:
    that check reads a value, which would break the graph.
    """
    return v.is_cpu and _fused_backward_applies(v, dim) and not torch.compiler.is_compiling()


class ScaledLinearFunction(torch.autograd.Function):
    """y = (g/‖v‖) ⊙ (x vᵀ) + b: a weight-normalized dense layer that never materializes w.

    Forward reads v once more than a plain layer (for the norms); backward adds one weight-sized
    correction, −(c g/‖v‖³)·v with c = Σ_batch ∂L/∂y ⊙ (x vᵀ), which is eq. 4's projection.
    """

    @staticmethod
    def forward(ctx, x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None, eps: float) -> Tensor:
        n = slice_norm(v, 0, eps)
        scale = g.to(n.dtype) / n
        z = F.linear(x, v)
        s = scale.to(z.dtype)
        y = torch.addcmul(bias, z, s) if bias is not None else z * s
        ctx.save_for_backward(x, v, g, n, z)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, v, g, n, z = ctx.saved_tensors
        acc = n.dtype
        scale = g.to(acc) / n
        grad_z = grad_y * scale.to(grad_y.dtype)
        grad_y2 = grad_y.reshape(-1, grad_y.shape[-1])
        # c_j = Σ_b ∂L/∂y_bj · z_bj is ∂L/∂(g_j/‖v_j‖); from it ∇g and the norm's share of ∇v follow.
        c = _slice_dot(grad_y2, z.reshape(-1, z.shape[-1]), 1, acc)
        grad_x = grad_v = grad_g = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_z.matmul(v)
        if ctx.needs_input_grad[1]:
            grad_v = grad_z.reshape(-1, grad_z.shape[-1]).t().mm(x.reshape(-1, x.shape[-1]))
            coef = (c * scale / (n * n)).to(v.dtype)
            grad_v.addcmul_(v, coef.unsqueeze(1), value=-1.0)
        if ctx.needs_input_grad[2]:
            grad_g = (c / n).to(g.dtype)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad_y2.sum(0)
        return grad_x, grad_v, grad_g, grad_b, None


def linear(x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None = None, eps: float = DEFAULT_EPS) -> Tensor:
    """A weight-normalized dense layer: y = x wᵀ + b with w = g·v/‖v‖ (eq. 1–2).

    ``v`` is (out, in) and ``g`` is (out,) (or (out, 1)). Two exact ways to compute it:

    - scaled, (g/‖v‖) ⊙ (x vᵀ) + b, never forming w: the forward reads v once more than a plain layer
      (the norms) and the backward adds one weight-sized correction pass plus activation-sized work.
      Used when the batch has no more rows than the layer has inputs and v has at least
      ``SCALED_LINEAR_MIN_NUMEL`` elements;
    - materialized, ``F.linear(x, weight_norm(v, g))``: PyTorch's fused op writes w, its fused backward
      reads ∇w and v once. Cheaper for tall batches (activation-sized work dominates), for small layers
      (per-op overhead dominates), and on the Triton path.
    """
    if v.ndim != 2:
        raise ValueError(f"linear expects v of shape (out, in), got {tuple(v.shape)}")
    check_inputs(v, g, 0)
    if x.shape[-1] != v.shape[1]:
        raise ValueError(
            f"input has {x.shape[-1]} features but v has shape {tuple(v.shape)} "
            f"(expected {v.shape[1]} input features)"
        )
    rows = x.numel() // max(x.shape[-1], 1)
    if _use_kernels(v) or rows > v.shape[1] or v.numel() < SCALED_LINEAR_MIN_NUMEL or x.dtype != v.dtype:
        return F.linear(x, _weight_norm(v, g, 0, eps), bias)
    return ScaledLinearFunction.apply(x, v, g.reshape(-1), bias, eps)
