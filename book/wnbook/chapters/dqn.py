"""Computations and figures of the chapter on reinforcement learning (``book/dqn.ipynb``).

Salimans & Kingma (2016), §5.4: DQN with the normal parameterization and with weight norm, here on
CartPole-v1 (:mod:`wnlib.experiments.dqn`, preset ``dqn-small``). The runs are read from the committed
cache ``wnbook/data/experiments`` (:func:`committed_grid`), so re-executing the page trains nothing.

- :func:`committed_grid`: both parameterizations × the preset's seeds;
- :func:`summary_rows`: per run, the mean return over all episodes and over the last 20;
- :func:`smoothed`: a run's return against environment steps, averaged over a sliding window of episodes;
- :func:`plot_returns`: the smoothed curves, the mean over seeds and a min–max band.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from wnbook.files import committed_cache
from wnbook.style import LABELS, PALETTE, figure
from wnlib.experiments import dqn

__all__ = [
    "PRESET",
    "committed_grid",
    "paper_rate_runs",
    "plot_returns",
    "random_policy_return",
    "smoothed",
    "summary_rows",
]

PRESET = "dqn-small"


def committed_grid(*, use_cache: bool = True) -> list[dqn.DQNRunResult]:
    """The runs of preset ``dqn-small`` from the committed cache (a missing run is trained and stored)."""
    return dqn.run_dqn_grid(PRESET, cache_dir=str(committed_cache()), use_cache=use_cache)


def paper_rate_runs(seed: int = 0) -> list[dqn.DQNRunResult]:
    """Both parameterizations of ``dqn-small`` at the paper's own learning rates (not ×10), seed
    ``seed``, from the committed cache: why the CPU preset scales the rates."""
    configs = [dqn.make_dqn_config(PRESET, p, seed, lr=dqn.PAPER_LEARNING_RATES[p]) for p in dqn.DQN_PARAMS]
    return [dqn.train_dqn(c, cache_dir=str(committed_cache())) for c in configs]


def random_policy_return(episodes: int = 100, seed: int = 0, env_id: str = "CartPole-v1") -> float:
    """Mean return of the uniformly random policy over ``episodes`` seeded episodes."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    total = 0.0
    for k in range(episodes):
        env.reset(seed=seed + k)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
    env.close()
    return total / episodes


def summary_rows(results: Sequence[dqn.DQNRunResult], last: int = 20) -> list[dict]:
    """One row per run: parameterization, seed, learning rate, episodes, mean return (all, last ``last``)."""
    return [
        {
            "parameterization": LABELS.get(r.config.param, r.config.param),
            "seed": r.config.seed,
            "lr": r.config.lr,
            "episodes": len(r.returns),
            "mean return": round(float(np.mean(r.returns)), 1),
            f"last {last}": round(r.final_return(last), 1),
        }
        for r in results
    ]


def smoothed(run: dqn.DQNRunResult, grid: np.ndarray, window: int = 10) -> np.ndarray:
    """The mean return of the last ``window`` finished episodes at each environment step of ``grid``
    (NaN before the first episode ends)."""
    ends, returns = np.asarray(run.episode_ends), np.asarray(run.returns)
    out = np.full(len(grid), np.nan)
    for i, step in enumerate(grid):
        k = np.searchsorted(ends, step, side="right")
        if k:
            out[i] = returns[max(0, k - window) : k].mean()
    return out


def plot_returns(results: Sequence[dqn.DQNRunResult], points: int = 100) -> plt.Figure:
    """Smoothed return against environment steps, per parameterization: mean over seeds, min–max band."""
    steps = results[0].config.steps
    start = max(r.episode_ends[0] for r in results)  # every run has a finished episode from here on
    grid = np.linspace(start, steps - 1, points)
    fig, ax = figure(height=3.4)
    for param in dqn.DQN_PARAMS:
        curves = np.array([smoothed(r, grid) for r in results if r.config.param == param])
        color = PALETTE.get(param, "0.3")
        ax.plot(grid, np.nanmean(curves, axis=0), color=color, lw=2, label=LABELS.get(param, param))
        ax.fill_between(grid, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color, alpha=0.2)
    ax.set(
        xlabel="environment steps",
        ylabel="return (mean of the last 10 episodes)",
        title="DQN on CartPole-v1: mean over seeds (line) and min–max over seeds (band)",
    )
    ax.legend(loc="upper left", fontsize=9)
    return fig
