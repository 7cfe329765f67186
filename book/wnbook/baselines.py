"""Weight normalizations that came after weight norm and that wnlib does not implement, for comparison.

Weights are (out, in) matrices (a convolution's weight is flattened to (out, in·k·k)); "row" means one
output unit. Weight normalization itself (eq. 2 of Salimans & Kingma 2016, w = g·v/‖v‖) and the
zero-centering of a slice always come from wnlib (:func:`wnlib.functional.weight_norm`,
:func:`wnlib.variants.zero_center`):

- :func:`centered_weight_norm` (Huang et al. 2017): eq. 2 on the rows after subtracting each row's mean;
- :func:`weight_standardization` (Qiao et al. 2019): each row to mean 0 and standard deviation 1, which
  is centered weight norm with g = √fan_in;
- :func:`spectral_norm` (Miyato et al. 2018): the whole matrix divided by its largest singular value,
  estimated in training by :func:`power_iteration`;
- :func:`row_norms` and :func:`singular_values`: what each of them fixes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wnlib.functional import weight_norm
from wnlib.variants import zero_center

__all__ = [
    "centered_weight_norm",
    "power_iteration",
    "row_norms",
    "singular_values",
    "spectral_norm",
    "weight_standardization",
]


def _rows(w: Tensor) -> Tensor:
    """The weight as an (out, fan_in) matrix: one row per output unit."""
    if w.ndim < 2:
        raise ValueError(f"expected a weight with an output axis and inputs, got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0], -1)


def row_norms(w: Tensor) -> Tensor:
    """‖w_i‖ for every output unit i (the quantity weight norm fixes to g_i)."""
    return torch.linalg.vector_norm(_rows(w), dim=1)


def singular_values(w: Tensor) -> Tensor:
    """The singular values of the (out, fan_in) weight matrix, largest first."""
    return torch.linalg.svdvals(_rows(w))


def centered_weight_norm(v: Tensor, g: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """w = g · (v − v̄)/‖v − v̄‖ per output unit, v̄ the mean of the row (Huang et al. 2017).

    Centered weight normalization is weight normalization (eq. 2) applied to the centered rows, so it
    is computed with wnlib's ops (:func:`wnlib.variants.zero_center`, then
    :func:`wnlib.functional.weight_norm`): every row of w has mean 0 and norm g. A unit's pre-activation
    w·x then ignores any shift of its input that is the same in every feature (x + c·1). ``g=None``
    means g = 1 for every row.
    """
    rows = _rows(v)
    if g is None:
        g = torch.ones(rows.shape[0], dtype=v.dtype, device=v.device)
    return weight_norm(zero_center(rows, 0), g, dim=0, eps=eps).reshape(v.shape)


def weight_standardization(v: Tensor, eps: float = 0.0) -> Tensor:
    """ŵ = (v − μ)/σ per output unit, μ and σ the mean and standard deviation of the row
    (Qiao et al. 2019, with σ² = (1/n) Σ (v − μ)² + eps over the row's n = fan_in entries).

    Because σ = ‖v − μ‖/√n, weight standardization equals centered weight normalization with
    g = √n (exactly, for eps = 0): the same direction, with a fixed length √fan_in instead of a
    learned g.
    """
    centered = zero_center(_rows(v), 0)
    sigma = (centered.square().mean(dim=1, keepdim=True) + eps).sqrt()
    return (centered / sigma).reshape(v.shape)


def spectral_norm(w: Tensor) -> Tensor:
    """W / σ_max(W): the weight divided by its largest singular value (Miyato et al. 2018).

    σ_max is computed exactly here (``torch.linalg.matrix_norm(ord=2)`` of the (out, fan_in) matrix);
    in training, Miyato et al. estimate it with one step of :func:`power_iteration` per update,
    reusing the vector from the previous step. After it the layer stretches no input by more than 1
    (its Lipschitz constant is 1), while single rows may be much shorter than 1.
    """
    sigma = torch.linalg.matrix_norm(_rows(w), ord=2)
    return w / sigma


def power_iteration(w: Tensor, n_iter: int = 10, seed: int = 0) -> Tensor:
    """Estimates of σ_max(W) after each of ``n_iter`` power-iteration steps (Miyato et al. 2018, alg. 1).

    Starting from a random u: v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖, σ ≈ uᵀWv. Returns a tensor of length
    ``n_iter``; the estimates increase towards σ_max, at a rate set by the gap between the two largest
    singular values.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    m = _rows(w)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(m.shape[0], generator=gen, dtype=m.dtype)
    u = u / u.norm()
    estimates = []
    for _ in range(n_iter):
        v = m.T @ u
        v = v / v.norm()
        u = m @ v
        u = u / u.norm()
        estimates.append(u @ m @ v)
    return torch.stack(estimates)
