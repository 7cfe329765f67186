"""What came after weight normalization: the computations and figures of the Beyond chapter.

Weight normalization (Salimans & Kingma 2016) writes each output unit's weight vector as
w = g · v/‖v‖ (eq. 2). Later methods normalize the weights differently, or normalize activations:

Those weight-side methods are in :mod:`wnbook.baselines`:

- centered weight norm (Huang et al. 2017): subtract each row's mean first, then eq. 2;
- weight standardization (Qiao et al. 2019): each row to mean 0 and standard deviation 1, which is
  centered weight norm with g = √fan_in;
- spectral norm (Miyato et al. 2018): divide the whole matrix by its largest singular value (estimated
  in practice by power iteration);
- layer normalization (Ba et al. 2016) normalizes the pre-activations of each example across units;
  :func:`invariance_table` computes which re-scalings and shifts each method ignores.

Weight norm makes a layer's function independent of ‖v‖, so the direction of v has an effective
learning rate η/‖v‖² under SGD: :func:`scale_invariance` and
:func:`wnbook.training.rescaled_training` check it, and :func:`wnbook.training.weight_decay_run` shows
the equilibrium of ‖v‖ that weight decay on v sets up.

Everything is small, seeded and deterministic. Weights are (out, in) matrices (a convolution's weight
is flattened to (out, in·k·k)); "row" means one output unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch
from torch import Tensor

from wnbook.baselines import (
    centered_weight_norm,
    row_norms,
    singular_values,
    spectral_norm,
    weight_standardization,
)
from wnbook.style import ACCENT, PALETTE, figure
from wnlib.functional import weight_norm as wn

# --------------------------------------------------------------------------------------------------
# Weight-side normalizations, one row per output unit
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# A matrix to compare them on: noise plus a rank-one spike shared by every row
# --------------------------------------------------------------------------------------------------

Direction = Literal["shared mean", "random"]
# What each method is called in figures, and its line style; WN keeps the book's weight-norm colour.
METHODS: dict[str, dict] = {
    "unnormalized": {"color": "#999999", "ls": ":", "label": "unnormalized W"},
    "weight norm": {"color": PALETTE["weightnorm"], "ls": "-", "label": "weight norm (g = 1)"},
    "centered weight norm": {
        "color": PALETTE["weightnorm"],
        "ls": "--",
        "label": "centered WN (g = 1) = WS / √n",
    },
    "spectral norm": {"color": ACCENT, "ls": "-", "label": "spectral norm"},
}


def spiked_matrix(
    m: int = 32,
    n: int = 64,
    strength: float = 2.0,
    direction: Direction = "shared mean",
    seed: int = 0,
) -> Tensor:
    """W = Z + s · 1 bᵀ: Gaussian noise (rows of norm about 1) plus the same vector s·b in every row.

    ``Z`` has entries N(0, 1/n). ``b`` is a unit vector: for ``"shared mean"`` it is 1/√n (every row
    gets the same mean, s/√n, as when all weights drift positive); for ``"random"`` it is a random
    direction with zero mean. The spike makes the rows similar, so the matrix has one large singular
    value (about s·√m for large s). float64.
    """
    if direction not in ("shared mean", "random"):
        raise ValueError(f"direction must be 'shared mean' or 'random', got {direction!r}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    if direction == "shared mean":
        b = torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64)
    else:
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        b = b - b.mean()
        b = b / b.norm()
    return z + strength * torch.ones(m, 1, dtype=torch.float64) * b


def normalized_variants(w: Tensor) -> dict[str, Tensor]:
    """W under each method of :data:`METHODS`: unchanged, weight norm and centered weight norm with
    g = 1 (eq. 2 on the rows, or on the centered rows), and spectral norm."""
    ones = torch.ones(w.shape[0], dtype=w.dtype)
    return {
        "unnormalized": w,
        "weight norm": wn(w, ones, dim=0),
        "centered weight norm": centered_weight_norm(w),
        "spectral norm": spectral_norm(w),
    }


def draw_spectra(ax_rows: plt.Axes, ax_sv: plt.Axes, w: Tensor, title: str = "") -> None:
    """Row norms (sorted) on ``ax_rows`` and singular values on ``ax_sv``, one line per method."""
    for name, wv in normalized_variants(w).items():
        style = METHODS[name]
        kw = {"color": style["color"], "ls": style["ls"], "label": style["label"], "lw": 1.6}
        ax_rows.plot(torch.sort(row_norms(wv), descending=True).values.numpy(), **kw)
        ax_sv.plot(singular_values(wv).numpy(), **kw)
    for ax in (ax_rows, ax_sv):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        _log_ticks(ax)
    ax_rows.set_xlabel("output unit i (sorted)")
    ax_rows.set_ylabel("row norm ‖w_i‖")
    ax_sv.set_xlabel("index k")
    ax_sv.set_ylabel("singular value σ_k")
    if title:
        ax_rows.set_title(title)


def _log_ticks(ax: plt.Axes, ylim: tuple[float, float] | None = None) -> None:
    """Major ticks at 1, 2, 5 × 10^k on a log axis of up to 2.5 decades, at 10^k on a longer one
    (after setting ``ylim``, if given)."""
    if ylim is not None:
        ax.set_ylim(*ylim)
    low, high = ax.get_ylim()
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 2.5 else (1.0,)
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=subs))


SETTINGS: list[tuple[float, Direction, str]] = [
    (0.0, "shared mean", "no spike (s = 0)"),
    (3.0, "shared mean", "shared mean, s = 3"),
    (3.0, "random", "random direction, s = 3"),
]


def spectra_figure(settings: list[tuple[float, Direction, str]] = SETTINGS, seed: int = 0) -> plt.Figure:
    """The static figure: row norms (top) and singular values (bottom) at a few spike settings."""
    fig, axes = figure(ncols=len(settings), nrows=2, height=2.7, sharey="row")
    for j, (strength, direction, title) in enumerate(settings):
        draw_spectra(
            axes[0, j], axes[1, j], spiked_matrix(strength=strength, direction=direction, seed=seed), title
        )
        if j:
            axes[0, j].set_ylabel("")
            axes[1, j].set_ylabel("")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8.5)
    fig.suptitle("Weight norm fixes every row's length; spectral norm fixes the largest singular value")
    return fig


#: The spike strengths of the interactive view (with both directions: 14 frames).
WIDGET_STRENGTHS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)
#: The y ranges of its two panels, wide enough for every frame (rows up to √(1 + 6²) ≈ 6, the
#: unnormalized σ_max up to about 6·√32 ≈ 34, spectral norm's smallest σ_k about 0.01 at s = 6).
FRAME_ROW_LIMITS, FRAME_SV_LIMITS = (0.1, 10.0), (0.005, 50.0)


def spectra_frame(strength: float, direction: Direction, seed: int = 0) -> plt.Figure:
    """One frame of :func:`spectra_widget`: :func:`draw_spectra` of ``spiked_matrix(strength=strength,
    direction=direction)``, the title giving σ_max under each method and the shortest row under
    spectral norm."""
    w = spiked_matrix(strength=strength, direction=direction, seed=seed)
    fig, (ax_rows, ax_sv) = figure(ncols=2, height=3.3)
    draw_spectra(ax_rows, ax_sv, w)
    # the same axes in every frame, so that moving a control moves the lines, not the scale
    _log_ticks(ax_rows, FRAME_ROW_LIMITS)
    _log_ticks(ax_sv, FRAME_SV_LIMITS)
    wv = normalized_variants(w)
    ax_rows.set_title("row norms")
    ax_sv.set_title("singular values")
    handles, labels = ax_sv.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8.5)
    sigma = {name: singular_values(wv[name])[0].item() for name in ("weight norm", "centered weight norm")}
    fig.suptitle(
        f"{direction}, s = {strength:g}: σ_max {sigma['weight norm']:.2f} (WN), "
        f"{sigma['centered weight norm']:.2f} (centered WN), 1 (SN);\n"
        f"shortest row under spectral norm {row_norms(wv['spectral norm']).min():.3f}"
    )
    return fig


def spectra_widget(seed: int = 0, strength: float = 2.0, direction: Direction = "shared mean"):
    """Spike strength s (:data:`WIDGET_STRENGTHS`) and direction, one :func:`spectra_frame` each, drawn
    now and switched in the browser (:func:`wnbook.widgets.frame_widget`: no kernel needed)."""
    from wnbook.widgets import control, frame_widget

    controls = {
        "strength": control(
            "slider", WIDGET_STRENGTHS, strength, "spike s", labels=[f"{x:g}" for x in WIDGET_STRENGTHS]
        ),
        # a dropdown: its label and the longer option fit on one line of a phone's column
        "direction": control("dropdown", ["shared mean", "random"], direction, "direction"),
    }
    return frame_widget(
        controls,
        lambda strength, direction: spectra_frame(strength, direction, seed),
        dpi=100,
    )


# --------------------------------------------------------------------------------------------------
# Invariances: what each normalization ignores (Ba et al. 2016, Table 1, extended)
# --------------------------------------------------------------------------------------------------

TRANSFORMS = [
    "weight matrix re-scaling",
    "weight matrix re-centering",
    "weight vector re-scaling",
    "dataset re-scaling",
    "dataset re-centering",
    "single training case re-scaling",
    "single training case shift x + c·1",
]
# Table 1 of Ba et al. (2016): True = invariant.
BA_TABLE_1: dict[str, list[bool]] = {
    "batch norm": [True, False, True, True, True, False],
    "weight norm": [True, False, True, False, False, False],
    "layer norm": [True, True, False, True, False, True],
}


def _normalizers() -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Each method as (W, X) -> normalized pre-activations of the batch X (N, n) under weights W (m, n).

    Batch and layer norm standardize t = X Wᵀ over the batch (per unit) or over the units (per
    example), without the learned gain and bias; the weight-side methods use their normalized W with
    g = 1, so t = X ŵᵀ.
    """

    def standardize(t: Tensor, axis: int) -> Tensor:
        return (t - t.mean(axis, keepdim=True)) / t.std(axis, keepdim=True, unbiased=False)

    def ones(w: Tensor) -> Tensor:
        return torch.ones(w.shape[0], dtype=w.dtype)

    return {
        "batch norm": lambda w, x: standardize(x @ w.T, 0),
        "weight norm": lambda w, x: x @ wn(w, ones(w), dim=0).T,
        "layer norm": lambda w, x: standardize(x @ w.T, 1),
        "centered weight norm": lambda w, x: x @ centered_weight_norm(w).T,
        "weight standardization": lambda w, x: x @ weight_standardization(w).T,
        "spectral norm": lambda w, x: x @ spectral_norm(w).T,
    }


def invariance_table(seed: int = 0, m: int = 6, n: int = 8, batch: int = 16) -> dict[str, list[bool]]:
    """For each method, whether its normalized output is unchanged by each of :data:`TRANSFORMS`.

    The first six transforms are those of Ba et al. (2016, Table 1): W → δW; W → W + 1γᵀ (the same
    vector added to every row); w_i → δ_i w_i; X → δX; X → X + 1γᵀ (every example shifted by the same
    γ); x_n → δ_n x_n. The seventh shifts every feature of an example by one constant, x_n → x_n + c_n·1.
    Each is applied to a random W and batch X (float64) and the outputs compared to 1e-9.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def positive(*shape: int) -> Tensor:
        return 0.5 + 1.5 * torch.rand(*shape, generator=gen, dtype=torch.float64)

    w, x = rand(m, n), rand(batch, n)
    transforms = [
        lambda w, x: (2.5 * w, x),
        lambda w, x: (w + rand(1, n), x),
        lambda w, x: (positive(m, 1) * w, x),
        lambda w, x: (w, 2.5 * x),
        lambda w, x: (w, x + rand(1, n)),
        lambda w, x: (w, positive(batch, 1) * x),
        lambda w, x: (w, x + rand(batch, 1)),
    ]
    table = {}
    for name, f in _normalizers().items():
        out = f(w, x)
        table[name] = [bool(torch.allclose(f(*t(w, x)), out, rtol=1e-9, atol=1e-9)) for t in transforms]
    return table


def format_invariance_table(table: dict[str, list[bool]]) -> str:
    """The table as aligned text: a row per method, a column per transform (✓ invariant, · not)."""
    short = ["W·δ", "W+1γᵀ", "w_i·δ_i", "X·δ", "X+1γᵀ", "x_n·δ_n", "x_n+c·1"]
    width = max(len(k) for k in table) + 1
    lines = [" " * width + "".join(f"{s:>8}" for s in short)]
    for name, row in table.items():
        lines.append(f"{name:<{width}}" + "".join(f"{('✓' if ok else '·'):>8}" for ok in row))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Scale invariance and the effective learning rate of the direction
# --------------------------------------------------------------------------------------------------


def _toy_problem(seed: int, n_in: int = 5, n_out: int = 3, batch: int = 8) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_in, generator=gen, dtype=torch.float64)
    y = torch.randint(0, n_out, (batch,), generator=gen)
    return x, y


def scale_invariance(alpha: float = 10.0, seed: int = 0) -> dict[str, float]:
    """f(αv) = f(v) and ∇f(αv) = ∇f(v)/α for a weight-normalized layer (eq. 2), with v·∇f(v) = 0.

    f is the cross-entropy of a weight-normalized linear classifier (w = g·v/‖v‖ with g fixed, no
    bias) on a fixed batch, differentiated with wnlib's analytic backward (eq. 3–4). Returns the
    two losses, the largest entry of |α∇f(αv) − ∇f(v)| relative to the largest of |∇f(v)|, and the
    largest |v_i·∇_{v_i} f| relative to ‖v_i‖‖∇_{v_i} f‖ (the gradient is orthogonal to each row).
    """
    x, y = _toy_problem(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    v = torch.randn(3, x.shape[1], generator=gen, dtype=torch.float64)
    g = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5

    def loss_and_grad(v0: Tensor) -> tuple[float, Tensor]:
        v0 = v0.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(x @ wn(v0, g).T, y)
        loss.backward()
        return loss.item(), v0.grad

    f1, g1 = loss_and_grad(v)
    f2, g2 = loss_and_grad(alpha * v)
    cos = ((v * g1).sum(1).abs() / (v.norm(dim=1) * g1.norm(dim=1))).max()
    return {
        "loss(v)": f1,
        "loss(alpha v)": f2,
        "grad mismatch": ((alpha * g2 - g1).abs().max() / g1.abs().max()).item(),
        "max |cos(v, grad)|": cos.item(),
    }


# --------------------------------------------------------------------------------------------------
# Weight decay on v: an equilibrium of ‖v‖ and a fixed angular step
# --------------------------------------------------------------------------------------------------


def predicted_angular_update(lr: float, weight_decay: float) -> float:
    """The angular step per SGD update at the equilibrium of ‖v‖ (in radians).

    With weight decay λ on v, one SGD step is v' = (1 − ηλ)v − η∇f(v), and ∇f(v) ⟂ v (eq. 4), so
    ‖v'‖² = (1 − ηλ)²‖v‖² + η²‖∇f(v)‖² exactly: the gradient lengthens v, the decay shortens it. When
    the two balance on average, η²‖∇f‖²/‖v‖² = 1 − (1 − ηλ)², and the angle turned per step,
    tan θ = η‖∇f‖/((1 − ηλ)‖v‖), is θ = arctan(√(2ηλ − η²λ²)/(1 − ηλ)) ≈ √(2ηλ), whatever the
    gradient's size (Wan et al. 2021 derive this, with momentum, as √(2ηλ/(1 + momentum))).
    """
    a = lr * weight_decay
    return math.atan(math.sqrt(2 * a - a * a) / (1 - a))


def weight_decay_figure(runs: dict[float, dict[str, np.ndarray]], lr: float, window: int = 100) -> plt.Figure:
    """‖v‖ (left) and the angular step in radians (right, a running RMS over ``window`` steps) per
    weight decay, with the predicted equilibrium step θ* ≈ √(2ηλ) (dashed)."""
    fig, (ax_n, ax_a) = figure(ncols=2, height=3.0)
    decays = sorted(runs)
    shades = plt.get_cmap("Blues")(np.linspace(0.45, 0.95, max(len(decays) - 1, 1)))
    colors = ["#999999" if wd == 0 else shades[i - (decays[0] == 0)] for i, wd in enumerate(decays)]
    for wd, color in zip(decays, colors, strict=True):
        run = runs[wd]
        label = "no weight decay" if wd == 0 else f"λ = {wd:g}"
        ax_n.plot(run["norm"], color=color, label=label)
        rms = np.sqrt(np.convolve(run["angle"] ** 2, np.ones(window) / window, mode="valid"))
        steps = np.arange(window - 1, len(run["angle"]))
        ax_a.plot(steps, rms, color=color, label=label)
        if wd > 0:
            ax_a.axhline(predicted_angular_update(lr, wd), color=color, ls="--", lw=1)
    ax_n.set_xlabel("SGD step")
    ax_n.set_ylabel("mean ‖v_i‖")
    ax_n.set_title("Decay stops the growth of ‖v‖")
    ax_a.set_xlabel("SGD step")
    ax_a.set_ylabel("angle turned per step (rad)")
    ax_a.set_yscale("log")
    ax_a.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_a.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax_a.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax_a.set_title("…and the angle per step settles at θ*")
    ax_n.legend(fontsize=8)
    ax_a.plot([], [], color="#555555", ls="--", lw=1, label="predicted θ* ≈ √(2ηλ)")
    ax_a.legend(handles=ax_a.get_lines()[-1:], fontsize=8, loc="lower left")
    return fig
