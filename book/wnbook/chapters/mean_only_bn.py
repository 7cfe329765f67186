"""Computations and figures of the Mean-only batch norm chapter (Salimans & Kingma 2016, §4).

Mean-only batch norm (:class:`wnlib.nn.MeanOnlyBatchNorm`) subtracts the minibatch mean of each
pre-activation t = w·x and adds a learned bias before the nonlinearity φ (eq. 7), and its backward
centres the gradient (eq. 8):

    t̃ = t − μ[t] + b,  y = φ(t̃),            ∇t L = ∇t̃ L − μ[∇t̃ L].

This module

- checks eq. 7 and eq. 8 against autograd (:func:`check_eq7_eq8`);
- measures the noise a minibatch adds to one example's normalized pre-activation under full batch norm
  and under mean-only batch norm, on the same pre-activations of the same network
  (:func:`noise_preactivations`, :func:`batch_noise`), with histograms, a static figure over batch
  sizes (:func:`plot_noise`) and a widget over the batch size (:func:`noise_widget`);
- shows that weight norm + mean-only batch norm after data-dependent init computes exactly what batch
  norm computes on the init batch, and that the init sets only g (:func:`init_with_mean_only_bn`);
- runs a small training comparison on MNIST-1D (:func:`training_comparison`, :func:`plot_comparison`);
- checks that :func:`wnlib.fold_for_inference` turns weight norm + mean-only batch norm into plain
  layers with the same eval outputs (:func:`fold_check`).

Everything is seeded and small enough for a CPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

import wnlib
import wnlib.nn as wnn
from wnbook.stats import excess_kurtosis
from wnbook.style import LABELS, PALETTE, book_style, figure
from wnbook.widgets import control, frame_widget

__all__ = [
    "BATCH_SIZES",
    "COMPARED",
    "BatchNoise",
    "Comparison",
    "batch_noise",
    "check_eq7_eq8",
    "fold_check",
    "init_with_mean_only_bn",
    "noise_preactivations",
    "noise_widget",
    "plot_comparison",
    "plot_noise",
    "training_comparison",
]

#: The batch sizes the widget offers.
BATCH_SIZES = (4, 8, 16, 32, 64, 128, 256)
#: The parameterizations of the training comparison, in plotting order (names of wnlib.experiments).
COMPARED = ("normal", "weightnorm", "weightnorm_init", "weightnorm_meanonly", "batchnorm")
BN_EPS = 1e-5  # torch.nn.BatchNorm's default


# --------------------------------------------------------------------------------------------------
# Eq. 7 and eq. 8 against autograd
# --------------------------------------------------------------------------------------------------


def check_eq7_eq8(shape: Sequence[int] = (16, 5, 3), seed: int = 0) -> dict[str, float]:
    """Forward (eq. 7) and backward (eq. 8) of :class:`wnlib.nn.MeanOnlyBatchNorm` against the formulas.

    A batch t of ``shape`` (N, C, *) in float64 goes through the layer in training mode, with a random
    bias b; a random upstream gradient ∇t̃ L (the layer's output t̃ is what φ receives) is
    back-propagated by autograd. Returns the largest absolute differences from t̃ = t − μ[t] + b
    (eq. 7) and from ∇t L = ∇t̃ L − μ[∇t̃ L] (eq. 8), where μ averages over the batch and every
    position, the largest |Σ ∇t L| per feature (the centred gradient sums to zero), and the difference
    of ∇b L from Σ ∇t̃ L.
    """
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
    bn = wnn.MeanOnlyBatchNorm(shape[1], dtype=torch.float64)
    with torch.no_grad():
        bn.bias.copy_(torch.randn(shape[1], generator=gen, dtype=torch.float64))
    grad_y = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = bn(t)
    y.backward(grad_y)
    reduce = [0, *range(2, t.ndim)]
    view = [1, shape[1]] + [1] * (t.ndim - 2)
    y_eq7 = t.detach() - t.detach().mean(reduce, keepdim=True) + bn.bias.detach().view(view)
    grad_eq8 = grad_y - grad_y.mean(reduce, keepdim=True)
    return {
        "forward_error": float((y.detach() - y_eq7).abs().max()),
        "grad_error": float((t.grad - grad_eq8).abs().max()),
        "grad_sum": float(t.grad.sum(reduce).abs().max()),
        "bias_grad_error": float((bn.bias.grad - grad_y.sum(reduce)).abs().max()),
    }


# --------------------------------------------------------------------------------------------------
# The noise of full and mean-only batch norm
# --------------------------------------------------------------------------------------------------


def noise_preactivations(hidden: int = 64, layer: int = 1, seed: int = 0) -> Tensor:
    """Pre-activations t = w·x + b of one dense layer of a small network, for all MNIST-1D training data.

    The network is :func:`wnlib.experiments.build_model`'s MLP (``hidden`` × 2 units, leaky ReLU) under
    the ``normal`` parameterization at the paper's data-dependent init (§3, on 500 training examples):
    the network whose pre-activations batch norm or mean-only batch norm would normalize. ``layer`` 0 is
    the first dense layer, 1 the second. Returns a float64 tensor (4000 examples, ``hidden`` units).
    """
    from wnlib import experiments as ex

    data = ex.load_dataset("mnist1d")
    torch.manual_seed(seed)
    model = ex.build_model("mlp", data.input_shape, data.num_classes, "normal", hidden=(hidden, hidden))
    ex.initialize(model, "normal", data.x_train[:500])
    dense = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    with torch.no_grad():
        return model[: dense[layer] + 1](data.x_train).double()


@dataclass(frozen=True)
class BatchNoise:
    """The noise minibatches of ``batch_size`` add to fixed examples' normalized pre-activations.

    Each array is (draws, examples × units); each column is one (fixed example, unit) pair, each row
    one random minibatch containing that example. In units of the unit's population standard
    deviation σ (μ, σ: over the whole training set):

    - ``full``: full batch norm, (t − μ_B)/σ_B − (t − μ)/σ;
    - ``mean_only``: mean-only batch norm (eq. 7), ((t − μ_B) − (t − μ))/σ = (μ − μ_B)/σ;
    - ``scale``: the factor σ/σ_B that full batch norm's variance estimate multiplies by (mean-only
      batch norm's is 1).
    """

    batch_size: int
    full: np.ndarray
    mean_only: np.ndarray
    scale: np.ndarray

    def kurtosis(self) -> dict[str, float]:
        """Excess kurtosis of each noise (:func:`wnbook.stats.excess_kurtosis`)."""
        return {k: excess_kurtosis(getattr(self, k)) for k in ("full", "mean_only", "scale")}

    def std(self) -> dict[str, float]:
        """Root-mean-square size of each perturbation (in units of σ), pooled over columns."""
        return {k: float(np.sqrt((getattr(self, k) ** 2).mean())) for k in ("full", "mean_only")}


def batch_noise(
    t: Tensor, batch_size: int, examples: int = 8, draws: int = 2000, seed: int = 0, eps: float = BN_EPS
) -> BatchNoise:
    """Measure the noise of full and mean-only batch norm on pre-activations ``t`` (N × units).

    ``examples`` fixed examples (a seeded choice) are each put, ``draws`` times, into a minibatch with
    ``batch_size`` − 1 others drawn without replacement from the rest of the data (the same draws for
    every fixed example and unit). For each minibatch B, full batch norm normalizes with the batch
    mean μ_B and standard deviation σ_B (biased, + ``eps`` as in ``torch.nn.BatchNorm``); mean-only
    batch norm subtracts μ_B only (eq. 7). See :class:`BatchNoise` for what is returned.

    The paper (§4) expects the mean-only noise to be about Gaussian (μ_B is an average, so the central
    limit theorem applies) and full batch norm's variance noise to be heavy-tailed.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    n = t.shape[0]
    order = torch.randperm(n, generator=gen)
    fixed, rest = order[:examples], order[examples:]
    t = t.double()
    mu, sigma = t.mean(0), t.std(0, unbiased=False)
    centred = t - mu  # sums of squares without cancellation
    # The minibatch companions: batch_size − 1 of the rest, without replacement, one row per draw.
    pick = torch.rand(draws, len(rest), generator=gen).topk(batch_size - 1, dim=1).indices
    select = torch.zeros(draws, n, dtype=torch.float64)
    select.scatter_(1, rest[pick], 1.0)
    sum_rest, sumsq_rest = select @ centred, select @ centred**2  # (draws, units)
    full, mean_only, scale = [], [], []
    for i in fixed.tolist():
        ti = centred[i]
        mean_b = (sum_rest + ti) / batch_size  # μ_B − μ
        var_b = (sumsq_rest + ti**2) / batch_size - mean_b**2
        sigma_b = torch.sqrt(var_b.clamp_min(0.0) + eps)
        full.append((ti - mean_b) / sigma_b - ti / torch.sqrt(sigma**2 + eps))
        mean_only.append(-mean_b / sigma)
        scale.append(sigma / sigma_b)
    return BatchNoise(
        batch_size,
        torch.cat(full, 1).numpy(),
        torch.cat(mean_only, 1).numpy(),
        torch.cat(scale, 1).numpy(),
    )


#: The noise figure's two normalizers, in clearly different colours of the book's palette: full batch
#: norm its own vermillion, mean-only batch norm the green of weight norm + mean-only BN (the pairing
#: this chapter is about; the palette's own mean-only orange is too close to vermillion).
NOISE_COLORS = {"full": PALETTE["batchnorm"], "mean_only": PALETTE["weightnorm_meanonly"]}
NOISE_LABELS = {"full": "full batch norm", "mean_only": "mean-only batch norm"}


def _gaussian(ax: plt.Axes, std: float, xs: np.ndarray, color: str, label: str) -> None:
    density = np.exp(-0.5 * (xs / std) ** 2) / (std * math.sqrt(2 * math.pi))
    ax.plot(xs, density, color=color, lw=1, ls="--", label=label)


def draw_noise(axes: Sequence[plt.Axes], noise: BatchNoise) -> None:
    """Two panels for one batch size: the perturbation histograms (full vs mean-only batch norm, log
    density, dashed: Gaussians of the same size) and the histogram of full batch norm's scale σ/σ_B.

    Every line carries a legend label (histograms as a solid line of their colour, each Gaussian as a
    dashed line of its histogram's colour); :func:`_legend` collects them."""
    kurt, std = noise.kurtosis(), noise.std()
    ax = axes[0]
    lim = float(np.quantile(np.abs(noise.full), 0.99995)) * 1.05
    bins = np.linspace(-lim, lim, 81)
    xs = np.linspace(-lim, lim, 301)
    for key in ("full", "mean_only"):
        color, name = NOISE_COLORS[key], NOISE_LABELS[key]
        density, edges = np.histogram(getattr(noise, key).ravel(), bins=bins, density=True)
        steps_x, steps_y = np.repeat(edges, 2)[1:-1], np.repeat(density, 2)  # the histogram's outline
        ax.plot(steps_x, steps_y, color=color, lw=1.6, label=f"{name}: perturbation")
        _gaussian(ax, std[key], xs, color, f"Gaussian of {name}'s spread")
    ax.set(yscale="log", xlabel="perturbation / σ", ylabel="density (log)")
    ax.set_title(
        f"batch size {noise.batch_size}: excess kurtosis\nfull BN {kurt['full']:.2f}, "
        f"mean-only {kurt['mean_only']:.2f}",
        fontsize=9,
    )
    ax.set_ylim(bottom=1e-4)
    ax = axes[1]
    values = noise.scale.ravel()
    hi = float(np.quantile(values, 0.9999))
    ax.hist(
        values,
        bins=np.linspace(values.min(), hi, 61),
        density=True,
        color=NOISE_COLORS["full"],
        alpha=0.7,
        label=r"full batch norm: scale factor $\sigma/\sigma_B$",
    )
    ax.axvline(1.0, color=NOISE_COLORS["mean_only"], lw=2, label="mean-only batch norm's factor: always 1")
    ax.set(yscale="log", xlabel=r"$\sigma/\sigma_B$ (full BN)", ylabel="density (log)")
    ax.set_ylim(bottom=1e-4)
    ax.set_title(
        f"batch size {noise.batch_size}: " + r"$\sigma/\sigma_B$," + f"\nexcess kurtosis {kurt['scale']:.2f}",
        fontsize=9,
    )


def _legend(fig: plt.Figure, axes: Sequence[plt.Axes]) -> None:
    """One legend below the figure for the lines of ``axes`` (one column of :func:`draw_noise`): full
    batch norm's entries in the left column, mean-only batch norm's in the right."""
    entries = [e for ax in axes for e in zip(*ax.get_legend_handles_labels(), strict=True)]
    entries.sort(key=lambda e: "mean-only" in e[1])  # stable: keeps each column's order
    handles, labels = zip(*entries, strict=True)
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8.5)


def plot_noise(noises: Sequence[BatchNoise]) -> plt.Figure:
    """Static figure: one column per batch size, perturbations on top and σ/σ_B below (:func:`draw_noise`)."""
    fig, axes = figure(len(noises), nrows=2, height=2.7)
    with book_style():
        for col, noise in enumerate(noises):
            draw_noise(axes[:, col], noise)
            if col:
                axes[0, col].set_ylabel("")
                axes[1, col].set_ylabel("")
        _legend(fig, axes[:, 0])
    fig.suptitle(
        "Mean-only BN's noise is about Gaussian;\n"
        + r"full BN's scale factor $\sigma/\sigma_B$ is heavy-tailed in small batches"
    )
    return fig


def draw_noise_frame(noise: BatchNoise) -> plt.Figure:
    """One frame of :func:`noise_widget`: the two panels of :func:`draw_noise` side by side."""
    fig, axes = figure(ncols=2, height=3.4)
    with book_style():
        draw_noise(axes, noise)
        _legend(fig, axes)
    return fig


def noise_widget(
    t: Tensor,
    value: int = 8,
    cache: dict[int, BatchNoise] | None = None,
    sizes: Sequence[int] = BATCH_SIZES,
) -> widgets.VBox:
    """A batch-size slider over ``sizes`` showing :func:`draw_noise_frame` for the
    pre-activations ``t``, every frame drawn now (:func:`wnbook.widgets.frame_widget`). Measurements in
    ``cache`` (batch size -> :func:`batch_noise` result) are reused; the others are measured and added."""
    cache = {} if cache is None else cache

    def draw(batch_size: int) -> plt.Figure:
        if batch_size not in cache:
            cache[batch_size] = batch_noise(t, batch_size)
        return draw_noise_frame(cache[batch_size])

    slider = control("slider", list(sizes), value, "batch size")
    return frame_widget({"batch_size": slider}, draw)


# --------------------------------------------------------------------------------------------------
# Why it pairs with weight norm: data-dependent init sets only g
# --------------------------------------------------------------------------------------------------


def init_with_mean_only_bn(hidden: int = 32, init_batch: int = 500, seed: int = 0) -> dict[str, float]:
    """Weight norm + mean-only batch norm after data-dependent init, compared with full batch norm.

    A weight-normalized dense layer (with a bias) on MNIST-1D, followed by mean-only batch norm, is
    initialized by :func:`wnlib.data_dependent_init` on ``init_batch`` training examples. §3: a layer
    followed by mean-only batch norm gets only g ← 1/σ[t] (its bias is left alone: the batch norm
    removes the mean anyway). Then, on the init batch, the pair computes (t − μ[t])/σ[t] + β: exactly
    full batch norm's output (with γ = 1 and no eps). On another batch the two differ: batch norm divides
    by the new batch's σ_B, the weight-normalized layer keeps the scale g fixed.

    Returns: the largest change of the layer's bias, the mean |change| of g, the flag of the init
    report, the largest |difference| from batch norm on the init batch and on another batch of the
    same size, and the per-unit output standard deviations on the init batch (min and max).
    """
    from wnlib import experiments as ex

    data = ex.load_dataset("mnist1d")
    x = data.x_train.flatten(1)
    torch.manual_seed(seed)
    layer = wnn.Linear(x.shape[1], hidden)
    bn = wnn.MeanOnlyBatchNorm(hidden)
    with torch.no_grad():
        bn.bias.copy_(0.1 * torch.randn(hidden))
    model = nn.Sequential(layer, bn)
    bias_before, g_before = layer.bias.detach().clone(), layer.weight_g.detach().clone()
    x_init, x_other = x[:init_batch], x[init_batch : 2 * init_batch]
    report = wnlib.data_dependent_init(model, x_init)

    def gap(xb: Tensor) -> float:
        """Largest |WN + mean-only BN − full BN| on a batch (full BN: γ = 1, β = the MOBN bias, no eps)."""
        with torch.no_grad():
            wn_mobn = model.train()(xb)
            z = layer(xb)
            full_bn = (z - z.mean(0)) / z.std(0, unbiased=False) + bn.bias
        return float((wn_mobn - full_bn).abs().max())

    with torch.no_grad():
        out = model.train()(x_init)
        std = out.std(0, unbiased=False)
        bias_change = float((layer.bias - bias_before).abs().max())
        g_change = float((layer.weight_g - g_before).abs().mean())
    return {
        "bias_change": bias_change,
        "g_change": g_change,
        "followed_by_mean_only_bn": float(report[0].followed_by_mean_only_bn),
        "gap_init_batch": gap(x_init),
        "gap_other_batch": gap(x_other),
        "std_min": float(std.min()),
        "std_max": float(std.max()),
    }


# --------------------------------------------------------------------------------------------------
# A small training comparison
# --------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Test errors of a training comparison: ``errors[param]`` is (seeds × epochs), fractions in [0, 1];
    ``models[param]`` is the trained model of the last seed."""

    params: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    errors: dict[str, np.ndarray]
    models: dict[str, nn.Module]

    def final(self, param: str) -> tuple[float, float]:
        """Mean and standard deviation (over seeds, ddof 0) of the final test error, in %."""
        e = 100 * self.errors[param][:, -1]
        return float(e.mean()), float(e.std())

    def table(self) -> str:
        """One line per parameterization: final test error mean ± std over the seeds, and each seed's."""
        lines = [f"{'parameterization':<36} {'test error %':>14}   per seed"]
        for p in self.params:
            mean, std = self.final(p)
            seeds = ", ".join(f"{100 * e:.1f}" for e in self.errors[p][:, -1])
            lines.append(f"{LABELS[p]:<36} {mean:>7.1f} ± {std:<4.1f}   {seeds}")
        return "\n".join(lines)


def training_comparison(
    params: Sequence[str] = COMPARED,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 3,
    width: float = 0.5,
    lr: float = 0.003,
    batch_size: int = 100,
    max_batches: int | None = None,
) -> Comparison:
    """Train :mod:`wnlib.experiments`' small 1-D convnet on MNIST-1D under each parameterization.

    Every setting is given here (not taken from a preset), so the comparison does not change when the
    presets do: ``width`` × (16, 32) channels, Adam at ``lr`` with the paper's schedule (constant, then
    a linear decay over the second half), ``batch_size``, ``epochs``, one CPU thread. No tuning per
    parameterization: the same learning rate for all.
    """
    from wnlib import experiments as ex

    errors: dict[str, np.ndarray] = {}
    models: dict[str, nn.Module] = {}
    for p in params:
        rows = []
        for seed in seeds:
            config = ex.TrainConfig(
                dataset="mnist1d",
                arch="convnet",
                param=p,
                width=width,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                max_batches=max_batches,
            )
            model, result = ex.fit(config, device="cpu", quiet=True, threads=1)
            rows.append([e.test_error for e in result.epochs])
            models[p] = model
        errors[p] = np.array(rows)
    return Comparison(tuple(params), tuple(seeds), epochs, errors, models)


def plot_comparison(comp: Comparison, title: str | None = None) -> plt.Figure:
    """Final test error of each run (ticks) and the mean ± std over seeds (dot and bar), one row per
    parameterization; ``title`` should state the finding."""
    fig, ax = figure(1, height=0.45 * len(comp.params) + 1.0)
    with book_style():
        for row, p in enumerate(comp.params):
            final = 100 * comp.errors[p][:, -1]
            mean, std = comp.final(p)
            ax.errorbar(mean, row, xerr=std, fmt="o", ms=8, color=PALETTE[p], capsize=4, lw=2)
            ax.plot(final, np.full_like(final, row) + 0.18, "|", color=PALETTE[p], ms=9, mew=2)
            ax.annotate(
                f"{mean:.1f} ± {std:.1f} %",
                (mean + std, row),
                xytext=(8, -3),
                textcoords="offset points",
                fontsize=8.5,
            )
        ax.set_yticks(range(len(comp.params)), [LABELS[p] for p in comp.params])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ticks = [t for t in (2, 5, 10, 20, 50, 100) if t <= 1.5 * ax.get_xlim()[1]]
        ax.set_xticks(ticks, [f"{t}" for t in ticks])
        ax.set_xticks([], minor=True)
        ax.set_xlabel(f"test error after {comp.epochs} epochs (%, log scale; ticks: single seeds)")
        ax.set_title(title or f"MNIST-1D, small convnet, {len(comp.seeds)} seeds")
    return fig


# --------------------------------------------------------------------------------------------------
# Folding for inference
# --------------------------------------------------------------------------------------------------


def _count(model: nn.Module) -> tuple[int, int]:
    mobn = sum(isinstance(m, wnn.MeanOnlyBatchNorm) for m in model.modules())
    wn = sum(wnlib.is_weight_normed(m, "weight") for m in model.modules())
    return mobn, wn


def fold_check(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Fold a copy of ``model`` with :func:`wnlib.fold_for_inference` and compare eval outputs on ``x``.

    Returns the number of mean-only batch norms and weight-normalized layers before and after, the
    largest |difference| of the outputs, the largest output magnitude, the fraction of examples whose
    predicted class (argmax) is the same, and ``rounding_bound``: (number of weight-normalized layers)
    × ε × (largest output magnitude), ε the machine epsilon of the output's dtype. Folding changes only
    where each layer's bias b_layer − μ̂ + b is rounded (once, instead of term by term in every forward
    pass), an error of about one rounding of a layer's output, so a difference of the order of one ε of
    the output's size per folded layer is what float rounding explains; more would be a real change.
    """
    model = copy.deepcopy(model).eval()
    folded = wnlib.fold_for_inference(copy.deepcopy(model).eval())
    with torch.no_grad():
        a, b = model(x), folded(x)
    (mobn_before, wn_before), (mobn_after, wn_after) = _count(model), _count(folded)
    return {
        "mean_only_bn_before": mobn_before,
        "weight_normed_before": wn_before,
        "mean_only_bn_after": mobn_after,
        "weight_normed_after": wn_after,
        "max_abs_diff": float((a - b).abs().max()),
        "max_abs_output": float(a.abs().max()),
        "same_prediction": float((a.argmax(1) == b.argmax(1)).float().mean()),
        "rounding_bound": wn_before * torch.finfo(a.dtype).eps * float(a.abs().max()),
    }
