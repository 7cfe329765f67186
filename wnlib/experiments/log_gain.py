"""Log-scale gain against the plain gain, on the Experiments chapter's main classification runs.

Salimans & Kingma (2016, §2) also tried storing each gain as its logarithm, g = eˢ, with s trained
instead of g, and report no gain in test performance and slightly slower optimization. Here the
comparison is ``weightnorm_init`` (weight norm + data-dependent init, eq. 2 and §3) against
``weightnorm_init_log_gain`` (the same with g = eˢ; the data-dependent init sets s = log g), at the
``cpu-small`` preset, weight norm's learning rate of that preset, and the seeds of the chapter's main
grid. Everything else is the same run, so the ``weightnorm_init`` runs are the very runs the chapter
already shows (the same cache entries); only the log-gain runs are new.

:func:`configs` lists the runs, :func:`runs` trains them or reads them from the cache
(:func:`~wnlib.experiments.results.run_grid`). The book commits them with its other runs
(``book/wnbook/data/experiments``); from the command line::

    python -m wnlib.experiments --preset cpu-small --param weightnorm_init weightnorm_init_log_gain \\
        --seeds 0 1 2
"""

from __future__ import annotations

import os
from typing import Any

from wnlib.experiments.presets import make_config
from wnlib.experiments.results import run_grid
from wnlib.experiments.training import RunResult, TrainConfig

#: The comparison's preset, the Experiments chapter's own (MNIST-1D, small convnet, 20 epochs).
PRESET = "cpu-small"
#: The runs with the plain gain g, and those with g = eˢ.
BASELINE, LOG_GAIN = "weightnorm_init", "weightnorm_init_log_gain"
#: The seeds of the chapter's main grid.
SEEDS: tuple[int, ...] = (0, 1, 2)


def configs() -> list[TrainConfig]:
    """Every run of the comparison: both parameterizations × :data:`SEEDS` at :data:`PRESET`."""
    return [make_config(PRESET, p, seed) for seed in SEEDS for p in (BASELINE, LOG_GAIN)]


def runs(
    cache_dir: str | os.PathLike[str] | None = None, *, use_cache: bool = True, **kwargs: Any
) -> list[RunResult]:
    """The comparison's runs (in the order of :func:`configs`), from the cache in ``cache_dir`` where
    stored, else trained on the CPU (one thread each; ``workers=2`` runs two at once) and stored there.
    ``kwargs`` go to :func:`~wnlib.experiments.results.run_grid` (``quiet``, ``workers``)."""
    path = None if cache_dir is None else str(cache_dir)
    return run_grid(
        PRESET, (BASELINE, LOG_GAIN), SEEDS, device="cpu", use_cache=use_cache, cache_dir=path, **kwargs
    )
