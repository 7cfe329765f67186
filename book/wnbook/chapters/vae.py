"""Computations and figures of the chapter on generative models (``book/vae.ipynb``).

Salimans & Kingma (2016), §5.2: a convolutional VAE trained with the normal parameterization and with
weight norm, here at CPU scale (:mod:`wnlib.experiments.vae`, preset ``vae-small``: 8×8 digits, a
diagonal Gaussian posterior, Adamax with α = 0.002). The chapter reads the runs from the committed cache
``wnbook/data/experiments`` (:func:`committed_grid`); they were trained once by the same call, so
re-executing the page trains nothing.

- :func:`committed_grid`: the two parameterizations × the preset's seeds;
- :func:`compare`: the numbers behind the chapter's statements (:class:`Comparison`);
- :func:`summary_markdown`: the table of final bounds and variances;
- :func:`plot_elbo`, :func:`plot_variance`: test ELBO and minibatch variance per epoch, a band over seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from wnbook.files import committed_cache
from wnbook.style import LABELS, PALETTE, figure
from wnbook.tables import markdown_table
from wnlib.experiments import vae

__all__ = [
    "PAPER_MNIST_EPOCH_300",
    "PRESET",
    "Comparison",
    "by_param",
    "committed_grid",
    "compare",
    "plot_elbo",
    "plot_variance",
    "summary_markdown",
]

PRESET = "vae-small"
#: The paper's MNIST test bound at epoch 300, read off its figure (nats; PAPER.md).
PAPER_MNIST_EPOCH_300 = {"normal": -85.8, "weightnorm_init": -85.3}


def committed_grid(*, use_cache: bool = True) -> list[vae.VAERunResult]:
    """The runs of preset ``vae-small`` (both parameterizations × its seeds) from the committed cache
    ``wnbook/data/experiments``; a run that is missing is trained (about 20 s on one core) and stored."""
    return vae.run_vae_grid(PRESET, cache_dir=str(committed_cache()), use_cache=use_cache)


def by_param(results: Sequence[vae.VAERunResult]) -> dict[str, list[vae.VAERunResult]]:
    """The runs per parameterization, each list sorted by seed."""
    return {
        p: sorted((r for r in results if r.config.param == p), key=lambda r: r.config.seed)
        for p in vae.VAE_PARAMS
        if any(r.config.param == p for r in results)
    }


@dataclass(frozen=True)
class Comparison:
    """Weight norm against the normal parameterization, seed by seed (the seeds both have).

    Attributes:
        seeds: how many seeds are compared.
        wins: in how many of them weight norm's final test ELBO is the higher.
        variance_lower_in: in how many of them its :func:`~wnlib.experiments.vae.late_variance` is lower.
        mean_final, std_final: final test ELBO per parameterization (mean, sample std over seeds).
        mean_iw: final importance-weighted bound per parameterization (mean over seeds).
        mean_variance: late minibatch variance per parameterization (mean over seeds).
        best_epoch: per parameterization, the epoch of the highest mean test ELBO.
        iw_wins: in how many seeds weight norm's final importance-weighted bound is the higher.
        ahead_in_all: the epochs in which weight norm's test ELBO is the higher in every seed.
        late_gain: per parameterization, the rise of the mean test ELBO over the last 5 epochs (nats).
    """

    seeds: int
    wins: int
    variance_lower_in: int
    mean_final: dict[str, float]
    std_final: dict[str, float]
    mean_iw: dict[str, float]
    mean_variance: dict[str, float]
    best_epoch: dict[str, int]
    iw_wins: int
    ahead_in_all: list[int]
    late_gain: dict[str, float]


def compare(results: Sequence[vae.VAERunResult]) -> Comparison:
    """The :class:`Comparison` of the (non-diverged) runs in ``results``."""
    groups = {p: {r.config.seed: r for r in runs if not r.diverged} for p, runs in by_param(results).items()}
    normal, wn = groups["normal"], groups["weightnorm_init"]
    seeds = sorted(set(normal) & set(wn))
    wins = sum(wn[s].final_test_elbo > normal[s].final_test_elbo for s in seeds)
    lower = sum(vae.late_variance(wn[s]) < vae.late_variance(normal[s]) for s in seeds)

    def per_param(f) -> dict[str, float]:
        return {p: statistics.fmean(f(r) for r in g.values()) for p, g in groups.items()}

    std = {p: statistics.stdev(r.final_test_elbo for r in g.values()) for p, g in groups.items()}
    curves = {p: np.mean([[e.test_elbo for e in r.epochs] for r in g.values()], 0) for p, g in groups.items()}
    return Comparison(
        len(seeds),
        wins,
        lower,
        per_param(lambda r: r.final_test_elbo),
        std,
        per_param(lambda r: r.test_iw_bound),
        per_param(vae.late_variance),
        {p: int(np.argmax(c)) + 1 for p, c in curves.items()},
        sum(wn[s].test_iw_bound > normal[s].test_iw_bound for s in seeds),
        [i + 1 for i in range(len(curves["normal"])) if _ahead(wn, normal, seeds, i)],
        {p: float(c[-1] - c[max(len(c) - 6, 0)]) for p, c in curves.items()},
    )


def _ahead(wn: dict, normal: dict, seeds: list[int], i: int) -> bool:
    return all(wn[s].epochs[i].test_elbo > normal[s].epochs[i].test_elbo for s in seeds)


def summary_markdown(results: Sequence[vae.VAERunResult]) -> str:
    """Final test ELBO, importance-weighted bound and late minibatch variance per parameterization."""
    rows = [
        {
            "parameterization": LABELS[row["param"]],
            "seeds": row["seeds"],
            "final test ELBO (nats)": f"{row['test_elbo_mean']:.2f} ± {row['test_elbo_std']:.2f}",
            "IW bound (nats)": f"{row['test_iw_bound_mean']:.2f}",
            "minibatch variance, 2nd half": f"{row['late_variance_mean']:.3f}",
        }
        for row in vae.summarize_vae(results)
    ]
    return markdown_table(rows)


def _band(ax: plt.Axes, runs: list[vae.VAERunResult], param: str, key: str, skip: int = 0) -> None:
    """Mean over seeds as a line, min–max over seeds as a band."""
    values = np.array([[getattr(e, key) for e in r.epochs] for r in runs])[:, skip:]
    epochs = np.arange(skip + 1, skip + 1 + values.shape[1])
    colour = PALETTE[param]
    ax.plot(epochs, values.mean(0), color=colour, label=LABELS[param], lw=1.6)
    ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.2, lw=0)


def plot_elbo(
    results: Sequence[vae.VAERunResult], skip: int = 2, title: str = "Test bound per epoch"
) -> plt.Figure:
    """Test ELBO per epoch (from epoch ``skip`` + 1), mean over seeds and its min–max band; right: the
    last third of training, enlarged. ``title`` is the figure's (state the finding)."""
    fig, (ax, zoom) = figure(2, height=3.2)
    groups = by_param(results)
    last = len(next(iter(groups.values()))[0].epochs)
    for param, runs in groups.items():
        _band(ax, runs, param, "test_elbo", skip)
        _band(zoom, runs, param, "test_elbo", (2 * last) // 3)
    ax.set(xlabel="epoch", ylabel="test ELBO (nats per image)", title="All epochs")
    zoom.set(xlabel="epoch", title="Last third of training")
    for a in (ax, zoom):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right")
    fig.suptitle(title)
    return fig


def plot_variance(
    results: Sequence[vae.VAERunResult],
    skip: int = 2,
    title: str = "Minibatch noise of the training objective",
) -> plt.Figure:
    """The variance of the training objective over each epoch's minibatches (log scale, from epoch
    ``skip`` + 1), mean over seeds and its min–max band."""
    fig, ax = figure(1, height=3.0)
    for param, runs in by_param(results).items():
        _band(ax, runs, param, "train_var", skip)
    ax.set(
        xlabel="epoch",
        ylabel="variance of −ELBO over minibatches (nats²)",
        yscale="log",
        title=title,
    )
    ax.legend()
    return fig
