"""Weight normalization in plain NumPy, written to be read next to the paper.

Salimans & Kingma (2016), "Weight Normalization: A Simple Reparameterization to Accelerate Training of
Deep Neural Networks", arXiv 1602.07868. This module is the test oracle for the PyTorch op
(:mod:`wnlib.functional`) and the code shown in the Theory chapter. It favours clarity over speed.

A weight tensor ``w`` is split into *slices* along the kept axis ``dim`` (one slice per output unit for a
dense layer); ``dim=None`` treats the whole tensor as one slice. Each slice is written as::

    w = g · v / ‖v‖                                   (eq. 2)

and the gradients with respect to the new parameters follow from the chain rule::

    ∇g L = ∇w L · v / ‖v‖                              (eq. 3)
    ∇v L = (g / ‖v‖) · ∇w L − (g ∇g L / ‖v‖²) · v       (eq. 3)
         = (g / ‖v‖) · M_w ∇w L,   M_w = I − w wᵀ / ‖w‖²   (eq. 4)

To stay finite at v = 0, ``‖v‖`` is clamped from below at ``eps`` (as ``torch.nn.functional.normalize``
does): a zero slice gives w = 0 and finite gradients, and every slice with ‖v‖ ≥ eps (default 1e-12)
gets exactly the paper's formulas.
"""

from __future__ import annotations

import numpy as np

from wnlib._defaults import DEFAULT_EPS

__all__ = [
    "DEFAULT_EPS",
    "grad_g",
    "grad_v",
    "grad_v_projection",
    "norm",
    "weight",
]


def _reduce_axes(ndim: int, dim: int | None) -> tuple[int, ...]:
    """Axes summed over for the norm: every axis except the kept one (all of them for dim=None)."""
    if dim is None:
        return tuple(range(ndim))
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim {dim} is out of range for an array with {ndim} dimensions")
    dim %= ndim
    return tuple(a for a in range(ndim) if a != dim)


def _per_slice(x: np.ndarray, shape: tuple[int, ...], dim: int | None) -> np.ndarray:
    """Reshape a per-slice vector (one value per slice) so it broadcasts against a weight of ``shape``."""
    if dim is None:
        return np.reshape(x, (1,) * len(shape))
    out = [1] * len(shape)
    out[dim % len(shape)] = shape[dim]
    return np.reshape(x, out)


def norm(v: np.ndarray, dim: int | None = 0, eps: float = DEFAULT_EPS) -> np.ndarray:
    """‖v‖ per slice, clamped below at ``eps``; shape (number of slices,), or () for dim=None.

    Example:
        >>> import numpy as np
        >>> from wnlib import reference
        >>> reference.norm(np.array([[3.0, 4.0], [0.0, 0.0]]))  # the zero slice is clamped at eps
        array([5.e+00, 1.e-12])
    """
    squares = np.sum(v * v, axis=_reduce_axes(v.ndim, dim))
    return np.maximum(np.sqrt(squares), eps)


def weight(v: np.ndarray, g: np.ndarray, dim: int | None = 0, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Eq. 2: w = g · v / ‖v‖, one g per slice along ``dim``.

    Example:
        >>> import numpy as np
        >>> from wnlib import reference
        >>> reference.weight(np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([10.0, 1.0]))
        array([[6., 8.],
               [0., 1.]])
    """
    scale = np.asarray(g) / norm(v, dim, eps)
    return _per_slice(scale, v.shape, dim) * v


def grad_g(grad_w: np.ndarray, v: np.ndarray, dim: int | None = 0, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Eq. 3 (left): ∇g L = ∇w L · v / ‖v‖, the gradient projected on the weight's direction.

    Example:
        >>> import numpy as np
        >>> from wnlib import reference
        >>> reference.grad_g(np.array([[1.0, 0.0]]), np.array([[3.0, 4.0]]))  # 1·3/5
        array([0.6])
    """
    return np.sum(grad_w * v, axis=_reduce_axes(v.ndim, dim)) / norm(v, dim, eps)


def grad_v(
    grad_w: np.ndarray,
    v: np.ndarray,
    g: np.ndarray,
    dim: int | None = 0,
    eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """Eq. 3 (right): ∇v L = (g/‖v‖) ∇w L − (g ∇g L / ‖v‖²) v.

    Example (∇v is orthogonal to v):
        >>> import numpy as np
        >>> from wnlib import reference
        >>> v = np.array([[3.0, 4.0]])
        >>> gv = reference.grad_v(np.array([[1.0, 0.0]]), v, np.array([2.0]))
        >>> gv.round(4), float(gv[0] @ v[0])
        (array([[ 0.256, -0.192]]), 0.0)
    """
    n = norm(v, dim, eps)
    g = np.asarray(g)
    scale = _per_slice(g / n, v.shape, dim)
    coef = _per_slice(g * grad_g(grad_w, v, dim, eps) / n**2, v.shape, dim)
    return scale * grad_w - coef * v


def grad_v_projection(grad_w: np.ndarray, v: np.ndarray, g: float, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Eq. 4 for a single weight vector: ∇v L = (g/‖v‖) M_w ∇w L with M_w = I − w wᵀ/‖w‖².

    Written with the explicit projection matrix, to show that it equals :func:`grad_v`: the gradient
    is scaled by g/‖v‖ and has its component along w removed, so it is orthogonal to v.

    Example:
        >>> import numpy as np
        >>> from wnlib import reference
        >>> v, grad_w = np.array([3.0, 4.0]), np.array([1.0, 0.0])
        >>> expected = reference.grad_v(grad_w, v, np.array(2.0), dim=None)
        >>> bool(np.allclose(reference.grad_v_projection(grad_w, v, 2.0), expected))
        True
    """
    if v.ndim != 1:
        raise ValueError(f"grad_v_projection takes one weight vector, got v with shape {v.shape}")
    w = weight(v, np.asarray(g), dim=None, eps=eps)
    projection = np.eye(v.size) - np.outer(w, w) / np.dot(w, w)
    return (g / norm(v, None, eps)) * projection @ grad_w
