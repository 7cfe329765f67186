"""``torch.autograd.Function`` around the fused weight-norm kernels (eq. 2 forward, eq. 3–4 backward).

Kept apart from the kernels so that it imports without Triton; the kernels load on first use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["TritonWeightNorm", "triton_weight_norm"]


class TritonWeightNorm(torch.autograd.Function):
    """``w = g · v / max(‖v‖, eps)`` per slice along ``dim`` with the fused Triton kernels.

    ``TritonWeightNorm.apply(v, g, dim, eps) -> w``. The forward saves ``v``, ``g`` and the per-slice
    norms; the backward is one fused kernel for eq. 3–4. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx: Any, v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
        from wnlib.kernels import weight_norm_forward

        w, norm = weight_norm_forward(v, g, dim, eps)
        ctx.save_for_backward(v, g, norm)
        ctx.dim, ctx.eps = dim, eps
        return w

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_w: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        from wnlib.kernels import weight_norm_backward

        v, g, norm = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None, None
        grad_v, grad_g = weight_norm_backward(grad_w, v, g, norm, ctx.dim, ctx.eps)
        return (
            grad_v if ctx.needs_input_grad[0] else None,
            grad_g if ctx.needs_input_grad[1] else None,
            None,
            None,
        )


def triton_weight_norm(v: Tensor, g: Tensor, dim: int | None = 0, eps: float = 1e-12) -> Tensor:
    """Differentiable ``w = g · v / ‖v‖`` (eq. 2) through the fused kernels; see TritonWeightNorm."""
    return TritonWeightNorm.apply(v, g, dim, eps)
