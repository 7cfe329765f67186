"""Computations and figures for the Initialization chapter (Salimans & Kingma 2016, §3, eq. 5–6).

The chapter follows the pre-activations of a deep ReLU network on scikit-learn's digits through its
layers, with and without :func:`wnlib.data_dependent_init`:

- :func:`wnbook.models.deep_mlp` builds the network (weight-normalized ``Linear`` layers, torch's
  default init), :func:`wnbook.models.set_fixed_scale` gives every unit the same g (a data-free choice
  of scale);
- :func:`preactivation_profile` measures, layer by layer, the per-feature mean and standard deviation
  of t over a batch; :func:`depth_profiles` does so for the four settings the figures compare;
- :func:`sharded_init` shows why the distributed init all-reduces (count, Σt, Σt²);
- :func:`~wnbook.training.train_curves` is a short training run from each initialization;
- ``plot_*`` and :func:`depth_widget` draw them.

Everything is seeded and small enough for one CPU thread.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

import wnlib
from wnbook.datasets import digits
from wnbook.models import DEPTH, deep_mlp, set_fixed_scale, weight_normed_layers
from wnbook.style import LABELS, PALETTE, book_style, figure
from wnbook.training import INIT_BATCH
from wnbook.widgets import control, frame_widget
from wnlib import nn as wnn
from wnlib.init import output_axis

SCALES = (0.5, 1.0, math.sqrt(2.0), 2.0)  # the settings of the static figures
SETTINGS = ("default", "fixed", "ddi", "ddi_heldout")  # what depth_profiles returns

# How each setting is drawn: colour from the book's palette, a label, a line style.
STYLE: dict[str, dict] = {
    "default": {"color": PALETTE["normal"], "label": "torch's default init (g = ‖v‖)", "ls": "-"},
    "fixed": {"color": PALETTE["weightnorm"], "label": "weight norm, every g = s, b = 0", "ls": "-"},
    "ddi": {
        "color": PALETTE["weightnorm_init"],
        "label": LABELS["weightnorm_init"] + ", init batch",
        "ls": "-",
    },
    "ddi_heldout": {
        "color": PALETTE["weightnorm_init"],
        "label": LABELS["weightnorm_init"] + ", held-out batch",
        "ls": "--",
    },
}


# --------------------------------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------------------------------


def digits_batches(n_init: int = INIT_BATCH, images: bool = False) -> tuple[Tensor, Tensor]:
    """The init batch (the first ``n_init`` training digits, a random sample: the split is shuffled)
    and a held-out batch (the 360 test digits), as (N, 64) rows or, with ``images``, (N, 1, 8, 8)."""
    data = digits()
    x_train, x_test = data.x_train, data.x_test
    x_init, x_heldout = x_train[:n_init], x_test
    return (x_init, x_heldout) if images else (x_init.flatten(1), x_heldout.flatten(1))


# --------------------------------------------------------------------------------------------------
# Statistics of the pre-activations, layer by layer
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepthProfile:
    """Per-layer statistics of each weight-normalized layer's output y = g·t + b over a batch.

    For layer k, μ and σ are per-feature mean and (population) standard deviation over the batch (and
    positions, for convolutions). ``std[k]`` is σ averaged over features, ``std_min``/``std_max`` its
    extremes; ``mean_abs[k]`` is |μ| averaged over features, ``mean_abs_max`` its largest value.
    ``cosine[k]`` is the mean cosine similarity between two examples' ReLU(y) (1: all alike).
    """

    mean_abs: np.ndarray
    mean_abs_max: np.ndarray
    std: np.ndarray
    std_min: np.ndarray
    std_max: np.ndarray
    cosine: np.ndarray

    @property
    def depth(self) -> int:
        return len(self.std)

    @property
    def drift(self) -> float:
        """How much the spread changed from the first layer to the last: std[-1] / std[0]."""
        return float(self.std[-1] / self.std[0])

    @property
    def per_layer_factor(self) -> float:
        """The geometric-mean factor by which σ changes from one layer to the next."""
        return self.drift ** (1.0 / (self.depth - 1))

    def max_std_error(self, target: float) -> float:
        """The largest |σ − target| over all features of all layers."""
        return float(max(np.abs(self.std_min - target).max(), np.abs(self.std_max - target).max()))


@torch.no_grad()
def preactivation_profile(model: nn.Module, x: Tensor) -> DepthProfile:
    """Run ``model`` on ``x`` and measure each weight-normalized layer's output (its pre-activation)."""
    outputs: list[tuple[nn.Module, Tensor]] = []
    handles = [
        m.register_forward_hook(lambda m, args, y: outputs.append((m, y.detach())))
        for m in weight_normed_layers(model)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for m, y in outputs:
        axis, n = output_axis(m), y.shape[0]
        h = y.relu().reshape(n, -1).double()  # one row per example
        h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-300)  # scale-free, even for tiny outputs
        cosine = (h.sum(0).square().sum() - h.square().sum()) / (n * (n - 1))  # over pairs i ≠ j
        y = y.movedim(axis, -1).reshape(-1, y.shape[axis]).double()
        mu, sigma = y.mean(0), y.std(0, unbiased=False)
        rows.append((mu.abs().mean(), mu.abs().max(), sigma.mean(), sigma.min(), sigma.max(), cosine))
    cols = np.array(rows, dtype=np.float64).T
    return DepthProfile(*cols)


@functools.lru_cache(maxsize=64)
def depth_profiles(depth: int = DEPTH, scale: float = 1.0, seed: int = 0) -> dict[str, DepthProfile]:
    """The network of :func:`~wnbook.models.deep_mlp` under four settings, measured layer by layer.

    - ``default``: torch's default init (g = ‖v‖), on the init batch;
    - ``fixed``: every g = ``scale`` and b = 0 (:func:`~wnbook.models.set_fixed_scale`), on the init batch;
    - ``ddi``: :func:`wnlib.data_dependent_init` with ``init_scale=scale`` on the init batch (eq. 5–6),
      measured on that batch;
    - ``ddi_heldout``: the same network measured on the held-out batch.
    """
    x_init, x_heldout = digits_batches()
    model = deep_mlp(depth, seed=seed)
    out = {"default": preactivation_profile(model, x_init)}
    out["fixed"] = preactivation_profile(set_fixed_scale(copy.deepcopy(model), scale), x_init)
    wnlib.data_dependent_init(model, x_init, init_scale=scale)
    out["ddi"] = preactivation_profile(model, x_init)
    out["ddi_heldout"] = preactivation_profile(model, x_heldout)
    return out


def fixed_scale_profiles(
    scales: Sequence[float] = SCALES, depth: int = DEPTH, seed: int = 0
) -> dict[float, DepthProfile]:
    """The network with every g = s (b = 0), for each s in ``scales``, on the init batch."""
    return {s: depth_profiles(depth, s, seed)["fixed"] for s in scales}


BATCH_SIZES = (100, 250, 500, 1000)  # init batch sizes of the held-out figure


def heldout_profiles(
    sizes: Sequence[int] = BATCH_SIZES, depth: int = DEPTH, scale: float = 1.0, seed: int = 0
) -> dict[int, DepthProfile]:
    """After data-dependent init on the first n training digits, for each n in ``sizes``: the
    statistics on the held-out batch (the test digits), which the init never saw."""
    out = {}
    for n in sizes:
        x_init, x_heldout = digits_batches(n)
        model = deep_mlp(depth, seed=seed)
        wnlib.data_dependent_init(model, x_init, init_scale=scale)
        out[n] = preactivation_profile(model, x_heldout)
    return out


# --------------------------------------------------------------------------------------------------
# The distributed case, simulated in one process
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardedInit:
    """The first layer's g after data-dependent init, on a batch split into shards ("ranks").

    ``g_per_rank[r]``: what rank r computes from its own shard alone (no all-reduce);
    ``g_pooled``: from the summed (count, Σt, Σt²) of all shards, what every rank computes with a
    process group; ``g_full``: a single-process init on the whole batch;
    ``g_all_layers_per_rank``: every layer's g concatenated, per rank, without all-reduce.
    """

    g_per_rank: list[Tensor]
    g_pooled: Tensor
    g_full: Tensor
    g_all_layers_per_rank: list[Tensor]

    @property
    def rank_disagreement(self) -> float:
        """Largest relative difference of any unit's g between rank 0 and any other rank, all layers."""
        g0 = self.g_all_layers_per_rank[0]
        return float(max(((g - g0).abs() / g0).max() for g in self.g_all_layers_per_rank[1:]))

    @property
    def pooled_error(self) -> float:
        """Largest relative difference between the pooled g and the whole-batch g."""
        return float(((self.g_pooled - self.g_full).abs() / self.g_full).max())


@torch.no_grad()
def sharded_init(n_ranks: int = 2, depth: int = DEPTH, scale: float = 1.0, seed: int = 0) -> ShardedInit:
    """Split the init batch into ``n_ranks`` shards and initialize the network of
    :func:`wnbook.models.deep_mlp` from each shard alone, from the pooled sums (count, Σt, Σt²) — the
    all-reduce of ``process_group=...`` done by hand for the first layer — and from the whole batch."""
    x_init, _ = digits_batches()
    shards = x_init.chunk(n_ranks)
    base = deep_mlp(depth, seed=seed)
    per_rank, all_layers = [], []
    for shard in shards:
        model = copy.deepcopy(base)
        wnlib.data_dependent_init(model, shard, init_scale=scale)
        per_rank.append(model[0].weight_g.detach().clone())
        all_layers.append(torch.cat([m.weight_g.detach().flatten() for m in weight_normed_layers(model)]))
    first = base[0]
    direction = first.weight_v / first.weight_v.norm(dim=1, keepdim=True)
    count, sum_t, sum_t2 = 0, 0.0, 0.0
    for shard in shards:  # what each rank contributes to the all-reduce (eq. 5: t = v·x/‖v‖)
        t = (shard @ direction.T).double()
        count, sum_t, sum_t2 = count + t.shape[0], sum_t + t.sum(0), sum_t2 + (t * t).sum(0)
    mu = sum_t / count
    sigma = (sum_t2 / count - mu * mu).sqrt()
    full = copy.deepcopy(base)
    wnlib.data_dependent_init(full, x_init, init_scale=scale)
    return ShardedInit(per_rank, (scale / sigma).float(), full[0].weight_g.detach().clone(), all_layers)


# --------------------------------------------------------------------------------------------------
# A short training run from each initialization
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def scale_label(s: float) -> str:
    """A scale for a legend: √2 written as such, other values with 3 significant digits."""
    return "√2" if math.isclose(s, math.sqrt(2.0)) else f"{s:.3g}"


def _layers(profile: DepthProfile) -> np.ndarray:
    return np.arange(1, profile.depth + 1)


def plot_fixed_scales(profiles: dict[float, DepthProfile], default: DepthProfile) -> plt.Figure:
    """σ of the pre-activations against depth for a fixed g = s at every unit, and for torch's default."""
    fig, ax = figure(height=3.4)
    with book_style():
        shades = plt.get_cmap("Blues")(np.linspace(0.45, 1.0, len(profiles)))
        for (s, p), c in zip(profiles.items(), shades, strict=True):
            ax.plot(_layers(p), p.std, color=c, marker="o", ms=3, label=f"every g = {scale_label(s)}, b = 0")
        ax.plot(_layers(default), default.std, **_style("default"), marker="o", ms=3)
        ax.set(
            yscale="log",
            xlabel="layer",
            ylabel="σ of pre-activation (mean over units)",
            title="With a data-free scale, σ grows or shrinks geometrically with depth",
        )
        ax.legend(loc="lower left", fontsize=8.5)
    return fig


def _style(setting: str) -> dict:
    s = STYLE[setting]
    return {"color": s["color"], "label": s["label"], "ls": s["ls"]}


def draw_depth_profiles(ax: plt.Axes, profiles: dict[str, DepthProfile], scale: float) -> None:
    """One panel: σ per layer for the four settings of :func:`depth_profiles`, log scale."""
    for setting in SETTINGS:
        p = profiles[setting]
        ax.plot(_layers(p), p.std, lw=1.6, **_style(setting))
    ax.axhline(scale, color="0.6", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="layer")


def plot_scale_grid(scales: Sequence[float] = SCALES, depth: int = DEPTH) -> plt.Figure:
    """The static version of the widget: one panel per scale s, the four settings in each."""
    fig, axes = figure(ncols=len(scales), height=3.3, sharey=True)
    with book_style():
        for ax, s in zip(axes, scales, strict=True):
            draw_depth_profiles(ax, depth_profiles(depth, s), s)
            ax.set_title(f"s = {scale_label(s)}")
        axes[0].set_ylabel("σ of pre-activation")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8.5)
        fig.suptitle("Data-dependent init puts every layer at σ = s (dotted); a fixed g = s drifts")
    return fig


#: The widget's grid, 5 × 5 = 25 frames: depths, and scales s in factors of 2 around 1 (√2 is in the
#: static figure). Every frame is a PNG stored in the notebook, so the grid is kept small.
WIDGET_DEPTHS = (5, 10, 20, 30, 50)
WIDGET_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def draw_depth_frame(depth: int, scale: float) -> plt.Figure:
    """One frame of :func:`depth_widget`: :func:`draw_depth_profiles` for ``depth`` layers at scale s."""
    fig, ax = figure(height=3.6)
    with book_style():
        draw_depth_profiles(ax, depth_profiles(depth, float(scale)), float(scale))
        ax.set(
            ylabel="σ of pre-activation (mean over units)",
            title=f"{depth} layers, s = {scale_label(scale)}",
        )
        ax.legend(loc="lower left", fontsize=8.5)
    return fig


def depth_widget(
    depths: Sequence[int] = WIDGET_DEPTHS, scales: Sequence[float] = WIDGET_SCALES
) -> widgets.VBox:
    """Depth and scale s as sliders over :func:`draw_depth_frame`, every frame drawn now
    (:func:`wnbook.widgets.frame_widget`); it opens at :data:`~wnbook.models.DEPTH` layers and s = 1."""
    controls = {
        "depth": control("slider", list(depths), DEPTH, "depth"),
        "scale": control("slider", list(scales), 1.0, "scale s", labels=[scale_label(s) for s in scales]),
    }
    return frame_widget(controls, draw_depth_frame)


def plot_heldout(profiles: dict[int, DepthProfile], scale: float = 1.0) -> plt.Figure:
    """σ and |μ| per layer on held-out data after data-dependent init from batches of several sizes."""
    fig, (ax_s, ax_m) = figure(ncols=2, height=3.1)
    with book_style():
        shades = plt.get_cmap("Blues")(np.linspace(0.4, 1.0, len(profiles)))
        for (n, p), c in zip(profiles.items(), shades, strict=True):
            ax_s.plot(_layers(p), p.std / scale, color=c, marker="o", ms=2.5, label=f"init batch of {n}")
            ax_m.plot(_layers(p), p.mean_abs / scale, color=c, marker="o", ms=2.5, label=f"init batch of {n}")
        ax_s.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax_s.set(xlabel="layer", ylabel="σ / s  (mean over units)", title="σ / s")
        ax_m.set(xlabel="layer", ylabel="|μ| / s  (mean over units)", title="|μ| / s")
        fig.suptitle("On held-out digits the statistics stay close; closer after a larger init batch")
        ax_s.legend(loc="upper left", fontsize=8.5)
    return fig


def running_mean(values: Sequence[float], window: int = 10) -> np.ndarray:
    """Means over ``window`` consecutive values; entry i ends at step i + ``window`` (steps from 1)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    return np.convolve(np.asarray(values, dtype=np.float64), np.ones(window) / window, mode="valid")


def plateau_steps(loss: Sequence[float], level: float, band: float, window: int = 10) -> int:
    """How many steps the loss stays at ``level``: the last step s such that every running mean over
    ``window`` steps ending at or before s is within ``band`` of ``level`` (0 if the first is not)."""
    outside = np.flatnonzero(np.abs(running_mean(loss, window) - level) > band)
    if len(outside) == 0:
        return len(loss)
    return 0 if outside[0] == 0 else int(outside[0] + window - 1)


def plot_training(curves: dict[str, dict[str, object]], window: int = 10, scale: float = 1.0) -> plt.Figure:
    """Training loss (a running mean over ``window`` steps) from each initialization (of
    :func:`wnbook.training.train_curves` with this ``scale``)."""
    fig, ax = figure(height=3.2)
    with book_style():
        for init, run in curves.items():
            loss = np.asarray(run["loss"])
            smooth = running_mean(loss, window)
            label = STYLE[init]["label"].replace(", init batch", "").replace("= s", f"= {scale_label(scale)}")
            label += f": test error {run['test_error']:.1%}"
            ax.plot(np.arange(window, len(loss) + 1), smooth, color=STYLE[init]["color"], label=label)
        ax.set(
            xlabel="step (minibatch of 100)",
            ylabel=f"training loss (mean of {window} steps)",
            title="From torch's default the deep net stalls; from data it trains at once",
        )
        fig.legend(loc="outside lower center", fontsize=8.5)
    return fig


# --------------------------------------------------------------------------------------------------
# Two processes (the chapter's gloo demonstration)
# --------------------------------------------------------------------------------------------------


def bn_net() -> nn.Sequential:
    """64→32→16→10 with a BatchNorm1d and a MeanOnlyBatchNorm between the weight-normalized layers;
    seeded, so every process builds the same v."""
    torch.manual_seed(0)
    return nn.Sequential(
        wnn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), wnn.Linear(32, 16),
        wnn.MeanOnlyBatchNorm(16), nn.ReLU(), wnn.Linear(16, 10),
    )  # fmt: skip


def _init_on_rank(rank: int, port: int, out: str, shards: list[Tensor]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = bn_net()
    try:
        wnlib.data_dependent_init(net, shards[rank], process_group=True)
        result: dict = net.state_dict()
    except ValueError as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    dist.destroy_process_group()
    torch.save(result, f"{out}/rank{rank}.pt")


def two_ranks(shards: list[Tensor]) -> list[dict]:
    """:func:`wnlib.data_dependent_init` of :func:`bn_net` in two gloo processes, rank r on
    ``shards[r]``: each rank's state dict, or ``{"error": message}`` if it raised. The processes are
    spawned, not forked (forking a process that has run torch's thread pools can deadlock)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s, tempfile.TemporaryDirectory() as out:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        mp.start_processes(_init_on_rank, args=(port, out, shards), nprocs=2, start_method="spawn")
        return [torch.load(f"{out}/rank{r}.pt", weights_only=True) for r in range(2)]
