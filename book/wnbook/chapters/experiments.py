"""Computations and figures of the Experiments chapter (``book/experiments.ipynb``).

Salimans & Kingma (2016), §5.1: the same network trained under six parameterizations (Table 1, Figure 2),
here at CPU scale with :mod:`wnlib.experiments` (preset ``cpu-small``: MNIST-1D, a small 1-D convnet,
20 epochs of Adam with the paper's schedule).

Every result the chapter shows comes from the on-disk cache of :mod:`wnlib.experiments` in a folder
committed with the book, ``wnbook/data/experiments`` (:func:`wnbook.files.committed_cache`): the runs
were trained once, by the calls below, and re-executing the notebook reads them back, so its outputs do
not depend on the machine that re-executes it. Pass ``use_cache=False`` (or delete the folder) to train
and time again.

- :func:`main_grid`: the six parameterizations × :data:`SEEDS` at the preset's learning rates;
- :func:`lr_grid`: the six parameterizations × :data:`LEARNING_RATES` × :data:`LR_SEEDS`;
- :func:`beta1_ablation`: one parameterization with β1 kept at 0.9 through the decay;
- :func:`epoch_costs`: seconds per training epoch, measured round-robin
  (:func:`wnlib.experiments.benchmark_epochs`);
- :func:`compare`, :func:`difference`, :func:`ranking`, :func:`faster`, :func:`loss_jump`: the numbers
  behind the chapter's statements;
- ``plot_*``, :func:`lr_frame` and :func:`lr_widget`: the figures and the interactive view.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np

import wnlib
from wnbook.files import committed_cache
from wnbook.style import LABELS, PALETTE, book_style, figure
from wnbook.tables import markdown_table
from wnlib import experiments as ex
from wnlib.experiments import RunResult

if TYPE_CHECKING:
    import ipywidgets as widgets

__all__ = [
    "ABLATED",
    "DEVICE",
    "FRAME_DPI",
    "LEARNING_RATES",
    "LR_SEEDS",
    "PAPER_TABLE1",
    "PRESET",
    "SEEDS",
    "TABLE1_ROWS",
    "TIMING_REPEATS",
    "Difference",
    "add_seeds",
    "beta1_ablation",
    "by_param",
    "compare",
    "comparison_markdown",
    "compute_minutes",
    "configs",
    "cost_markdown",
    "difference",
    "difference_between",
    "epoch_costs",
    "faster",
    "loss_jump",
    "lr_frame",
    "lr_grid",
    "lr_summary",
    "lr_widget",
    "main_grid",
    "mean_curve",
    "parameterization_rows",
    "plot_comparison",
    "plot_curves",
    "plot_lr_curves",
    "plot_lr_sensitivity",
    "provenance",
    "ranking",
]

#: The preset of every run in the chapter (see :mod:`wnlib.experiments.presets`).
PRESET = "cpu-small"
#: Seeds of the main comparison.
SEEDS: tuple[int, ...] = (0, 1, 2)
#: Learning rates of the interactive view (the CPU presets' rates are among them).
LEARNING_RATES: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03)
#: Seeds at every rate of the interactive view (fewer than :data:`SEEDS`, to keep the compute small).
LR_SEEDS: tuple[int, ...] = (0, 1)
#: The runs are cached per device type: the committed ones are CPU runs, whatever the reader has.
DEVICE = "cpu"
#: Resolution of the interactive view's frames (24 of them, each saved in the notebook).
FRAME_DPI = 100
#: Repeats of the round-robin epoch timing.
TIMING_REPEATS = 5

#: Test error (%) on CIFAR-10 of the paper's Table 1 (Salimans & Kingma 2016, §5.1), keyed by the
#: parameterization here that matches each row. The paper's "weight norm" row is ``weightnorm_init``: the
#: paper's code (openai/weightnorm, ``lasagne/nn.py``) gives its weight-norm layers the data-dependent init
#: of §3 (and ``lasagne/train.py`` runs that init for every model), while ``weightnorm`` here keeps torch's
#: default init. ``weightnorm`` has no row in Table 1.
PAPER_TABLE1: dict[str, float] = {
    "normal": 8.43,
    "batchnorm": 8.05,
    "weightnorm_init": 8.46,
    "meanonly_bn": 8.52,
    "weightnorm_meanonly": 7.31,
}
#: The names of those rows in the paper's Table 1.
TABLE1_ROWS: dict[str, str] = {
    "normal": "normal param.",
    "batchnorm": "batch norm.",
    "weightnorm_init": "weight norm.",
    "meanonly_bn": "mean-only B.N.",
    "weightnorm_meanonly": "W.N. + mean-only B.N.",
}
#: The parameterization whose β1 switch the chapter ablates (see :func:`beta1_ablation`).
ABLATED = "weightnorm_init"


def _dir(cache_dir: str | os.PathLike[str] | None) -> str:
    return str(committed_cache() if cache_dir is None else cache_dir)


def configs() -> list[ex.TrainConfig]:
    """Every training configuration the chapter uses: the main grid, the learning-rate grid (the
    preset's rate of each parameterization belongs to both; it is listed once) and the β1 ablation."""
    out: list[ex.TrainConfig] = []
    for seed in SEEDS:
        out += [ex.make_config(PRESET, p, seed) for p in ex.PARAMETERIZATIONS]
    for lr in LEARNING_RATES:
        for seed in LR_SEEDS:
            out += [ex.make_config(PRESET, p, seed, lr=lr) for p in ex.PARAMETERIZATIONS]
    out += [ex.make_config(PRESET, ABLATED, seed, beta1_decay=0.9) for seed in SEEDS]
    return list(dict.fromkeys(out))


def main_grid(
    cache_dir: str | os.PathLike[str] | None = None, *, use_cache: bool = True, workers: int = 1
) -> list[RunResult]:
    """The six parameterizations × :data:`SEEDS` of :data:`PRESET` at the preset's learning rates
    (:func:`wnlib.experiments.run_grid`), from ``cache_dir`` (default: the committed cache)."""
    return ex.run_grid(
        PRESET,
        seeds=SEEDS,
        device=DEVICE,
        quiet=True,
        use_cache=use_cache,
        cache_dir=_dir(cache_dir),
        workers=workers,
    )


def lr_grid(
    cache_dir: str | os.PathLike[str] | None = None, *, use_cache: bool = True, workers: int = 1
) -> dict[float, list[RunResult]]:
    """learning rate -> the six parameterizations × :data:`LR_SEEDS` trained at that rate (every
    parameterization at the same rate), from ``cache_dir`` (default: the committed cache)."""
    return {
        lr: ex.run_grid(
            PRESET,
            seeds=LR_SEEDS,
            device=DEVICE,
            quiet=True,
            use_cache=use_cache,
            cache_dir=_dir(cache_dir),
            workers=workers,
            lr=lr,
        )
        for lr in LEARNING_RATES
    }


def beta1_ablation(
    cache_dir: str | os.PathLike[str] | None = None, *, use_cache: bool = True
) -> list[RunResult]:
    """:data:`ABLATED` × :data:`SEEDS` as in :func:`main_grid` but with β1 kept at 0.9 when the rate
    starts to decay (``beta1_decay=0.9``): is the switch of β1 to 0.5 what makes the training loss jump?"""
    return ex.run_grid(
        PRESET,
        params=(ABLATED,),
        seeds=SEEDS,
        device=DEVICE,
        quiet=True,
        use_cache=use_cache,
        cache_dir=_dir(cache_dir),
        beta1_decay=0.9,
    )


def epoch_costs(cache_dir: str | os.PathLike[str] | None = None, *, use_cache: bool = True) -> list[dict]:
    """Seconds per training epoch of each parameterization, :data:`TIMING_REPEATS` round-robin repeats
    of one epoch each (:func:`wnlib.experiments.benchmark_epochs`), from ``cache_dir``."""
    return ex.benchmark_epochs(
        PRESET,
        repeats=TIMING_REPEATS,
        device=DEVICE,
        quiet=True,
        use_cache=use_cache,
        cache_dir=_dir(cache_dir),
    )


# --------------------------------------------------------------------------------------------------
# The numbers behind the chapter's statements
# --------------------------------------------------------------------------------------------------


def provenance(results: Iterable[RunResult]) -> dict[str, Any]:
    """Where the runs ran: device types, ranks, wnlib versions (sets) and their count."""
    results = list(results)
    return {
        "runs": len(results),
        "devices": sorted({r.device for r in results}),
        "world_sizes": sorted({r.world_size for r in results}),
        "wnlib_versions": sorted({r.wnlib_version for r in results}),
    }


def compute_minutes(results: Iterable[RunResult]) -> float:
    """Total wall-clock minutes the runs took (data-dependent init, training and evaluation passes)."""
    seconds = sum(r.init_seconds + sum(e.seconds + e.eval_seconds for e in r.epochs) for r in results)
    return seconds / 60


def parameterization_rows(input_shape: Sequence[int] = (1, 40)) -> list[dict[str, str]]:
    """One row per parameterization: how its layers are built and initialized, the trainable parameters
    of :data:`PRESET`'s network on inputs of ``input_shape`` (MNIST-1D's), and the matching row of the
    paper's Table 1 (see :data:`PAPER_TABLE1`)."""
    config = ex.make_config(PRESET)
    normalizers = {None: "—", "batch": "batch norm", "mean_only": "mean-only BN"}
    rows = []
    for name, p in ex.PARAMETERIZATIONS.items():
        if p.fold:
            weights = "w (folded)"
        elif p.weight_norm:
            weights = "g·v/‖v‖"
        else:
            weights = "w"
        model = ex.build_model(config.arch, input_shape, 10, name, width=config.width)
        if p.fold:  # normal: built with weight norm, initialized, then folded into plain weights
            for module in model.modules():
                for weight in list(wnlib.weight_norm_specs(module)):
                    wnlib.remove_weight_norm(module, weight)
        rows.append(
            {
                "name": f"`{name}`",
                "weights": weights,
                "normalizer": normalizers[p.normalizer],
                "init": "from data (§3)" if p.data_init else "default",
                "parameters": f"{sum(t.numel() for t in model.parameters() if t.requires_grad):,}",
                "Table 1 row": TABLE1_ROWS.get(name, "—"),
            }
        )
    return rows


def _final_errors(runs: Sequence[RunResult]) -> list[float]:
    return [100 * r.final_test_error for r in runs]


def by_param(results: Iterable[RunResult]) -> dict[str, list[RunResult]]:
    """The runs grouped by parameterization, in the order of :data:`wnlib.experiments.PARAMETERIZATIONS`."""
    groups: dict[str, list[RunResult]] = {p: [] for p in ex.PARAMETERIZATIONS}
    for r in results:
        groups[r.config.param].append(r)
    return {p: runs for p, runs in groups.items() if runs}


@dataclass(frozen=True)
class Difference:
    """Final test error of parameterization ``a`` minus that of ``b`` (percentage points, means over
    seeds), with the standard error of that difference, √(s_a²/n_a + s_b²/n_b).

    ``within_noise``: |difference| < 2 standard errors, a rough two-sigma test (with three seeds per
    side, the standard deviations themselves are uncertain by about half their size).
    """

    a: str
    b: str
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    diff: float
    se: float

    @property
    def within_noise(self) -> bool:
        return abs(self.diff) < 2 * self.se

    @property
    def a_better(self) -> bool:
        """``a`` has the lower mean error by more than 2 standard errors."""
        return self.diff < -2 * self.se

    @property
    def b_better(self) -> bool:
        return self.diff > 2 * self.se

    def verdict(self) -> str:
        if self.a_better:
            return f"{self.a} lower"
        if self.b_better:
            return f"{self.b} lower"
        return "within noise"


def difference(results: Iterable[RunResult], a: str, b: str) -> Difference:
    """:class:`Difference` of the final test errors of parameterizations ``a`` and ``b`` in ``results``."""
    groups = by_param(results)
    return difference_between(groups[a], groups[b], a, b)


def difference_between(
    runs_a: Sequence[RunResult], runs_b: Sequence[RunResult], a: str = "a", b: str = "b"
) -> Difference:
    """:class:`Difference` of the final test errors of two groups of runs, named ``a`` and ``b``."""
    ea, eb = _final_errors(runs_a), _final_errors(runs_b)
    ma, mb = statistics.fmean(ea), statistics.fmean(eb)
    sa = statistics.stdev(ea) if len(ea) > 1 else 0.0
    sb = statistics.stdev(eb) if len(eb) > 1 else 0.0
    se = math.sqrt(sa**2 / len(ea) + sb**2 / len(eb))
    return Difference(a, b, ma, mb, sa, sb, ma - mb, se)


def ranking(results: Iterable[RunResult]) -> list[str]:
    """The parameterizations from the lowest mean final test error to the highest."""
    groups = by_param(results)
    return sorted(groups, key=lambda p: statistics.fmean(_final_errors(groups[p])))


def compare(results: Iterable[RunResult]) -> list[dict[str, Any]]:
    """The paper's Table 1 next to this book's runs: per parameterization, the paper's CIFAR-10 test error
    and its rank among Table 1's five rows, and here the MNIST-1D final test error (mean, sample std
    over seeds) and its rank among the same five (``weightnorm_init``, not in Table 1, unranked)."""
    results = list(results)
    groups = by_param(results)
    paper_rank = {p: i + 1 for i, p in enumerate(sorted(PAPER_TABLE1, key=PAPER_TABLE1.get))}
    ours = [p for p in ranking(results) if p in PAPER_TABLE1]
    our_rank = {p: i + 1 for i, p in enumerate(ours)}
    rows = []
    for p, runs in groups.items():
        errors = _final_errors(runs)
        rows.append(
            {
                "param": p,
                "label": ex.PARAMETERIZATIONS[p].label,
                "paper_error": PAPER_TABLE1.get(p, math.nan),
                "paper_rank": paper_rank.get(p),
                "error_mean": statistics.fmean(errors),
                "error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "seeds": len(runs),
                "rank": our_rank.get(p),
            }
        )
    return rows


def _percent(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.2f} %"


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`compare`'s rows as a Markdown table (errors in %, two decimals), the columns a narrow
    screen must show first: the parameterization and its error here (MNIST-1D, mean ± std over seeds),
    then the paper's (CIFAR-10)."""
    cells = [
        {
            "parameterization": r["label"],
            "test error here": f"{r['error_mean']:.2f} ± {r['error_std']:.2f} %",
            "rank here": str(r["rank"] or "—"),
            "paper's test error": _percent(r["paper_error"]),
            "paper's rank": str(r["paper_rank"] or "—"),
        }
        for r in rows
    ]
    return markdown_table(cells, align="lrrrr")


def mean_curve(runs: Sequence[RunResult], key: str = "test_error") -> np.ndarray:
    """The mean over ``runs`` of ``key`` per epoch (NaN-padded where a diverged run stopped early)."""
    length = max(r.config.epochs for r in runs)
    table = np.full((len(runs), length), np.nan)
    for i, r in enumerate(runs):
        values = [getattr(e, key) for e in r.epochs]
        table[i, : len(values)] = values
    with np.errstate(all="ignore"):
        return np.nanmean(table, axis=0)


def faster(results: Iterable[RunResult], a: str, b: str, key: str = "train_loss") -> np.ndarray:
    """Per epoch, whether ``a``'s mean ``key`` (over seeds) is below ``b``'s."""
    groups = by_param(results)
    return mean_curve(groups[a], key) < mean_curve(groups[b], key)


def loss_jump(run: RunResult) -> float:
    """How much the training loss jumps when the decay begins: the larger epoch-mean training loss of
    the first two epochs of the decay over that of the last epoch before it.

    At the decay's first step the paper's schedule (§5.1) lowers Adam's β1 from 0.9 to 0.5 while the
    rate is still at its maximum; a ratio below 1 means the loss kept falling.
    """
    start = next(i for i, e in enumerate(run.epochs) if e.lr < run.config.lr)
    after = [e.train_loss for e in run.epochs[start : start + 2]]
    return max(after) / run.epochs[start - 1].train_loss


def cost_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`epoch_costs`' rows as a Markdown table."""
    cells = [
        {
            "parameterization": r["label"],
            "fastest epoch (seconds)": f"{r['min_seconds']:.3f}",
            "median epoch (seconds)": f"{r['median_seconds']:.3f}",
            "median relative to normal": f"{r['median_relative_to_normal']:.2f}×",
        }
        for r in rows
    ]
    return markdown_table(cells, align="lrrr")


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _plain_log_ticks(ax: plt.Axes, ticks: Sequence[float] = (0.5, 1, 2, 5, 10, 20, 50, 100)) -> None:
    """Label a log-scale y axis with plain numbers (1, 2, 5, ...) instead of powers of ten."""
    low, high = ax.get_ylim()
    shown = [t for t in ticks if low <= t <= high]
    ax.set_yticks(shown, [f"{t:g}" for t in shown])
    ax.set_yticks([], minor=True)
    ax.set_ylim(low, high)


def _legend_below(fig: plt.Figure, ax: plt.Axes, ncols: int = 3) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8.5)


def plot_comparison(rows: Sequence[dict[str, Any]], title: str) -> plt.Figure:
    """Left: the paper's CIFAR-10 test errors (Table 1). Right: this book's MNIST-1D final test errors,
    mean ± std over seeds (dot and bar) and single seeds (ticks). One row per parameterization; ``title``
    states the finding."""
    fig, axes = figure(2, height=3.4)
    with book_style():
        for row, r in enumerate(rows):
            color = PALETTE[r["param"]]
            if not math.isnan(r["paper_error"]):
                axes[0].barh(row, r["paper_error"], color=color, height=0.6)
                axes[0].annotate(
                    f"{r['paper_error']:.2f}",
                    (r["paper_error"], row),
                    xytext=(3, -3),
                    textcoords="offset points",
                    fontsize=8.5,
                )
            else:
                axes[0].annotate("not in Table 1", (0.15, row), va="center", fontsize=8.5, color="0.4")
            axes[1].errorbar(r["error_mean"], row, xerr=r["error_std"], fmt="o", color=color, capsize=3, ms=6)
        for ax in axes:
            ax.set_yticks(range(len(rows)), [LABELS[r["param"]] for r in rows])
            ax.invert_yaxis()
        axes[1].set_yticklabels([])
        axes[0].set(xlim=(0, 9.9), xlabel="CIFAR-10 test error (%)", title="paper (Table 1):\none run each")
        axes[0].set_xticks([0, 2, 4, 6, 8])
        axes[1].set(xlabel="MNIST-1D test error (%)", title="here:\nmean ± std, ticks: seeds")
        axes[1].set_xlim(left=0)
        fig.suptitle(title)
    return fig


def add_seeds(ax: plt.Axes, results: Iterable[RunResult], rows: Sequence[dict[str, Any]]) -> None:
    """Ticks at each seed's final test error on :func:`plot_comparison`'s right panel."""
    groups = by_param(results)
    for row, r in enumerate(rows):
        errors = _final_errors(groups[r["param"]])
        ax.plot(errors, [row + 0.25] * len(errors), "|", color=PALETTE[r["param"]], ms=8, mew=1.5)


def plot_curves(results: Iterable[RunResult], title: str) -> plt.Figure:
    """Test error (%) and training loss per epoch, log scale: each seed thin, the mean over seeds thick,
    one colour per parameterization (the paper's Figure 2 shows the training error the same way)."""
    groups = by_param(results)
    fig, axes = figure(2, height=3.4)
    with book_style():
        for p, runs in groups.items():
            for key, ax, scale in (("test_error", axes[0], 100.0), ("train_loss", axes[1], 1.0)):
                for r in runs:
                    ax.plot(
                        [e.epoch for e in r.epochs],
                        [scale * getattr(e, key) for e in r.epochs],
                        color=PALETTE[p],
                        lw=0.6,
                        alpha=0.35,
                    )
                mean = scale * mean_curve(runs, key)
                ax.plot(np.arange(1, len(mean) + 1), mean, color=PALETTE[p], lw=2, label=LABELS[p])
        axes[0].set(yscale="log", xlabel="epoch", ylabel="test error (%)", title="test error")
        axes[1].set(
            yscale="log",
            xlabel="epoch",
            ylabel="training loss (nats)",
            title="training loss (mean over the epoch)",
        )
        _plain_log_ticks(axes[0])
        for ax in axes:
            ax.set_xticks([1, 5, 10, 15, 20])
        _legend_below(fig, axes[0])
        fig.suptitle(title)
    return fig


def _lr_table(lr_results: dict[float, list[RunResult]]) -> dict[str, dict[float, list[float]]]:
    """param -> lr -> final test errors (%) over seeds."""
    table: dict[str, dict[float, list[float]]] = {}
    for lr, runs in lr_results.items():
        for p, group in by_param(runs).items():
            table.setdefault(p, {})[lr] = _final_errors(group)
    return table


def lr_summary(lr_results: dict[float, list[RunResult]]) -> dict[str, dict[float, float]]:
    """param -> lr -> mean final test error (%) over seeds."""
    return {p: {lr: statistics.fmean(e) for lr, e in row.items()} for p, row in _lr_table(lr_results).items()}


def _lr_panel(ax: plt.Axes, lr_results: dict[float, list[RunResult]], highlight: str | None = None) -> None:
    preset = ex.PRESETS[PRESET]["learning_rates"]
    for p, row in _lr_table(lr_results).items():
        lrs = sorted(row)
        means = [statistics.fmean(row[lr]) for lr in lrs]
        faint = highlight is not None and p != highlight
        color = "0.8" if faint else PALETTE[p]
        ax.plot(lrs, means, "-", color=color, lw=1 if faint else 2, label=LABELS[p], zorder=1 if faint else 3)
        for lr in lrs:
            ax.plot([lr] * len(row[lr]), row[lr], ".", color=color, ms=4, zorder=1 if faint else 3)
        if not faint:
            lr0 = preset[p]
            ax.plot(
                lr0, statistics.fmean(row[lr0]), "o", mfc="none", mec=PALETTE[p], ms=10, mew=1.5, zorder=4
            )
    ax.set(xscale="log", yscale="log", xlabel="Adam learning rate", ylabel="final test error (%)")
    ax.set_xticks(sorted(lr_results), [f"{lr:g}" for lr in sorted(lr_results)])
    ax.set_xticks([], minor=True)


def plot_lr_sensitivity(lr_results: dict[float, list[RunResult]], title: str) -> plt.Figure:
    """Final test error against the learning rate, every parameterization at every rate of
    :data:`LEARNING_RATES` (line: mean over seeds, dots: single seeds, ring: the preset's rate)."""
    fig, ax = figure(1, height=4.2)
    with book_style():
        _lr_panel(ax, lr_results)
        _plain_log_ticks(ax)
        _legend_below(fig, ax)
        ax.set_title(title)
    return fig


def plot_lr_curves(
    lr_results: dict[float, list[RunResult]], title: str, key: str = "train_loss"
) -> plt.Figure:
    """``key`` per epoch (mean over seeds; ``train_loss`` or ``test_error``) of every parameterization,
    one panel per learning rate: how fast each one trains at the same rate (the paper's Figure 2)."""
    lrs = sorted(lr_results)
    scale, ylabel = (100.0, "test error (%)") if key == "test_error" else (1.0, "training loss (nats)")
    fig, axes = figure(len(lrs), height=2.9, sharey=True)
    with book_style():
        for ax, lr in zip(axes, lrs, strict=True):
            for p, runs in by_param(lr_results[lr]).items():
                mean = scale * mean_curve(runs, key)
                ax.plot(np.arange(1, len(mean) + 1), mean, color=PALETTE[p], lw=1.6, label=LABELS[p])
            ax.set(yscale="log", xlabel="epoch", title=f"lr = {lr:g}")
            ax.set_xticks([1, 10, 20])
        axes[0].set_ylabel(ylabel)
        _legend_below(fig, axes[0])
        fig.suptitle(title)
    return fig


def lr_frame(lr_results: dict[float, list[RunResult]], param: str, lr: float) -> plt.Figure:
    """One frame of :func:`lr_widget`: ``param`` at rate ``lr`` of the cached learning-rate grid.

    Left: test error per epoch at ``lr``, ``param`` in colour (each seed of :data:`LR_SEEDS` thin, their
    mean thick), the mean of every other parameterization in grey. Right: mean final test error against
    the rate (:func:`plot_lr_sensitivity`, ``param`` in colour), ``lr`` marked ■."""
    if lr not in lr_results:
        raise ValueError(f"lr {lr:g} is not in the learning-rate grid {sorted(lr_results)}")
    groups = by_param(lr_results[lr])
    if param not in groups:
        raise ValueError(f"param {param!r} is not among the grid's parameterizations {list(groups)}")
    fig, axes = figure(2, height=3.1)
    with book_style():
        for p, runs in groups.items():
            if p != param:
                curve = 100 * mean_curve(runs)
                axes[0].plot(np.arange(1, len(curve) + 1), curve, color="0.8", lw=1.0, zorder=1)
        for r in groups[param]:
            axes[0].plot(
                [e.epoch for e in r.epochs],
                [100 * e.test_error for e in r.epochs],
                color=PALETTE[param],
                lw=0.8,
                alpha=0.6,
                zorder=2,
            )
        curve = 100 * mean_curve(groups[param])
        axes[0].plot(np.arange(1, len(curve) + 1), curve, color=PALETTE[param], lw=2.2, zorder=3)
        # the same y range in every frame: that of every epoch of every run in the grid
        every = [100 * e.test_error for runs in lr_results.values() for r in runs for e in r.epochs]
        axes[0].set(yscale="log", ylim=(0.9 * min(every), 1.1 * max(every)))
        axes[0].set(xlabel="epoch", ylabel="test error (%)", title="test error per epoch")
        axes[0].set_xticks([1, 5, 10, 15, 20])
        _plain_log_ticks(axes[0])
        final = statistics.fmean(_final_errors(groups[param]))
        _lr_panel(axes[1], lr_results, highlight=param)
        axes[1].plot(lr, final, "s", color="k", ms=6, zorder=5)
        _plain_log_ticks(axes[1])
        axes[1].set(ylabel="", title="final test error against the rate")
        fig.suptitle(f"{LABELS[param]}, lr {lr:g}: mean final test error {final:.2f} %")
    return fig


def lr_widget(
    lr_results: dict[float, list[RunResult]], param: str = "weightnorm", lr: float = 0.01
) -> widgets.VBox:
    """The interactive view of the cached learning-rate grid (:func:`wnbook.widgets.frame_widget`):
    a parameterization and a rate, one :func:`lr_frame` per pair, every frame drawn now (nothing trains,
    the page needs no kernel)."""
    from wnbook.widgets import control, frame_widget

    params = list(by_param(next(iter(lr_results.values()))))
    choose = control("dropdown", params, param, "param", labels=[LABELS[p] for p in params])
    # wide enough for the longest label, never wider than the page
    choose.layout.width, choose.layout.max_width = "26em", "100%"
    rate = control("slider", sorted(lr_results), lr, "lr", labels=[f"{x:g}" for x in sorted(lr_results)])
    return frame_widget(
        {"param": choose, "lr": rate},
        lambda param, lr: lr_frame(lr_results, param, lr),
        dpi=FRAME_DPI,
    )
