"""Statistics the chapters compute on their runs and measurements (NumPy, float64).

- :func:`running_mean`: a trailing running mean of a per-step series (the Theory chapter's curves);
- :func:`late_rms`: the root mean square of a run's settled part (the Beyond chapter's angular steps);
- :func:`excess_kurtosis`: how far a noise is from Gaussian (the Mean-only batch norm chapter);
- :func:`spread` and :func:`condition_number`: the shape of a gradient covariance's spectrum (the
  gradient-covariance section of the Theory chapter, §2 of Salimans & Kingma 2016).
"""

from __future__ import annotations

import numpy as np

__all__ = ["condition_number", "excess_kurtosis", "late_rms", "running_mean", "spread"]


def running_mean(a: np.ndarray, n: int = 10) -> np.ndarray:
    """Running mean over n steps (the first n−1 steps average what is there)."""
    c = np.cumsum(np.insert(a, 0, 0.0))
    idx = np.arange(1, len(a) + 1)
    lo = np.maximum(idx - n, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def late_rms(x: np.ndarray, fraction: float = 0.5) -> float:
    """Root mean square of the last ``fraction`` of a per-step series (the settled part of a run)."""
    tail = x[int(len(x) * (1 - fraction)) :]
    return float(np.sqrt(np.mean(tail**2)))


def excess_kurtosis(samples: np.ndarray) -> float:
    """Excess kurtosis E[z⁴] − 3 of ``samples`` (draws × columns), each column standardized on its own.

    0 for a Gaussian. Pooling the standardized columns gives the mean of the columns' kurtoses.
    """
    z = samples - samples.mean(0)
    z = z / z.std(0)
    return float((z**4).mean() - 3.0)


def spread(eigvals: np.ndarray) -> float:
    """λmax / mean(λ): 1 for a multiple of the identity, d for rank one; finite when C is singular.

    >>> spread(np.array([3.0, 1.0, 1.0, 1.0]))
    2.0
    """
    eigvals = np.asarray(eigvals, dtype=np.float64)
    mean = eigvals.mean()
    if not mean > 0:
        raise ValueError(f"the eigenvalues must have a positive mean (a nonzero covariance), got {mean}")
    return float(eigvals.max() / mean)


def condition_number(eigvals: np.ndarray, rel_floor: float = 0.0) -> float:
    """(λmax + δ)/(λmin + δ) with δ = ``rel_floor``·mean(λ): λmax/λmin for ``rel_floor = 0``.

    A positive ``rel_floor`` regularizes a singular C (infinite condition number otherwise).

    >>> condition_number(np.array([100.0, 2.0, 1.0]))
    100.0
    """
    eigvals = np.asarray(eigvals, dtype=np.float64)
    if rel_floor < 0:
        raise ValueError(f"rel_floor must be >= 0, got {rel_floor}")
    delta = rel_floor * eigvals.mean()
    low = max(eigvals.min(), 0.0) + delta
    return float("inf") if low == 0 else float((eigvals.max() + delta) / low)
