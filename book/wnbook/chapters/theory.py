"""Computations and figures of the Theory chapter (``book/theory.ipynb``).

Salimans & Kingma (2016), §2: the reparameterization w = g·v/‖v‖ (eq. 2) of a neuron y = φ(w·x + b)
(eq. 1), its gradients (eq. 3) and their projection form (eq. 4), the growth of ‖v‖ under SGD and the
self-stabilizing step size that follows (§2.1), the equivalence with batch norm for a single neuron with
whitened inputs, and batch norm's minibatch noise against weight norm's determinism (§2.2).

Every function is small, seeded and deterministic; the weight norm itself always comes from wnlib
(:mod:`wnlib.reference`, :func:`wnlib.functional.weight_norm`, :class:`wnlib.nn.Linear`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

import wnlib
from wnbook.datasets import digit_rows
from wnbook.models import digits_mlp
from wnbook.stats import running_mean
from wnbook.style import ACCENT, LABELS, PALETTE, book_style, figure
from wnbook.training import LRRun
from wnbook.widgets import control, frame_widget
from wnlib import reference

__all__ = [
    "GEOMETRY_NORMS",
    "GEOMETRY_THETAS",
    "GradientCheck",
    "NoiseMeasurement",
    "bn_wn_single_neuron",
    "check_gradients",
    "draw_geometry",
    "draw_geometry_frame",
    "draw_lr_frame",
    "fmt_small",
    "geometry",
    "geometry_widget",
    "lr_widget",
    "measure_minibatch_noise",
    "minibatch_noise_nets",
    "neuron_loss",
    "plot_bn_equivalence",
    "plot_geometry",
    "plot_lr_runs",
    "plot_minibatch_noise",
    "sgd_step_growth",
    "whiten",
]


def fmt_small(x: float, floor: float) -> str:
    """``x`` to two significant digits, or "< floor" below it (so rounding noise is not printed)."""
    return f"< {floor:.0e}" if abs(x) < floor else f"{x:.1e}"


# --------------------------------------------------------------------------------------------------
# Eq. 1–4 checked numerically
# --------------------------------------------------------------------------------------------------


def neuron_loss(w: np.ndarray, b: float, x: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """L = ½·mean (y − target)² for the neuron y = tanh(x·w + b) (eq. 1), and ∇w L by hand.

    ``x`` is (n, k): n examples of k features. Returns (L, ∇w L).
    """
    y = np.tanh(x @ w + b)
    r = (y - target) * (1.0 - y**2) / len(target)
    return 0.5 * float(np.mean((y - target) ** 2)), x.T @ r


@dataclass
class GradientCheck:
    """Eq. 2–4 on one neuron, three ways: :mod:`wnlib.reference`, finite differences, torch autograd."""

    v: np.ndarray
    g: float
    norm_w: float  # ‖w‖ from reference.weight: eq. 2 says it is g
    grad_g: float  # eq. 3 (reference.grad_g)
    grad_v: np.ndarray  # eq. 3 (reference.grad_v)
    grad_v_eq4: np.ndarray  # eq. 4 (reference.grad_v_projection)
    fd_grad_g: float  # central finite differences of L(g·v/‖v‖)
    fd_grad_v: np.ndarray
    autograd_grad_g: float  # torch autograd through g·v/torch.linalg.vector_norm(v)
    autograd_grad_v: np.ndarray
    wnlib_grad_g: float  # wnlib.functional.weight_norm's hand-written backward
    wnlib_grad_v: np.ndarray

    def errors(self) -> dict[str, float]:
        """Largest absolute difference of each method from eq. 3 (float64 throughout)."""
        ref = np.append(self.grad_v, self.grad_g)
        return {
            "eq. 4 vs eq. 3": float(np.abs(self.grad_v_eq4 - self.grad_v).max()),
            "finite differences": float(np.abs(np.append(self.fd_grad_v, self.fd_grad_g) - ref).max()),
            "torch autograd": float(
                np.abs(np.append(self.autograd_grad_v, self.autograd_grad_g) - ref).max()
            ),
            "wnlib.functional": float(np.abs(np.append(self.wnlib_grad_v, self.wnlib_grad_g) - ref).max()),
        }

    @property
    def cos_grad_v_v(self) -> float:
        """cos of the angle between ∇v L and v: eq. 4 says 0."""
        return float(self.grad_v @ self.v / (np.linalg.norm(self.grad_v) * np.linalg.norm(self.v)))


def check_gradients(
    k: int = 5, n: int = 20, g: float = 1.7, h: float = 1e-6, eps: float = 0.0, seed: int = 0
) -> GradientCheck:
    """Eq. 2–4 for a tanh neuron with k inputs on n random examples, in float64.

    ``eps`` is the reference's lower bound on ‖v‖; 0 gives the paper's formulas with no guard at all
    (the library default 1e-12 changes nothing unless ‖v‖ < 1e-12).

    ∇w L comes from :func:`neuron_loss`; eq. 3 and eq. 4 turn it into ∇g L and ∇v L
    (:func:`wnlib.reference.grad_g`, :func:`~wnlib.reference.grad_v`,
    :func:`~wnlib.reference.grad_v_projection`). Independent checks: central finite differences (step h)
    of L(v, g) = L(g·v/‖v‖), torch autograd through the formula written in plain torch ops, and the
    backward of :func:`wnlib.functional.weight_norm`.
    """
    rng = np.random.default_rng(seed)
    v = rng.normal(size=k)
    x, target, b = rng.normal(size=(n, k)), rng.uniform(-0.5, 0.5, size=n), 0.1

    def loss(v_: np.ndarray, g_: float) -> float:
        return neuron_loss(reference.weight(v_, np.asarray(g_), dim=None, eps=eps), b, x, target)[0]

    w = reference.weight(v, np.asarray(g), dim=None, eps=eps)
    _, grad_w = neuron_loss(w, b, x, target)
    fd_v = np.array([(loss(v + h * e, g) - loss(v - h * e, g)) / (2 * h) for e in np.eye(k)])
    fd_g = (loss(v, g + h) - loss(v, g - h)) / (2 * h)

    def torch_grads(weight_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[float, np.ndarray]:
        vt = torch.tensor(v, requires_grad=True)
        gt = torch.tensor([g], dtype=torch.float64, requires_grad=True)
        y = torch.tanh(torch.from_numpy(x) @ weight_fn(vt, gt) + b)
        (0.5 * ((y - torch.from_numpy(target)) ** 2).mean()).backward()
        return float(gt.grad), vt.grad.numpy()

    ag_g, ag_v = torch_grads(lambda v_, g_: g_ * v_ / torch.linalg.vector_norm(v_))
    wn_g, wn_v = torch_grads(lambda v_, g_: wnlib.functional.weight_norm(v_, g_, dim=None, eps=eps))
    return GradientCheck(
        v=v,
        g=g,
        norm_w=float(np.linalg.norm(w)),
        grad_g=float(reference.grad_g(grad_w, v, dim=None, eps=eps)),
        grad_v=reference.grad_v(grad_w, v, np.asarray(g), dim=None, eps=eps),
        grad_v_eq4=reference.grad_v_projection(grad_w, v, g, eps=eps),
        fd_grad_g=float(fd_g),
        fd_grad_v=fd_v,
        autograd_grad_g=ag_g,
        autograd_grad_v=ag_v,
        wnlib_grad_g=wn_g,
        wnlib_grad_v=wn_v,
    )


# --------------------------------------------------------------------------------------------------
# The gradient geometry (eq. 4) in two dimensions
# --------------------------------------------------------------------------------------------------


def geometry(
    theta_deg: float, norm_v: float, g: float = 1.0, grad_norm: float = 1.0, eps: float = 0.0
) -> dict[str, np.ndarray]:
    """The vectors of eq. 4 in the plane: v along the x axis, ∇w L at angle θ to it.

    Returns v, w = g·v/‖v‖ (eq. 2), ∇w L, its part along w (the part ∇g L carries),
    M_w ∇w L (the part orthogonal to w) and ∇v L = (g/‖v‖)·M_w ∇w L
    (:func:`wnlib.reference.grad_v_projection`), with the paper's exact formulas (``eps=0``).
    """
    theta = np.deg2rad(theta_deg)
    v = np.array([norm_v, 0.0])
    grad_w = grad_norm * np.array([np.cos(theta), np.sin(theta)])
    w = reference.weight(v, np.asarray(g), dim=None, eps=eps)
    along_w = (grad_w @ w) / (w @ w) * w
    return {
        "v": v,
        "w": w,
        "grad_w": grad_w,
        "grad_w_along_w": along_w,
        "grad_w_orth": grad_w - along_w,
        "grad_v": reference.grad_v_projection(grad_w, v, g, eps=eps),
    }


def _arrow(ax: plt.Axes, start: np.ndarray, vec: np.ndarray, color: str, label: str, **kw) -> None:
    ax.annotate(
        "",
        xy=start + vec,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>",
            "color": color,
            "lw": kw.pop("lw", 2.0),
            "shrinkA": 0,
            "shrinkB": 0,
            "mutation_scale": 12,
            **kw,
        },
    )
    ax.plot([], [], color=color, lw=2, label=label, ls=kw.get("linestyle", "-"))


def draw_geometry(
    ax: plt.Axes, theta_deg: float, norm_v: float, g: float = 1.0, legend: bool = True, xmax: float = 4.0
) -> None:
    """Draw :func:`geometry` on ``ax``: v and w from the origin; ∇w L, its part along w and ∇v L at v's tip.

    ∇v L is tangent to the circle of radius ‖v‖ (it is orthogonal to v) and its length is
    (g/‖v‖) times that of ∇w's orthogonal part, so a step −η∇v L always leaves that circle.
    """
    geo = geometry(theta_deg, norm_v, g)
    v, tip = geo["v"], geo["v"]
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(norm_v * np.cos(t), norm_v * np.sin(t), color="0.75", lw=1, ls="--", label="circle of radius ‖v‖")
    ax.plot(g * np.cos(t), g * np.sin(t), color=ACCENT, lw=0.8, alpha=0.5, label="circle of radius g = ‖w‖")
    arrows = [
        (v, "0.6", r"$\mathbf{v}$", 3.5),
        (geo["w"], ACCENT, r"$\mathbf{w} = g\,\mathbf{v}/\|\mathbf{v}\|$", 2),
    ]
    for vec, color, label, lw in sorted(arrows, key=lambda a: -np.linalg.norm(a[0])):  # the shorter on top
        _arrow(ax, np.zeros(2), vec, color, label, lw=lw)
    _arrow(ax, tip, geo["grad_w"], "black", r"$\nabla_{\mathbf{w}}L$")
    if np.linalg.norm(geo["grad_w_along_w"]) > 1e-9:
        _arrow(
            ax,
            tip,
            geo["grad_w_along_w"],
            "0.4",
            r"part along $\mathbf{w}$ (goes to $\nabla_g L$)",
            lw=1.2,
            linestyle=":",
        )
    if np.linalg.norm(geo["grad_v"]) > 1e-9:
        _arrow(ax, tip, geo["grad_v"], PALETTE["weightnorm"], r"$\nabla_{\mathbf{v}}L$ (eq. 4)", lw=2.5)
    ax.plot(*(tip + geo["grad_w"]), alpha=0)  # keep the tip inside the autoscaled limits
    ax.set(
        xlim=(-1.1, xmax),
        ylim=(-1.3, 1.3),
        aspect="equal",
        xlabel="along $\\mathbf{v}$",
        ylabel="orthogonal to $\\mathbf{v}$",
    )
    n_orth, n_gv = np.linalg.norm(geo["grad_w_orth"]), np.linalg.norm(geo["grad_v"])
    ax.set_title(
        f"‖v‖ = {norm_v:g}, θ = {theta_deg:g}°\n‖∇v L‖ = {g / norm_v:.2g} × {n_orth:.2f} = {n_gv:.2f}",
        fontsize=9,
    )
    if legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)


def plot_geometry(settings: Sequence[tuple[float, float]], g: float = 1.0) -> plt.Figure:
    """Static version of the geometry widget: one panel per (θ in degrees, ‖v‖) setting."""
    fig, axes = figure(len(settings), height=3.3, sharey=True)
    xmax = max(max(n for _, n in settings), g) + 1.1
    for i, (ax, (theta, norm_v)) in enumerate(zip(np.atleast_1d(axes), settings, strict=True)):
        with book_style():
            draw_geometry(ax, theta, norm_v, g, legend=False, xmax=xmax)
        if i:
            ax.set_ylabel("")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8.5)
    fig.suptitle(f"∇v L = ∇w L without its part along w, times g/‖v‖ (g = {g:g})")
    return fig


#: The geometry widget's grid (7 × 3 = 21 frames): θ every 30° and three lengths of v around g = 1.
GEOMETRY_THETAS = (0, 30, 60, 90, 120, 150, 180)
GEOMETRY_NORMS = (0.5, 1.0, 2.0)


def draw_geometry_frame(theta: float, norm_v: float, g: float = 1.0) -> plt.Figure:
    """One frame of :func:`geometry_widget`: :func:`draw_geometry` at (θ, ‖v‖), as a new figure."""
    with book_style():
        fig, ax = plt.subplots(figsize=(7.0, 3.2))
        draw_geometry(ax, theta, norm_v, g, xmax=max(GEOMETRY_NORMS) + 1.1)
    return fig


def geometry_widget(g: float = 1.0, theta: float = 60, norm_v: float = 2.0) -> object:
    """θ between ∇w L and v, and ‖v‖ (g fixed): one frame per point of the grid, switched client-side.

    Every frame is drawn now (:func:`wnbook.widgets.frame_widget`), so the widget works in the static
    HTML; the title of each frame states the θ and ‖v‖ it was drawn for. ``theta`` and ``norm_v`` are
    the initial values (on :data:`GEOMETRY_THETAS` × :data:`GEOMETRY_NORMS`).
    """
    controls = {
        "theta": control("slider", GEOMETRY_THETAS, theta, "θ (degrees)"),
        "norm_v": control("slider", GEOMETRY_NORMS, norm_v, "‖v‖", labels=[f"{n:g}" for n in GEOMETRY_NORMS]),
    }
    return frame_widget(controls, lambda theta, norm_v: draw_geometry_frame(theta, norm_v, g))


# --------------------------------------------------------------------------------------------------
# The growth of ‖v‖ and the self-stabilizing step (§2.1)
# --------------------------------------------------------------------------------------------------


def sgd_step_growth(lr: float = 0.5, k: int = 5, seed: int = 0) -> dict[str, float]:
    """One SGD step v′ = v + Δv with Δv = −lr·∇v L on the neuron of :func:`check_gradients` (float64).

    §2.1: Δv ⟂ v, so with c = ‖Δv‖/‖v‖ Pythagoras gives ‖v′‖ = √(1 + c²)·‖v‖ ≥ ‖v‖.
    """
    check = check_gradients(k=k, seed=seed)
    v, dv = check.v, -lr * check.grad_v
    norm_v, norm_v_new = float(np.linalg.norm(v)), float(np.linalg.norm(v + dv))
    c = float(np.linalg.norm(dv)) / norm_v
    return {
        "norm_v": norm_v,
        "c": c,
        "norm_v_new": norm_v_new,
        "pythagoras": float(np.sqrt(1 + c**2) * norm_v),
    }


def _lr_colors(lrs: Sequence[float]) -> dict[float, tuple]:
    cmap = plt.get_cmap("viridis")
    logs = np.log10(np.asarray(lrs, dtype=float))
    span = max(logs.max() - logs.min(), 1e-9)
    return {lr: cmap(0.9 * (lg - logs.min()) / span) for lr, lg in zip(lrs, logs, strict=True)}


def _final_loss_panel(ax: plt.Axes, wn: Sequence[LRRun], normal: Sequence[LRRun], mark: float | None) -> None:
    short = {"normal": "normal", "weightnorm": "weight norm"}
    finite = [r.final_loss for r in (*wn, *normal) if np.isfinite(r.final_loss)]
    top = 1.6 * max(finite)
    for runs, key in ((normal, "normal"), (wn, "weightnorm")):
        lrs = np.array([r.lr for r in runs])
        losses = np.array([r.final_loss for r in runs])
        ax.plot(lrs, losses, "o-", color=PALETTE[key], label=short[key], ms=4)
        bad = ~np.isfinite(losses)
        if bad.any():  # diverged to inf/NaN: marked at the top of the panel
            ax.plot(lrs[bad], np.full(bad.sum(), top), "x", color=PALETTE[key], ms=7, mew=2)
            ax.annotate("NaN", (lrs[bad][0], top), textcoords="offset points", xytext=(-6, -14), fontsize=8)
    if mark is not None:
        ax.axvline(mark, color="0.6", lw=1, ls="--")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="learning rate of v (or w)",
        ylabel="loss on all digits",
        title="loss after training",
    )
    ax.legend(fontsize=8, loc="center left")


def plot_lr_runs(wn: Sequence[LRRun], normal: Sequence[LRRun], show: Sequence[float]) -> plt.Figure:
    """Static figure: ‖v‖ and c over steps for the learning rates in ``show``; final loss for all runs."""
    fig, axes = figure(3, height=3.0)
    colors = _lr_colors(show)
    for run in wn:
        if run.lr in show:
            kw = {"color": colors[run.lr], "label": f"lr = {run.lr:g}"}
            axes[0].plot(run.norm_v, **kw)
            axes[1].plot(running_mean(run.c), **kw)
    axes[0].set(yscale="log", xlabel="SGD step", ylabel="‖v‖ (RMS over hidden units)", title="‖v‖ only grows")
    axes[1].set(
        yscale="log", xlabel="SGD step", ylabel="c = ‖Δv‖/‖v‖ (10-step mean)", title="the step c settles"
    )
    axes[1].legend(fontsize=8, loc="upper right")
    _final_loss_panel(axes[2], wn, normal, None)
    fig.suptitle("Plain SGD with weight norm: a large learning rate inflates ‖v‖ until the step settles")
    return fig


def draw_lr_frame(wn: Sequence[LRRun], normal: Sequence[LRRun], lr: float) -> plt.Figure:
    """One frame of :func:`lr_widget`: the run at ``lr`` over the others (grey), as a new figure."""
    by_lr = {r.lr: r for r in wn}
    normal_by_lr = {r.lr: r for r in normal}
    if lr not in by_lr or lr not in normal_by_lr:
        raise ValueError(f"no precomputed run at lr = {lr:g}; runs: {sorted(by_lr)}")
    run = by_lr[lr]
    with book_style():
        fig, axes = figure(3, height=3.0)
        for other in wn:
            axes[0].plot(other.norm_v, color="0.85", lw=1)
            axes[1].plot(running_mean(other.c), color="0.85", lw=1)
        axes[0].plot(run.norm_v, color=PALETTE["weightnorm"], lw=2)
        axes[1].plot(running_mean(run.c), color=PALETTE["weightnorm"], lw=2)
        axes[0].set(yscale="log", xlabel="SGD step", ylabel="‖v‖", title=f"‖v‖ at lr = {lr:g}")
        axes[1].set(
            yscale="log",
            xlabel="SGD step",
            ylabel="c = ‖Δv‖/‖v‖",
            title=f"c: {run.c[0]:.3g} first, {run.c[-50:].mean():.3g} last 50",
        )
        _final_loss_panel(axes[2], wn, normal, lr)
        axes[2].set_title(f"final loss: WN {run.final_loss:.3f},\nnormal {normal_by_lr[lr].final_loss:.3f}")
    return fig


def lr_widget(wn: Sequence[LRRun], normal: Sequence[LRRun], value: float | None = None) -> object:
    """A learning-rate slider over precomputed runs: one frame per rate, switched client-side.

    ``wn`` and ``normal`` are :func:`wnbook.training.lr_runs` results at the same learning rates;
    ``value`` is the slider's initial learning rate (default: the middle one). Nothing is trained on a
    move: every frame is drawn now (:func:`wnbook.widgets.frame_widget`).
    """
    lrs = [r.lr for r in wn]
    if lrs != [r.lr for r in normal]:
        raise ValueError(f"weight-norm runs at {lrs} but normal runs at {[r.lr for r in normal]}")
    value = lrs[len(lrs) // 2] if value is None else value
    slider = control("slider", lrs, value, "learning rate of v", labels=[f"{lr:g}" for lr in lrs])
    return frame_widget({"lr": slider}, lambda lr: draw_lr_frame(wn, normal, lr))


# --------------------------------------------------------------------------------------------------
# One neuron, whitened inputs: weight norm = batch norm (§2.2)
# --------------------------------------------------------------------------------------------------


def whiten(x: np.ndarray, k: int) -> np.ndarray:
    """PCA whitening onto the top k principal components: zero mean and identity covariance (1/n) exactly."""
    xc = x - x.mean(0)
    eigval, eigvec = np.linalg.eigh(xc.T @ xc / len(x))
    top = np.argsort(eigval)[::-1][:k]
    return xc @ eigvec[:, top] / np.sqrt(eigval[top])


def bn_wn_single_neuron(x: np.ndarray, n_directions: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch norm against weight norm for one neuron t = v·x on the inputs ``x`` (n, k), over the full batch.

    Batch norm (``torch.nn.BatchNorm1d``, no affine, training mode) outputs (t − μ[t])/σ[t]; weight
    norm (:class:`wnlib.nn.Linear` with g = 1, b = 0) outputs v·x/‖v‖. For whitened x, μ[t] = 0 and
    σ[t] = ‖v‖ (§2.2), so the two agree. Returns both outputs for the first random v, and
    σ[t]/‖v‖ and |μ[t]|/‖v‖ for ``n_directions`` random v.
    """
    gen = torch.Generator().manual_seed(seed)
    xt = torch.tensor(x, dtype=torch.float64)
    k = xt.shape[1]
    vs = torch.randn(n_directions, k, generator=gen, dtype=torch.float64)
    wn = wnlib.nn.Linear(k, n_directions, dtype=torch.float64)
    bn = nn.BatchNorm1d(n_directions, affine=False, dtype=torch.float64)
    with torch.no_grad():
        wn.weight_v.copy_(vs)
        wn.weight_g.fill_(1.0)
        wn.bias.zero_()
        t = xt @ vs.T
        out_wn, out_bn = wn(xt), bn.train()(t)
    norm_v = vs.norm(dim=1)
    return {
        "wn": out_wn[:, 0].numpy(),
        "bn": out_bn[:, 0].numpy(),
        "max_abs_diff": float((out_wn - out_bn).abs().max()),
        "sigma_over_norm": (t.std(0, unbiased=False) / norm_v).numpy(),
        "mean_over_norm": (t.mean(0).abs() / norm_v).numpy(),
    }


def plot_bn_equivalence(whitened: dict[str, np.ndarray], raw: dict[str, np.ndarray]) -> plt.Figure:
    """Left: batch norm's output against weight norm's for one neuron. Right: σ[t]/‖v‖ over random v."""
    fig, axes = figure(2, height=3.2)
    ax = axes[0]
    for res, key, name in ((raw, "normal", "standardized pixels"), (whitened, "weightnorm", "whitened")):
        ax.scatter(res["wn"], res["bn"], s=4, alpha=0.4, color=PALETTE[key], label=name, rasterized=True)
    lim = np.array([-4, 4])
    ax.plot(lim, lim, color="0.5", lw=0.8, ls="--")
    ax.set(
        xlim=lim,
        ylim=lim,
        aspect="equal",
        xlabel="weight norm: v·x/‖v‖",
        ylabel="batch norm: (t − μ[t])/σ[t]",
        title="one random v, all 1797 digits",
    )
    ax.legend(fontsize=8, markerscale=3)
    ax = axes[1]
    width = 0.025  # a bin centred on 1.0: the whitened ratios (all 1 ± 1e-9) fall in one bar
    bins = (np.arange(61) - 0.5) * width
    ax.hist(
        raw["sigma_over_norm"], bins=bins, color=PALETTE["normal"], alpha=0.6, label="standardized pixels"
    )
    ax.hist(whitened["sigma_over_norm"], bins=bins, color=PALETTE["weightnorm"], label="whitened")
    n = len(raw["sigma_over_norm"])
    ax.set(xlabel="σ[t] / ‖v‖", ylabel="random directions v", title=f"σ[t]/‖v‖ over {n} random v")
    ax.legend(fontsize=8)
    fig.suptitle("Whitened inputs: σ[t] = ‖v‖, so batch norm = weight norm")
    return fig


# --------------------------------------------------------------------------------------------------
# Batch norm's minibatch noise against weight norm's determinism (§2.2)
# --------------------------------------------------------------------------------------------------


def minibatch_noise_nets(hidden: int = 64, seed: int = 0) -> dict[str, nn.Module]:
    """Two 64–hidden–10 ReLU MLPs with the same initial directions: batch norm (torch), weight norm (wnlib).

    The weight-norm net gets the paper's data-dependent init (§3, :func:`wnlib.data_dependent_init`) on
    all digits, so at the start its pre-activations are standardized the way batch norm standardizes them
    — but with fixed g and b instead of per-minibatch statistics.
    """
    x, _ = digit_rows(whole=True)
    torch.manual_seed(seed)
    bn = nn.Sequential(nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 10))
    torch.manual_seed(seed)
    wn = digits_mlp("weightnorm", hidden)
    wnlib.data_dependent_init(wn, x)
    return {"batchnorm": bn.train(), "weightnorm": wn.train()}


@dataclass
class NoiseMeasurement:
    """One fixed example's output and weight gradient across many random minibatches (training mode)."""

    logit: np.ndarray  # (batches,) the example's logit for its true class
    grad: np.ndarray  # (batches, P): ∇θ of the example's own loss, all parameters flattened (float64 copy)
    batch_size: int

    @property
    def logit_std(self) -> float:
        return float(self.logit.std())

    @property
    def grad_rel_dev(self) -> np.ndarray:
        """‖∇θ ℓ − mean‖ / ‖mean‖ per minibatch: how far each minibatch moves the example's gradient."""
        mean = self.grad.mean(0)
        return np.linalg.norm(self.grad - mean, axis=1) / np.linalg.norm(mean)


def measure_minibatch_noise(
    model: nn.Module, example: int = 0, batches: int = 300, batch_size: int = 32, seed: int = 0
) -> NoiseMeasurement:
    """Put digit ``example`` into ``batches`` random minibatches (at a random position) and record its output.

    The loss is the example's own cross-entropy ℓ(x_i), so any change of its logit or of ∇θ ℓ across
    minibatches comes from the *other* examples in the batch: through μ and σ in batch norm, and not at
    all in weight norm, whose output for x_i is a function of x_i and the parameters alone.
    """
    x, y = digit_rows(whole=True)
    gen = torch.Generator().manual_seed(seed)
    others = torch.cat([torch.arange(example), torch.arange(example + 1, len(y))])
    params = list(model.parameters())
    logits, grads = [], []
    for _ in range(batches):
        idx = others[torch.randperm(len(others), generator=gen)[: batch_size - 1]]
        pos = int(torch.randint(0, batch_size, (1,), generator=gen))
        idx = torch.cat([idx[:pos], torch.tensor([example]), idx[pos:]])
        out = model(x[idx])[pos]
        loss = nn.functional.cross_entropy(out[None], y[example][None])
        grad = torch.autograd.grad(loss, params)
        logits.append(float(out.detach()[y[example]]))
        grads.append(torch.cat([gr.reshape(-1) for gr in grad]).numpy())
    return NoiseMeasurement(np.array(logits), np.stack(grads).astype(np.float64), batch_size)


def plot_minibatch_noise(bn: NoiseMeasurement, wn: NoiseMeasurement) -> plt.Figure:
    """Histograms of the fixed example's logit and gradient deviation across minibatches, BN against WN."""
    fig, axes = figure(2, height=3.0)
    for ax, values, xlabel, symmetric in (
        (
            axes[0],
            (bn.logit - bn.logit.mean(), wn.logit - wn.logit.mean()),
            "logit − its mean over minibatches",
            True,
        ),
        (axes[1], (bn.grad_rel_dev, wn.grad_rel_dev), "‖∇θℓ − mean‖ / ‖mean‖", False),
    ):
        hi = max(np.abs(values[0]).max(), 1e-3)
        bins = np.linspace(-hi if symmetric else 0.0, hi, 41)
        ax.hist(values[0], bins=bins, color=PALETTE["batchnorm"], alpha=0.8, label=LABELS["batchnorm"])
        ax.hist(values[1], bins=bins, color=PALETTE["weightnorm"], alpha=0.9, label=LABELS["weightnorm"])
        ax.set(xlabel=xlabel, ylabel=f"minibatches (of {len(bn.logit)})")
    axes[0].set_title(f"the example's output (std: BN {bn.logit_std:.3f}, WN {wn.logit_std:.0f})")
    axes[1].set_title("its gradient (all parameters)")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"One digit in {len(bn.logit)} minibatches of {bn.batch_size}: only batch norm's output moves"
    )
    return fig
