"""The covariance argument of §2.1, measured on a training run (``book/theory.ipynb``).

Salimans & Kingma (2016), §2.1, after eq. 4: if C is the covariance of ∇w L over minibatches, then,
since ∇v L = (g/‖v‖)·M_w·∇w L with M_w = I − w wᵀ/‖w‖², the covariance of ∇v L is

    D = (g²/‖v‖²) · M_w C M_w,

and because "w is often close to a dominant eigenvector of C", projecting it out leaves a D that is
closer to the identity than C. This module states that algebra as functions and measures it on a
weight-normalized MLP trained on scikit-learn's digits: per layer and per output unit k (each w_k has
its own M_{w_k}, so the unit is the natural object), C_k is the sample covariance of ∇_{w_k} L over
many minibatches drawn at a fixed point of training.

D has a null direction along w, so its spread is measured on w's orthogonal complement (``restrict``).
There, by Cauchy's interlacing theorem, λmax can only fall and λmin only rise, whichever direction is
projected out (the condition number cannot grow; λmax/mean λ can, when the direction removed carries
much of the variance). That is why every measurement is paired with a random unit direction u in place
of w (the control) and with C's own top eigenvector (the paper's ideal case, w exactly dominant).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

import wnlib
from wnbook.datasets import digit_rows
from wnbook.stats import spread
from wnbook.style import ACCENT, PALETTE, figure

__all__ = [
    "LayerSpectra",
    "covariance_of_grad_v",
    "measure_run",
    "minibatch_gradients",
    "plot_covariance",
    "projector",
    "restrict",
    "train_snapshots",
]

PROJECTIONS = ("C", "D_w", "D_u", "D_top")  # C itself; C with w, a random u, C's top eigenvector out


def _unit(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"w must be a vector (shape (d,)), got shape {w.shape}")
    norm = np.linalg.norm(w)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"w must be a finite, nonzero vector (‖w‖ = {norm}); M_w is undefined for w = 0")
    return w / norm


def _check_square(c: np.ndarray, d: int) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.shape != (d, d):
        raise ValueError(f"C must be a ({d}, {d}) matrix to match w of length {d}, got shape {c.shape}")
    return c


def projector(w: np.ndarray) -> np.ndarray:
    """M_w = I − w wᵀ/‖w‖² (eq. 4): the projection onto the complement of w.

    >>> projector(np.array([2.0, 0.0]))
    array([[0., 0.],
           [0., 1.]])
    """
    u = _unit(w)
    return np.eye(len(u)) - np.outer(u, u)


def covariance_of_grad_v(c: np.ndarray, w: np.ndarray, g: float, norm_v: float) -> np.ndarray:
    """D = (g²/‖v‖²)·M_w C M_w: the covariance of ∇v L when C is that of ∇w L (§2.1, from eq. 4).

    >>> covariance_of_grad_v(np.diag([4.0, 1.0]), np.array([1.0, 0.0]), g=1.0, norm_v=2.0)
    array([[0.  , 0.  ],
           [0.  , 0.25]])
    """
    m = projector(w)
    c = _check_square(c, len(m))
    if not norm_v > 0:
        raise ValueError(f"norm_v = ‖v‖ must be positive, got {norm_v}")
    return (g / norm_v) ** 2 * (m @ c @ m)


def restrict(c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Qᵀ C Q for an orthonormal basis Q of w's complement: C (or D) with the direction w removed.

    Since M_w Q = Q, ``restrict(D, w)`` is (g²/‖v‖²)·``restrict(C, w)``; its eigenvalues are D's
    without the zero along w. (d − 1, d − 1) for a (d, d) matrix.
    """
    u = _unit(w)
    c = _check_square(c, len(u))
    # Householder reflection H (symmetric, orthogonal) maps u to ±e_1; its other columns span u's complement
    e1 = np.zeros_like(u)
    e1[0] = 1.0
    s = u - e1 if u[0] <= 0 else u + e1
    h = np.eye(len(u)) - 2.0 * np.outer(s, s) / (s @ s)
    q = h[:, 1:]
    return q.T @ c @ q


# --------------------------------------------------------------------------------------------------
# The training run and its minibatch gradients
# --------------------------------------------------------------------------------------------------


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """A ReLU MLP of ``wnlib.nn.Linear`` layers, e.g. sizes (64, 32, 32, 10)."""
    mods: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        mods += [wnlib.nn.Linear(n_in, n_out)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*mods)


def _check_steps(steps: Sequence[int]) -> list[int]:
    steps = [int(s) for s in steps]
    if not steps or steps[0] < 0 or any(a >= b for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps must be a non-empty, strictly increasing list of steps >= 0, got {steps}")
    return steps


def train_snapshots(
    x: Tensor,
    y: Tensor,
    steps: Sequence[int] = (0, 10, 100, 500),
    sizes: Sequence[int] = (64, 32, 32, 10),
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[int, nn.Sequential]:
    """Train a weight-normalized MLP with Adam (cross-entropy, minibatches of ``batch_size``).

    Returns a frozen copy of the network after each of ``steps`` (0 is the initialization). The
    initialization and the minibatches are seeded by ``seed``; the global torch RNG is left as it was.
    lr = 0.003 is the paper's best rate for weight norm (§5.1).
    """
    steps = _check_steps(steps)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's global RNG
        torch.manual_seed(seed)
        net = _mlp(sizes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    snapshots, done = {}, 0
    for target in steps:
        for _ in range(target - done):
            idx = torch.randint(0, len(x), (batch_size,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        done = target
        snapshots[target] = copy.deepcopy(net).requires_grad_(False)
    return snapshots


def _layers(net: nn.Sequential) -> list[wnlib.nn.Linear]:
    return [m for m in net if isinstance(m, wnlib.nn.Linear)]


def _plain_forward(net: nn.Sequential, weights: Sequence[Tensor], x: Tensor) -> Tensor:
    """The network's forward with each weight-normalized layer's w replaced by ``weights`` (leaves)."""
    it = iter(weights)
    for m in net:
        x = nn.functional.linear(x, next(it), m.bias) if isinstance(m, wnlib.nn.Linear) else m(x)
    return x


def minibatch_gradients(
    net: nn.Sequential, x: Tensor, y: Tensor, n_batches: int = 256, batch_size: int = 32, seed: int = 1
) -> list[dict[str, np.ndarray]]:
    """Per layer, ∇w L and ∇v L on ``n_batches`` random minibatches, at the network's current weights.

    In float64. ∇w L comes from a plain forward with w as the leaf; ∇v L from wnlib's own backward
    (through ``wnlib.nn.Linear``), on the same minibatches. Each dict holds ``grad_w`` and ``grad_v``
    (n_batches, out, in), ``w`` (out, in), ``g`` and ``norm_v`` (out,).
    """
    net = copy.deepcopy(net).double().requires_grad_(True)
    layers = _layers(net)
    ws = [layer.weight.detach().clone().requires_grad_(True) for layer in layers]
    vs = [layer.weight_v for layer in layers]
    gen = torch.Generator().manual_seed(seed)
    x = x.double()
    grads_w, grads_v = [], []
    for _ in range(n_batches):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss_w = nn.functional.cross_entropy(_plain_forward(net, ws, x[idx]), y[idx])
        grads_w.append(torch.autograd.grad(loss_w, ws))
        loss_v = nn.functional.cross_entropy(net(x[idx]), y[idx])
        grads_v.append(torch.autograd.grad(loss_v, vs))
    return [
        {
            "grad_w": torch.stack([gw[i] for gw in grads_w]).numpy(),
            "grad_v": torch.stack([gv[i] for gv in grads_v]).numpy(),
            "w": ws[i].detach().numpy(),
            "g": layer.weight_g.detach().reshape(-1).numpy(),
            "norm_v": layer.weight_v.detach().norm(dim=1).numpy(),
        }
        for i, layer in enumerate(layers)
    ]


# --------------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpectra:
    """One layer at one training step; the arrays run over its live units (those with rank(C) ≥ 2).

    ``cos_w``/``cos_u``: |cos| between C's top eigenvector and w / a random unit direction u.
    ``var_w``/``var_u``: the variance of ∇w L along ŵ / û over the mean eigenvalue of C (1 on average
    for a random direction). ``spread[name]``: λmax/mean λ of C and of D restricted to the complement
    of w, u or C's top eigenvector (``PROJECTIONS``). ``d_error``: the largest relative difference
    between the measured covariance of wnlib's ∇v L and (g²/‖v‖²) M_w C M_w, over the units.
    """

    step: int
    layer: int
    fan_in: int
    n_units: int
    dead: int  # units left out: C = 0 (a dead ReLU unit: no gradient on any minibatch) or rank(C) = 1
    singular: int  # live units whose C has λmin ≤ 1e-10 λmax
    train_accuracy: float
    cos_w: np.ndarray
    cos_u: np.ndarray
    var_w: np.ndarray
    var_u: np.ndarray
    spread: dict[str, np.ndarray]
    d_error: float

    def relative_spread(self, name: str) -> np.ndarray:
        """spread(D)/spread(C) per unit for the projection ``name`` ("D_w", "D_u" or "D_top")."""
        return self.spread[name] / self.spread["C"]


def _unit_stats(gw: np.ndarray, gv: np.ndarray, w: np.ndarray, s: float, u: np.ndarray) -> dict:
    """The measurements for one unit: gradient samples ``gw``/``gv`` (n, d), w, s = g/‖v‖, u."""
    c = np.cov(gw, rowvar=False)
    ev, vecs = np.linalg.eigh(c)
    top, w_hat, u_hat = vecs[:, -1], _unit(w), _unit(u)
    d_formula = covariance_of_grad_v(c, w, g=s, norm_v=1.0)
    d_measured = np.cov(gv, rowvar=False)
    out = {
        "cos_w": abs(top @ w_hat),
        "cos_u": abs(top @ u_hat),
        "var_w": w_hat @ c @ w_hat / ev.mean(),
        "var_u": u_hat @ c @ u_hat / ev.mean(),
        "singular": ev[0] <= 1e-10 * ev[-1],
        "d_error": np.abs(d_measured - d_formula).max() / np.abs(d_formula).max(),
        "C": spread(ev),
    }
    for name, direction in (("D_w", w), ("D_u", u), ("D_top", top)):
        out[name] = spread(np.linalg.eigvalsh(restrict(c, direction)))
    return out


def _rank(gw: np.ndarray) -> int:
    """The numerical rank of the centered gradient samples (n, d): the rank of their covariance."""
    centered = gw - gw.mean(axis=0)
    sv = np.linalg.svd(centered, compute_uv=False)
    return int(np.sum(sv > 1e-6 * sv[0])) if sv[0] > 0 else 0


def _layer_spectra(grads: dict[str, np.ndarray], rng: np.random.Generator, **meta) -> LayerSpectra:
    n_units, fan_in = grads["w"].shape
    rows = []
    for k in range(n_units):
        u = rng.normal(size=fan_in)  # drawn for every unit, so the draws do not depend on which are dead
        gw = grads["grad_w"][:, k, :]
        if _rank(gw) < 2:  # dead (C = 0), or a C of rank one that no projection can spread out
            continue
        s = grads["g"][k] / grads["norm_v"][k]
        rows.append(_unit_stats(gw, grads["grad_v"][:, k, :], grads["w"][k], s, u))
    col = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    return LayerSpectra(
        fan_in=fan_in, n_units=n_units, dead=n_units - len(rows), singular=int(col["singular"].sum()),
        cos_w=col["cos_w"], cos_u=col["cos_u"], var_w=col["var_w"], var_u=col["var_u"],
        spread={name: col[name] for name in PROJECTIONS}, d_error=float(col["d_error"].max()), **meta,
    )


def measure_run(
    steps: Sequence[int] = (0, 10, 100, 500),
    n_batches: int = 256,
    batch_size: int = 32,
    seed: int = 0,
) -> list[LayerSpectra]:
    """Train on the digits (:func:`train_snapshots`) and measure C and D per layer at each step.

    C is estimated from ``n_batches`` minibatch gradients (more samples than any layer's fan-in, 64),
    drawn with a seed of their own at the frozen weights of each snapshot.
    """
    if n_batches < 2:
        raise ValueError(f"n_batches must be >= 2 to estimate a covariance, got {n_batches}")
    x, y = digit_rows(whole=True)
    snapshots = train_snapshots(x, y, steps, batch_size=batch_size, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for step, net in snapshots.items():
        with torch.no_grad():
            acc = float((net(x).argmax(1) == y).double().mean())
        grads = minibatch_gradients(net, x, y, n_batches, batch_size, seed=seed + 1)
        for i, layer_grads in enumerate(grads):
            out.append(_layer_spectra(layer_grads, rng, step=step, layer=i + 1, train_accuracy=acc))
    return out


# --------------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------------

_STYLE = {
    "D_w": dict(color=ACCENT, label="w projected out: D (weight norm)"),
    "D_u": dict(color="#999999", label="random u projected out (control)"),
    "D_top": dict(color=PALETTE["weightnorm"], ls="--", label="top eigenvector out (the ideal w)"),
}


def _band(ax: plt.Axes, xs: np.ndarray, arrays: Sequence[np.ndarray], **style) -> None:
    q = np.array([np.percentile(a, [25, 50, 75]) for a in arrays])
    ax.plot(xs, q[:, 1], marker="o", ms=4, **style)
    ax.fill_between(xs, q[:, 0], q[:, 2], color=style["color"], alpha=0.15, lw=0)


def plot_covariance(spectra: Sequence[LayerSpectra], title: str) -> plt.Figure:
    """Per layer (columns): |cos(top eigenvector of C, ·)| for w and u (top), and the spread λmax/mean λ
    of D on the complement of w, of u and of C's top eigenvector, relative to C's own (bottom).

    Lines: the median over the layer's live units; bands: the middle half (25–75%).
    """
    layers = sorted({s.layer for s in spectra})
    fig, axes = figure(ncols=len(layers), nrows=2, height=2.9, sharey="row")
    for j, layer in enumerate(layers):
        rows = sorted((s for s in spectra if s.layer == layer), key=lambda s: s.step)
        xs = np.arange(len(rows))
        top, bottom = axes[0, j], axes[1, j]
        _band(top, xs, [s.cos_w for s in rows], color=ACCENT, label="w")
        _band(top, xs, [s.cos_u for s in rows], color="#999999", label="random u (control)")
        top.set(ylim=(0, 1), title=f"layer {layer}: {rows[0].fan_in} → {rows[0].n_units}")
        bottom.axhline(1.0, color=PALETTE["normal"], lw=1, label="C itself")
        for name in ("D_w", "D_u", "D_top"):
            _band(bottom, xs, [s.relative_spread(name) for s in rows], **_STYLE[name])
        bottom.set(ylim=(0, 1.1), xlabel="training step (Adam)")
        for ax in (top, bottom):
            ax.set_xticks(xs, [str(s.step) for s in rows])
    axes[0, 0].set_ylabel("|cos(·, top eigenvector of C)|")
    axes[1, 0].set_ylabel("spread of D / spread of C\n(spread = λmax / mean λ)")
    axes[0, 0].legend(loc="upper left")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8.5)
    fig.suptitle(title)
    return fig
