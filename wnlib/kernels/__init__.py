"""Fused GPU kernels for weight normalization (Triton), loaded lazily.

The GPU path of :func:`wnlib.functional.weight_norm`: one kernel for the forward ``w = g·v/‖v‖``
(Salimans & Kingma 2016, eq. 2) that also returns the per-slice norms, and one for the backward
(eq. 3–4). Triton is an optional dependency (``pip install "wnlib[gpu]"``): importing this package never
imports it; :func:`available` says whether it can be, and the first kernel call loads
:mod:`wnlib.kernels.triton_wn`. On CPU tensors the kernels only run under Triton's interpreter
(``TRITON_INTERPRET=1`` set before they load), which is how the tests check them without a GPU.

The autograd Function around them is :class:`wnlib.functional.TritonWeightNorm`. Used by the
Implementation chapter; benchmarked by ``python -m wnlib.bench_gpu``.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from torch import Tensor

__all__ = [
    "available",
    "weight_norm_backward",
    "weight_norm_forward",
]


@functools.cache
def available() -> bool:
    """True if Triton can be imported (checked once, on first call)."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except Exception:  # ImportError, or a broken install raising something else at import
        return False
    return True


@functools.cache
def _impl() -> ModuleType:
    if not available():
        raise ImportError(
            "the fused weight-norm kernels need Triton, which is not importable here; "
            'install it with `pip install "wnlib[gpu]"` (Linux), or use the PyTorch path'
        )
    return importlib.import_module("wnlib.kernels.triton_wn")


def weight_norm_forward(v: Tensor, g: Tensor, dim: int | None, eps: float) -> tuple[Tensor, Tensor]:
    """Fused forward of eq. 2: return ``(w, norm)``.

    Args:
        v: direction, any shape; float16, bfloat16, float32 or float64.
        g: gains, one per slice (``v.shape[dim]`` elements, or 1 when ``dim`` is None), any shape,
            same dtype as ``v``.
        dim: the kept axis (one norm per index along it), or None for one norm over the whole tensor.
        eps: lower bound on each norm, so a zero slice gives ``w = 0`` and finite gradients.

    Returns:
        ``w = g_s · v / norm_s`` (contiguous, ``v``'s shape and dtype) and ``norm`` of shape ``(S,)``,
        ``norm_s = max(sqrt(Σ_k v_sk²), eps)``, in float32 for float16/bfloat16 ``v``, else ``v.dtype``.
    """
    return _impl().forward(v, g, dim, eps)


def weight_norm_backward(
    grad_w: Tensor, v: Tensor, g: Tensor, norm: Tensor, dim: int | None, eps: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Fused backward of eq. 3–4: return ``(grad_v, grad_g)``.

    ``grad_g_s = Σ_k grad_w_sk · v_sk / norm_s`` (eq. 3) and
    ``grad_v = (g_s/norm_s)·grad_w − (g_s·grad_g_s/norm_s²)·v`` (eq. 4, ``= (g/‖v‖) M_w ∇w``), with
    ``norm`` as returned by :func:`weight_norm_forward`. ``grad_v`` is shaped like ``v``, ``grad_g``
    like ``g``, in their dtypes. Pass the forward's ``eps``: slices whose norm was clamped at it have a
    norm that does not depend on v, so their ``grad_v`` drops the second term.
    """
    return _impl().backward(grad_w, v, g, norm, dim, eps=eps)
