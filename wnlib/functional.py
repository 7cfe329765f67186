"""The weight-norm op for PyTorch: w = g · v / ‖v‖ with the paper's analytic backward.

Used by every layer in :mod:`wnlib.nn` and by :func:`wnlib.weight_norm`; the Implementation chapter
walks through it. Two entry points:

- :func:`weight_norm` materializes w (any tensor shape, any kept axis ``dim``, any memory layout);
- :func:`linear` computes a weight-normalized dense layer without materializing w, as
  y = (g/‖v‖) ⊙ (x vᵀ) + b, which is exact because the layer is linear in its weight.

**One function, every mode.** Both compute exactly the naive formula w = g·v/max(‖v‖, eps), per slice
along ``dim``, and give its derivatives in every way a user can ask for them:

- eager ``.backward()`` / ``autograd.grad``: an ``autograd.Function`` whose backward is eq. 3–4 written
  by hand (it saves v, g and the per-slice norms, never w);
- ``create_graph=True`` (double backward, gradient penalties, Hessian-vector products, MAML): the same
  backward, computed from differentiable ops that recompute the norm from v, so the gradient is itself
  differentiable in v, g and ∇w;
- forward mode (``torch.autograd.forward_ad``): the Function's ``jvp``;
- ``torch.func`` transforms, ``torch.compile``, ``torch.export`` and ``torch.jit.trace``: the composite
  formula in plain tensor ops, which those systems differentiate, batch and fuse themselves.

No path branches on tensor values on the host, so nothing breaks a graph. Norms (and the backward's
reductions) are accumulated in float32 for float16 and bfloat16 inputs; where g is exactly the norm as
v's dtype rounds it, that rounded value is the norm, so wrapping a layer (g = ‖w‖, v = w) leaves w bit
for bit. On CUDA tensors
:func:`weight_norm` runs the fused Triton kernels of :mod:`wnlib.kernels` when Triton is importable;
:func:`use_backend` forces either path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wnlib._defaults import DEFAULT_EPS

__all__ = [
    "DEFAULT_EPS",
    "SCALED_LINEAR_MIN_NUMEL",
    "Backend",
    "ScaledLinearFunction",
    "TritonWeightNorm",
    "WeightNormFunction",
    "canonical_dim",
    "check_eps",
    "get_backend",
    "linear",
    "set_backend",
    "slice_norm",
    "slice_shape",
    "use_backend",
    "weight_norm",
    "weight_norm_backward",
]

#: The backends :func:`~wnlib.functional.set_backend` accepts: ``"auto"`` (Triton kernels on CUDA when
#: available, PyTorch ops otherwise), ``"torch"`` or ``"triton"``.
Backend = Literal["auto", "torch", "triton"]
_BACKENDS = ("auto", "torch", "triton")
_backend: Backend = "auto"
_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: Below this many weights, per-op overhead dominates and materializing w wins (measured by
#: ``python -m wnlib.bench``; see the Implementation chapter).
SCALED_LINEAR_MIN_NUMEL = 2**18


# --------------------------------------------------------------------------------------------------
# Checks and shapes
# --------------------------------------------------------------------------------------------------


def canonical_dim(v: Tensor, dim: int | None) -> int | None:
    """``dim`` as an index in [0, v.ndim), or None; a clear error when it is out of range."""
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, int):
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


def _num_slices(v: Tensor, dim: int | None) -> int:
    """How many norms (and g values) v has: its size along the kept axis, or 1 for dim=None."""
    return 1 if dim is None else v.shape[dim]


def slice_shape(v: Tensor, dim: int | None) -> list[int]:
    """Shape that makes a per-slice vector broadcast against v (size S along ``dim``, 1 elsewhere)."""
    shape = [1] * v.ndim
    if dim is not None:
        shape[dim] = v.shape[dim]
    return shape


def _check_inputs(v: Tensor, g: Tensor, dim: int | None) -> None:
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
    n = _num_slices(v, dim)
    keepdim = tuple(slice_shape(v, dim))
    if g.numel() != n or (g.ndim > 1 and tuple(g.shape) != keepdim):
        where = "as one slice (dim=None)" if dim is None else f"along dim {dim}"
        raise ValueError(
            f"g has shape {tuple(g.shape)} but v (shape {tuple(v.shape)}) has {n} slice(s) {where}: "
            f"expected g of shape ({n},) or {keepdim}"
        )


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 (norms and dot products lose too much otherwise), else dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _reduced_dims(v: Tensor, dim: int) -> list[int]:
    """The axes a slice spans: all but ``dim`` (empty for a 1-d v, whose slices are single entries)."""
    return [d for d in range(v.ndim) if d != dim]


def slice_norm(v: Tensor, dim: int | None, eps: float = DEFAULT_EPS) -> Tensor:
    """max(‖v‖, eps) per slice, shape (S,), in the accumulation dtype; differentiable in v.

    The clamp (the convention of ``torch.nn.functional.normalize``) keeps a zero slice finite: its w is 0
    and its gradients are finite (∇g = 0, ∇v = (g/eps)·∇w). Any slice with ‖v‖ ≥ eps is untouched.

    Example:
        >>> import torch
        >>> from wnlib.functional import slice_norm
        >>> slice_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), 0)
        tensor([5.0000e+00, 1.0000e-12])
        >>> slice_norm(torch.ones(2, 3, dtype=torch.float16), 1).dtype  # accumulated in float32
        torch.float32
    """
    acc = _accumulation_dtype(v.dtype)
    if dim is None:
        n = torch.linalg.vector_norm(v, dtype=acc).reshape(1)
    elif v.ndim == 1:
        n = v.abs().to(acc)
    elif dim == 0 and v.is_contiguous():
        n = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1, dtype=acc)
    else:  # a strided vector_norm is several times slower on CPU than these sums
        v = v.to(acc)
        n = _safe_sqrt(_per_slice_sum(v * v, dim))
    return n.clamp_min(eps)


def _safe_sqrt(s: Tensor) -> Tensor:
    """√s for s ≥ 0, with derivative 0 (not ∞·0 = NaN) where s = 0, as vector_norm's at a zero vector."""
    positive = s > 0
    return torch.where(positive, torch.where(positive, s, 1.0).sqrt(), 0.0)


def _per_slice_sum(t: Tensor, dim: int) -> Tensor:
    """Σ of t over every axis but ``dim``, shape (S,); differentiable.

    A contiguous t is summed as a (leading, S·trailing) matrix over its rows first, which is vectorized
    along memory, then over the trailing axes; a strided reduction over the leading axes (what
    ``t.sum(dims)`` does for a middle or last ``dim``) is several times slower on CPU.
    """
    if not t.is_contiguous():
        return t.sum(_reduced_dims(t, dim))
    size = t.shape[dim]
    leading = math.prod(t.shape[:dim])
    if leading > 1:
        t = t.reshape(leading, -1).sum(0)
    return t.reshape(size, -1).sum(1) if t.numel() > size else t.reshape(size)


def _slice_dot(a: Tensor, b: Tensor, dim: int | None, acc: torch.dtype) -> Tensor:
    """Σ a·b per slice, shape (S,), accumulated in ``acc`` (no weight-sized temporary where possible)."""
    if a.dtype != acc or b.dtype != acc:
        a, b = a.to(acc), b.to(acc)
    if dim is None:
        return (a * b).sum().reshape(1) if a.ndim == 0 else torch.dot(a.reshape(-1), b.reshape(-1)).reshape(1)
    if a.ndim == 1:
        return a * b
    if dim == 0 and a.is_contiguous() and b.is_contiguous():
        s = a.shape[0]
        return torch.linalg.vecdot(a.reshape(s, -1), b.reshape(s, -1))
    return _per_slice_sum(a * b, dim)


def _snap_to_gain(n: Tensor, g: Tensor, dtype: torch.dtype) -> Tensor:
    """The float32 norms n, except where g is exactly n rounded to ``dtype``: there that rounded value.

    g = ‖v‖ cannot be stored exactly in float16/bfloat16, so wrapping a layer (g = ‖w‖ rounded, v = w)
    would give g/‖v‖ = 1 ± 2⁻⁹ and move some entries of w by one unit. Where g is the rounded norm the op
    takes that number as the norm (a change below the dtype's resolution), so g/‖v‖ = 1 and w = v bit
    for bit. The rounding is straight-through: derivatives are those of the exact norm.
    """
    rounded = n.to(dtype)
    snapped = n + (rounded.to(n.dtype) - n).detach()
    return torch.where(rounded == g, snapped, n)


def _scaled(v: Tensor, g: Tensor, n: Tensor, dim: int | None) -> Tensor:
    """w = (g/n)·v per slice (eq. 2), computed in n's dtype and returned in v's."""
    g = g.reshape(-1)
    if v.dtype in _LOW_PRECISION:
        n = _snap_to_gain(n, g, v.dtype)
    scale = (g.to(n.dtype) / n).reshape(slice_shape(v, dim))
    return (v * scale).to(v.dtype)


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
        raise RuntimeError(
            'backend "triton" needs Triton, which is not importable here: pip install "wnlib[gpu]"'
        )
    _backend = name


def get_backend() -> Backend:
    """The backend set by :func:`~wnlib.functional.set_backend` (``"auto"`` unless changed)."""
    return _backend


@contextlib.contextmanager
def use_backend(name: Backend) -> Iterator[None]:
    """Context manager form of :func:`~wnlib.functional.set_backend`; restores the previous backend on exit.

    Example:
        >>> import torch
        >>> from wnlib.functional import get_backend, use_backend, weight_norm
        >>> with use_backend("torch"):  # PyTorch ops even on CUDA tensors
        ...     w = weight_norm(torch.ones(2, 3), torch.ones(2))
        >>> get_backend()
        'auto'
    """
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


def _composite_mode(v: Tensor) -> bool:
    """Whether a tracing or transforming system is running, which differentiates plain ops itself.

    ``torch.func`` transforms (grad, vmap, jacrev, jvp), ``torch.compile`` and ``torch.export``
    (dynamo), ``torch.jit.trace``, and tensor subclasses all get the composite formula: they batch,
    fuse and differentiate it themselves, to any order, with no Python ``autograd.Function`` in the way.
    """
    return (
        (type(v) is not Tensor and type(v) is not torch.nn.Parameter)
        or torch._C._are_functorch_transforms_active()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
    )


# --------------------------------------------------------------------------------------------------
# Eq. 3–4: the backward, fast and differentiable
# --------------------------------------------------------------------------------------------------


def _backward_fast(
    grad_w: Tensor, v: Tensor, g: Tensor, n: Tensor, dim: int | None, eps: float
) -> tuple[Tensor, Tensor]:
    """Eq. 3–4 from the saved norms, in as few passes over memory as PyTorch ops allow.

    Accumulated in n's dtype (float32 for float16/bfloat16). Slices whose norm was clamped (n ≤ eps)
    get no projection term: there the norm is constant in v. Not differentiable (n is a constant here).
    """
    acc = n.dtype
    grad_g = _slice_dot(grad_w, v, dim, acc) / n  # eq. 3: ∇g = ∇w·v/‖v‖
    # eq. 3–4: ∇v = (g/‖v‖)∇w − (g∇g/‖v‖²)v, the part of ∇w orthogonal to w, scaled by g/‖v‖
    shape = slice_shape(v, dim)
    scale = g.reshape(-1).to(acc) / n
    coef = (scale * grad_g / n * (n > eps)).reshape(shape)
    grad_v = grad_w.to(acc) * scale.reshape(shape)
    grad_v.addcmul_(v.to(acc), coef, value=-1.0)
    return grad_v.to(v.dtype), grad_g.to(g.dtype)


def weight_norm_backward(
    grad_w: Tensor, v: Tensor, g: Tensor, dim: int | None, eps: float = DEFAULT_EPS
) -> tuple[Tensor, Tensor]:
    """(∇v, ∇g) of w = g·v/max(‖v‖, eps) (eq. 3–4), as a differentiable function of ∇w, v and g.

    ∇g = ∇w·v/‖v‖ and ∇v = (g/‖v‖)·∇w − (g·∇g/‖v‖²)·v per slice (no second term where the norm is
    clamped). The norm is recomputed from v here, so autograd through this function gives the exact
    second derivatives: it is what the op's backward runs under ``create_graph=True``. ``∇g`` has g's
    shape, ``∇v`` v's shape; both in their dtypes (accumulated in float32 for float16/bfloat16).

    Example:
        >>> v = torch.tensor([[3.0, 4.0]]); g = torch.tensor([2.0])
        >>> grad_v, grad_g = weight_norm_backward(torch.tensor([[1.0, 0.0]]), v, g, 0)
        >>> grad_g, grad_v @ v[0]  # ∇g = ∇w·v/‖v‖ = 3/5, and ∇v ⟂ v
        (tensor([0.6000]), tensor([0.]))
    """
    n = slice_norm(v, dim, eps)
    acc = n.dtype
    grad_g = _slice_dot(grad_w, v, dim, acc) / n
    scale = g.reshape(-1).to(acc) / n
    coef = scale * grad_g / n * (n > eps)
    shape = slice_shape(v, dim)
    grad_v = grad_w.to(acc) * scale.reshape(shape) - v.to(acc) * coef.reshape(shape)
    return grad_v.to(v.dtype), grad_g.to(g.dtype).reshape(g.shape)


def _backward(
    ctx: Any, grad_w: Tensor | None, v: Tensor, g: Tensor, n: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """The fast backward, or under ``create_graph=True`` (grad mode on inside backward) the
    differentiable one, so that second derivatives are exact. No gradient in, none out."""
    if grad_w is None:
        return None, None
    if torch.is_grad_enabled():
        return weight_norm_backward(grad_w, v, g, ctx.dim, ctx.eps)
    if ctx.use_kernels:
        return _kernels().weight_norm_backward(grad_w, v, g, n, ctx.dim, ctx.eps)
    grad_v, grad_g = _backward_fast(grad_w, v, g, n, ctx.dim, ctx.eps)
    return grad_v, grad_g.reshape(g.shape)


def _jvp(v: Tensor, g: Tensor, n: Tensor, dim: int | None, eps: float, dv: Tensor | None, dg: Tensor | None):
    """Forward-mode derivative of eq. 2: dw = (dg/n)·v + (g/n)·dv − (g/n²)·dn·v with dn = v·dv/n
    (0 where the norm is clamped)."""
    acc = n.dtype
    shape = slice_shape(v, dim)
    dw = torch.zeros(v.shape, dtype=acc, device=v.device)
    if dg is not None:
        dw = dw + v.to(acc) * (dg.reshape(-1).to(acc) / n).reshape(shape)
    if dv is not None:
        scale = g.reshape(-1).to(acc) / n
        dn = _slice_dot(v, dv, dim, acc) / n * (n > eps)
        dw = dw + dv.to(acc) * scale.reshape(shape) - v.to(acc) * (scale * dn / n).reshape(shape)
    return dw.to(v.dtype)


# --------------------------------------------------------------------------------------------------
# The op
# --------------------------------------------------------------------------------------------------


class WeightNormFunction(torch.autograd.Function):
    """w = g·v/max(‖v‖, eps) (eq. 2) with the backward of eq. 3–4, in PyTorch ops.

    ``WeightNormFunction.apply(v, g, dim, eps) -> (w, n)`` with the per-slice norms n (not
    differentiable). Saves v, g and n, not w. The backward is exact to any order (see
    :func:`weight_norm_backward`); ``jvp`` gives forward mode; ``torch.func.vmap`` gets a generated rule.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(v: Tensor, g: Tensor, dim: int | None, eps: float) -> tuple[Tensor, Tensor]:
        n = slice_norm(v, dim, eps)
        return _scaled(v, g, n, dim), n

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        v, g, dim, eps = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros for the norms' (unused) gradient
        ctx.save_for_backward(v, g, output[1])
        ctx.save_for_forward(v, g, output[1])
        ctx.dim, ctx.eps, ctx.use_kernels = dim, eps, False

    @staticmethod
    def backward(ctx: Any, grad_w: Tensor, _grad_n: Tensor | None) -> tuple[Tensor, Tensor, None, None]:
        return (*_backward(ctx, grad_w, *ctx.saved_tensors), None, None)

    @staticmethod
    def jvp(ctx: Any, dv: Tensor | None, dg: Tensor | None, _dim: Any, _eps: Any) -> tuple[Tensor, None]:
        v, g, n = ctx.saved_tensors
        return _jvp(v, g, n, ctx.dim, ctx.eps, dv, dg), None


class _EagerWeightNorm(torch.autograd.Function):
    """:class:`WeightNormFunction` in the ``forward(ctx, ...)`` style, which the op calls in eager mode.

    The same results, backward and jvp, without the per-call cost of ``setup_context``-style Functions,
    which bind their arguments with ``inspect.signature`` on every call (the transforms that need
    ``setup_context`` take the composite formula). Used for every eager case that PyTorch's fused CPU
    kernel (:func:`_fused`) does not cover: CUDA without Triton, float16/bfloat16, a middle axis,
    ``dim=None``, non-contiguous v, a norm below eps, forward-mode AD.
    """

    @staticmethod
    def forward(ctx: Any, v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
        ctx.dim, ctx.eps, ctx.use_kernels = dim, eps, False
        n = slice_norm(v, dim, eps)
        ctx.save_for_backward(v, g, n)
        ctx.save_for_forward(v, g, n)
        return _scaled(v, g, n, dim)

    @staticmethod
    def backward(ctx: Any, grad_w: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        return (*_backward(ctx, grad_w, *ctx.saved_tensors), None, None)

    @staticmethod
    def jvp(ctx: Any, dv: Tensor | None, dg: Tensor | None, _dim: Any, _eps: Any) -> Tensor:
        v, g, n = ctx.saved_tensors
        return _jvp(v, g, n, ctx.dim, ctx.eps, dv, dg)


class _ExactSecondOrder:
    """A hook on PyTorch's own autograd node of ``_weight_norm_interface`` that makes it exact to any
    order: under ``create_graph=True`` it replaces the node's gradients (right in value, but whose own
    derivative ignores that the norms depend on v) by :func:`weight_norm_backward`'s, which are
    differentiable in v, g and ∇w. In a plain backward it returns None and costs one Python call."""

    __slots__ = ("dim", "eps", "g", "v")

    def __init__(self, v: Tensor, g: Tensor, dim: int, eps: float) -> None:
        self.v, self.g, self.dim, self.eps = v, g, dim, eps

    def __call__(self, grad_inputs: tuple, grad_outputs: tuple) -> tuple | None:
        if not torch.is_grad_enabled() or grad_outputs[0] is None:
            return None
        grad_v, grad_g = weight_norm_backward(grad_outputs[0], self.v, self.g, self.dim, self.eps)
        return (
            grad_v if grad_inputs[0] is not None else None,
            grad_g if grad_inputs[1] is not None else None,
        )


def _fused(v: Tensor, g: Tensor, dim: int, eps: float) -> Tensor | None:
    """w from PyTorch's fused CPU kernel and autograd node (C++: one pass forward, one backward), made
    exact in second order by :class:`_ExactSecondOrder`; None if a norm is below eps (the kernel has no
    clamp: the caller then computes w another way). On CPU, reading that one number costs no sync.

    This is the hot path of every small eager layer, so it does only what it must: one view of g, the
    kernel, the eps check (n does not require grad, so ``min`` records nothing) and the hook.
    """
    if g.ndim != v.ndim:
        g = g.view(slice_shape(v, dim))
    w, n = torch._weight_norm_interface(v, g, dim)
    if n.min().item() < eps:
        return None
    node = w.grad_fn
    if node is not None:
        node.register_hook(_ExactSecondOrder(v, g, dim, eps))
    return w


def _identity_gain(v: Tensor, dim: int | None, eps: float = DEFAULT_EPS) -> Tensor:
    """The g for which ``weight_norm(v, g, dim, eps)`` returns v bit for bit (in eager mode).

    That is ‖v‖ per slice as the op itself computes it, in v's dtype: shape (S,), or () for
    ``dim=None``. :func:`wnlib.weight_norm` uses it when it wraps a layer (v = w, g = ‖w‖), so wrapping
    leaves w exactly unchanged in every dtype and dim.

    Example:
        >>> v = torch.randn(4, 3)
        >>> torch.equal(weight_norm(v, _identity_gain(v, 0)), v)
        True
    """
    dim = canonical_dim(v, dim)
    with torch.no_grad():
        if _aten_applies(v, dim):
            n = torch._weight_norm_interface(v, torch.ones(slice_shape(v, dim), dtype=v.dtype), dim)[1]
            if n.amin().item() >= eps:
                return n.reshape(-1)
        g = slice_norm(v, dim, eps).to(v.dtype)
    return g.reshape(()) if dim is None else g


def _aten_applies(v: Tensor, dim: int | None) -> bool:
    """Whether PyTorch's fused CPU kernels for eq. 2 and eq. 3–4 (``_weight_norm_interface`` and its
    backward) can compute this case: float32/float64, contiguous v, the first or last axis of a tensor
    of 2 or more dimensions. They have no eps (the callers check that no norm is below it), and their
    own autograd formula is not used (its double backward is wrong): only the kernels run."""
    return (
        v.is_cpu
        and (v.dtype is torch.float32 or v.dtype is torch.float64)
        and dim is not None
        and v.ndim > 1
        and (dim == 0 or dim == v.ndim - 1)
        and v.is_contiguous()
    )


class TritonWeightNorm(torch.autograd.Function):
    """:class:`WeightNormFunction` with the fused Triton kernels of :mod:`wnlib.kernels` (CUDA).

    The plain backward is one fused kernel for eq. 3–4; under ``create_graph=True`` it runs
    :func:`weight_norm_backward` in PyTorch ops, so second derivatives are exact here too.
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(v: Tensor, g: Tensor, dim: int | None, eps: float) -> tuple[Tensor, Tensor]:
        return _kernels().weight_norm_forward(v, g, dim, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        WeightNormFunction.setup_context(ctx, inputs, output)
        ctx.use_kernels = True

    backward = WeightNormFunction.backward
    jvp = WeightNormFunction.jvp


def weight_norm(v: Tensor, g: Tensor, dim: int | None = 0, eps: float = DEFAULT_EPS) -> Tensor:
    """w = g · v / ‖v‖  (Salimans & Kingma 2016, eq. 2).

    Args:
        v: the direction parameter, any shape and memory layout, floating point.
        g: the scale, one value per slice: shape (S,) or torch's keep-dim shape (S along ``dim``, 1
            elsewhere); a single element for ``dim=None``.
        dim: the kept axis, one norm per index along it (0 for Linear/Conv weights, 1 for
            ConvTranspose weights, which are laid out (in, out, ...)); negative values count from the
            end; ``None`` normalizes the whole tensor as one vector.
        eps: lower bound on ‖v‖ (as in ``torch.nn.functional.normalize``), so a zero slice gives w = 0 and
            finite gradients; slices with ‖v‖ ≥ eps are exactly eq. 2.

    Returns:
        w, with v's shape and dtype. Along every slice ‖w‖ = ``|g|`` (up to eps).

    The backward is eq. 3–4: ∇g = ∇w·v/‖v‖ and ∇v = (g/‖v‖)·(∇w − (∇g/‖v‖)·v), so ∇v ⟂ v. It is the
    derivative of the naive formula in every autograd mode (see the module docstring).

    Example:
        >>> v = torch.tensor([[3.0, 4.0], [0.0, 2.0]]); g = torch.tensor([10.0, 1.0])
        >>> weight_norm(v, g)
        tensor([[6., 8.],
                [0., 1.]])
    """
    dim = canonical_dim(v, dim)
    _check_inputs(v, g, dim)
    return _weight_norm(v, g, dim, check_eps(eps))


def _weight_norm(v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
    """:func:`weight_norm` on checked inputs: the composite formula, the Triton kernels or our Function."""
    if _composite_mode(v):
        return _scaled(v, g, slice_norm(v, dim, eps), dim)
    if _use_kernels(v):
        return TritonWeightNorm.apply(v, g, dim, eps)[0]
    if _aten_applies(v, dim) and torch.autograd.forward_ad._current_level < 0:
        w = _fused(v, g, dim, eps)
        if w is not None:
            return w
    return _EagerWeightNorm.apply(v, g, dim, eps)


# --------------------------------------------------------------------------------------------------
# A dense layer without w
# --------------------------------------------------------------------------------------------------


class ScaledLinearFunction(torch.autograd.Function):
    """y = (g/‖v‖) ⊙ (x vᵀ) + b: a weight-normalized dense layer that never materializes w.

    ``ScaledLinearFunction.apply(x, v, g, bias, eps) -> (y, z, n)`` with z = x vᵀ and the norms n (not
    differentiable).
    Forward reads v once more than a plain layer (for the norms); backward adds one weight-sized
    correction, −(c g/‖v‖³)·v with c = Σ_batch ∂L/∂y ⊙ z, which is eq. 4's projection. Under
    ``create_graph=True`` the backward is the materialized layer's, in differentiable ops.
    """

    @staticmethod
    def forward(
        x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None, eps: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        n = slice_norm(v, 0, eps)
        z = F.linear(x, v)
        s = (g.reshape(-1).to(n.dtype) / n).to(z.dtype)
        return (torch.addcmul(bias, z, s) if bias is not None else z * s), z, n

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        x, v, g, bias, eps = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, v, g, bias, output[1], output[2])
        ctx.eps = eps

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor, _grad_z: Tensor | None, _grad_n: Tensor | None):
        x, v, g, bias, z, n = ctx.saved_tensors
        if grad_y is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():
            grads = _scaled_linear_backward_differentiable(grad_y, x, v, g, bias, ctx.eps)
        else:
            grads = _scaled_linear_backward_fast(ctx, grad_y, x, v, g, z, n, bias is not None)
        return (*grads, None)


def _scaled_linear_backward_fast(
    ctx: Any, grad_y: Tensor, x: Tensor, v: Tensor, g: Tensor, z: Tensor, n: Tensor, has_bias: bool
) -> tuple[Tensor | None, ...]:
    """∇x = (grad_y ⊙ s) v, ∇v = (grad_y ⊙ s)ᵀ x − (c s/‖v‖²) v, ∇g = c/‖v‖, with s = g/‖v‖ and
    c = Σ_batch grad_y ⊙ z (eq. 3–4 with ∇w = grad_yᵀ x, never formed)."""
    acc = n.dtype
    scale = g.reshape(-1).to(acc) / n
    x2 = x.reshape(-1, x.shape[-1])
    grad_y2 = grad_y.reshape(-1, grad_y.shape[-1])
    grad_z = grad_y2 * scale.to(grad_y.dtype)
    grad_x = grad_v = grad_g = grad_b = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        c = _slice_dot(grad_y2, z.reshape(-1, z.shape[-1]), 1, acc)  # c_j = ∂L/∂(g_j/‖v_j‖)
        if ctx.needs_input_grad[1]:
            grad_v = grad_z.t().mm(x2)
            coef = (c * scale / (n * n) * (n > ctx.eps)).to(v.dtype)
            grad_v.addcmul_(v, coef.unsqueeze(1), value=-1.0)
        if ctx.needs_input_grad[2]:
            grad_g = (c / n).to(g.dtype).reshape(g.shape)
    if ctx.needs_input_grad[0]:
        grad_x = grad_z.matmul(v).reshape(x.shape)
    if has_bias and ctx.needs_input_grad[3]:
        grad_b = grad_y2.sum(0)
    return grad_x, grad_v, grad_g, grad_b


def _scaled_linear_backward_differentiable(
    grad_y: Tensor, x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None, eps: float
) -> tuple[Tensor | None, ...]:
    """The layer's gradients as differentiable functions of its inputs (for ``create_graph=True``)."""
    w = _scaled(v, g, slice_norm(v, 0, eps), 0)
    grad_y2 = grad_y.reshape(-1, grad_y.shape[-1])
    grad_w = grad_y2.t().mm(x.reshape(-1, x.shape[-1]))
    grad_v, grad_g = weight_norm_backward(grad_w, v, g, 0, eps)
    grad_b = grad_y2.sum(0) if bias is not None else None
    return grad_y.matmul(w), grad_v, grad_g, grad_b


def _check_linear_input(x: object, v: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"linear expects the input x as a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"linear expects an input with a feature axis of size {v.shape[1]}, got 0-d")
    if x.shape[-1] != v.shape[1]:
        raise ValueError(
            f"input has {x.shape[-1]} features but v has shape {tuple(v.shape)} "
            f"(expected {v.shape[1]} input features)"
        )


def linear(x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None = None, eps: float = DEFAULT_EPS) -> Tensor:
    """A weight-normalized dense layer: y = x wᵀ + b with w = g·v/‖v‖ (eq. 1–2).

    ``v`` is (out, in) and ``g`` is (out,) (or (out, 1)). Two exact ways to compute it:

    - scaled, (g/‖v‖) ⊙ (x vᵀ) + b, never forming w: the forward reads v once more than a plain layer
      (the norms) and the backward adds one weight-sized correction pass plus activation-sized work.
      Used in float32/float64 when the batch has no more rows than the layer has inputs and v has at
      least ``SCALED_LINEAR_MIN_NUMEL`` elements (in float16/bfloat16 x vᵀ could overflow before the
      scaling brings it back into range, so those always materialize w);
    - materialized, ``F.linear(x, weight_norm(v, g))``: cheaper for tall batches (activation-sized work
      dominates), for small layers (per-op overhead dominates), and on the Triton path.

    Example:
        >>> v = torch.tensor([[3.0, 4.0]]); g = torch.tensor([5.0])
        >>> linear(torch.tensor([[1.0, 1.0]]), v, g)  # w = v here, since g = ‖v‖
        tensor([[7.]])
    """
    if not isinstance(v, Tensor) or v.ndim != 2:
        raise ValueError(f"linear expects v of shape (out, in), got {getattr(v, 'shape', type(v).__name__)}")
    _check_inputs(v, g, 0)
    _check_linear_input(x, v)
    return _linear(x, v, g, bias, check_eps(eps))


def _linear(x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """:func:`linear` on checked inputs (the layers call this): picks the scaled or materialized form."""
    if (
        v.numel() < SCALED_LINEAR_MIN_NUMEL
        or x.numel() > v.shape[1] * x.shape[-1]  # more rows than input features
        or x.dtype != v.dtype
        or v.dtype in _LOW_PRECISION
        or _composite_mode(v)
        or _use_kernels(v)
    ):
        return F.linear(x, _weight_norm(v, g, 0, eps), bias)
    return ScaledLinearFunction.apply(x, v, g, bias, eps)[0]
