"""Running the comparison grid (parameterizations × seeds) and summarizing it in tables.

The Experiments chapter calls :func:`run_grid` once (every run comes from the cache after the first
execution), then :func:`summarize` for mean ± standard deviation of the final test error per
parameterization, :func:`epoch_costs` (from the grid's runs) or :func:`benchmark_epochs` (measured
round-robin, less sensitive to a busy machine) for the wall-clock cost per epoch, :func:`curves` for
the training curves, and :func:`markdown_table` to show any of these tables. :func:`lr_sweep` is how
the CPU presets' learning rates were chosen.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import wnlib
from wnlib._extras import require
from wnlib.experiments import cache as _cache
from wnlib.experiments import training as _training
from wnlib.experiments.params import PARAMETERIZATIONS, VARIANTS, get_parameterization
from wnlib.experiments.presets import _preset_threads, make_config
from wnlib.experiments.tables import markdown_table
from wnlib.experiments.training import RunResult, cached_result, train

__all__ = [
    "benchmark_epochs",
    "curves",
    "epoch_costs",
    "lr_sweep",
    "markdown_table",
    "run_grid",
    "summarize",
]

_ALL = tuple(PARAMETERIZATIONS)


def run_grid(
    preset: str = "cpu-small",
    params: Iterable[str] = _ALL,
    seeds: Iterable[int] = (0, 1, 2),
    *,
    device: str | None = None,
    quiet: bool = False,
    use_cache: bool = True,
    cache_dir: str | None = None,
    threads: int | Literal["preset"] | None = "preset",
    workers: int = 1,
    **overrides: Any,
) -> list[RunResult]:
    """Train (or load from the cache) every parameterization × seed of ``preset``.

    Runs go seed by seed, all parameterizations within a seed, so that a change in the machine's load
    during the grid falls on every parameterization alike (it matters for the per-epoch times).
    ``overrides`` are :class:`~wnlib.experiments.training.TrainConfig` fields (e.g. ``epochs=5``,
    ``lr=0.01``) applied to every run; ``threads`` is torch's CPU thread count per run (default: the
    preset's). ``workers`` > 1 trains that many runs at once in separate processes (CPU only; with the
    CPU presets' one thread per run, ``workers=2`` uses both cores of a 2-core machine). Results do not
    depend on ``workers``; the per-epoch times do (parallel runs share the memory bus), so measure costs
    with :func:`benchmark_epochs`. Returns the results in grid order.
    """
    if threads == "preset":
        threads = _preset_threads(preset)
    params = [get_parameterization(p).name for p in params]
    configs = [make_config(preset, p, s, **overrides) for s in seeds for p in params]
    kwargs = {
        "device": device,
        "quiet": True,
        "use_cache": use_cache,
        "cache_dir": cache_dir,
        "threads": threads,
    }
    tqdm = require("tqdm.auto", "the progress bar").tqdm

    bar = tqdm(total=len(configs), desc=f"{preset} grid", disable=quiet, dynamic_ncols=True)
    results: list[RunResult | None] = [None] * len(configs)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if use_cache:  # cached runs need no worker
            for i, config in enumerate(configs):
                results[i] = cached_result(config, device=device, cache_dir=cache_dir)
        todo = [i for i, r in enumerate(results) if r is None]
        bar.update(len(configs) - len(todo))
        if todo:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                futures = {pool.submit(train, configs[i], **kwargs): i for i in todo}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
    else:
        for i, config in enumerate(configs):
            results[i] = train(config, **kwargs)
            bar.update()
    bar.close()
    return [r for r in results if r is not None]


def _by_param(results: Iterable[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.config.param, []).append(r)
    order = [*PARAMETERIZATIONS, *VARIANTS]
    return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0])))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: Iterable[RunResult]) -> list[dict[str, Any]]:
    """One row per parameterization: seeds, how many of them diverged, and over the seeds that did not:
    final test error (mean, sample std, in %), final train loss (mean), best epoch's test error (mean,
    in %); median seconds per epoch (mean over all seeds). Statistics over no run are NaN.

    Example:
        >>> from wnlib import experiments as ex
        >>> rows = [ex.EpochResult(1, float("nan"), 0.9, float("nan"), 0.9, 0.1, 0.9, 1.0, 0.1)]
        >>> run = ex.RunResult(ex.make_config("cpu-small", "normal", epochs=2), rows, "cpu", 1, "0", 0.0)
        >>> row, = summarize([run])
        >>> row["diverged"], row["test_error_mean"]
        (1, nan)
    """
    rows = []
    for param, runs in _by_param(results).items():
        ok = [r for r in runs if not r.diverged]
        final = [100 * r.final_test_error for r in ok]
        mean, std = _mean_std(final) if ok else (math.nan, math.nan)
        rows.append(
            {
                "param": param,
                "label": get_parameterization(param).label,
                "seeds": len(runs),
                "diverged": len(runs) - len(ok),
                "test_error_mean": mean,
                "test_error_std": std,
                "best_test_error_mean": _fmean([100 * min(e.test_error for e in r.epochs) for r in ok]),
                "train_loss_mean": _fmean([r.epochs[-1].train_loss for r in ok]),
                "seconds_per_epoch": statistics.fmean(r.seconds_per_epoch for r in runs),
            }
        )
    return rows


def _fmean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def epoch_costs(results: Iterable[RunResult], baseline: str = "normal") -> list[dict[str, Any]]:
    """Wall-clock training time per epoch per parameterization (median over epochs, mean over seeds),
    and relative to ``baseline`` (the paper: batch norm ~16% slower than the normal parameterization,
    weight norm not noticeably slower)."""
    costs = {p: statistics.fmean(r.seconds_per_epoch for r in runs) for p, runs in _by_param(results).items()}
    base = costs.get(baseline)
    return [
        {
            "param": p,
            "label": get_parameterization(p).label,
            "seconds_per_epoch": s,
            f"relative_to_{baseline}": s / base if base else float("nan"),
        }
        for p, s in costs.items()
    ]


def benchmark_epochs(
    preset: str = "cpu-small",
    params: Iterable[str] = _ALL,
    repeats: int = 5,
    *,
    device: str | None = None,
    use_cache: bool = True,
    cache_dir: str | None = None,
    threads: int | Literal["preset"] | None = "preset",
    quiet: bool = False,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Wall-clock seconds of one training epoch per parameterization, measured round-robin.

    Each repeat trains one epoch of every parameterization in turn (fresh model, seed = repeat), so a
    change in the machine's load hits all of them alike; the minimum over repeats is the least
    disturbed measurement, the median the typical one. Rows: param, label, min and median seconds, and
    both relative to the normal parameterization's. Cached like runs (keyed by the arguments, device
    type and wnlib version), so a notebook shows the same numbers on every execution; pass
    ``use_cache=False`` to measure again.
    """
    params = [get_parameterization(p).name for p in params]
    if threads == "preset":
        threads = _preset_threads(preset)
    resolved = _training._resolve_device(device)
    key = _cache._config_key(
        {
            "benchmark_epochs": [preset, params, repeats, sorted(overrides.items()), threads],
            "device": resolved.type,
            "wnlib": wnlib.__version__,
            "results_version": _cache._RESULTS_VERSION,
        }
    )
    if use_cache and (rows := _stored_timings(key, cache_dir, params)) is not None:
        return rows
    tqdm = require("tqdm.auto", "the progress bar").tqdm

    seconds: dict[str, list[float]] = {p: [] for p in params}
    with tqdm(total=repeats * len(params), desc="epoch timing", disable=quiet, dynamic_ncols=True) as bar:
        for r in range(repeats):
            for p in params:
                config = make_config(preset, p, r, **{"epochs": 1, **overrides})
                _, result = _training.fit(
                    config, device=resolved, quiet=True, cache_dir=cache_dir, threads=threads
                )
                seconds[p].append(result.epochs[0].seconds)
                bar.update()
    base = seconds.get("normal")
    rows = []
    for p, s in seconds.items():
        row = {"param": p, "label": get_parameterization(p).label, "min_seconds": min(s)}
        row["median_seconds"] = statistics.median(s)
        if base:
            row["min_relative_to_normal"] = min(s) / min(base)
            row["median_relative_to_normal"] = statistics.median(s) / statistics.median(base)
        rows.append(row)
    _cache.save_result(key, {"rows": rows, "seconds": seconds}, cache_dir)
    return rows


def _stored_timings(key: str, cache_dir: str | None, params: list[str]) -> list[dict[str, Any]] | None:
    """The stored rows of :func:`benchmark_epochs`, or None: nothing stored, or (with a
    :class:`~wnlib.experiments.cache.CacheEntryInvalid` warning) an entry that is not such a table."""
    stored, problem = _cache._read_result(key, cache_dir)
    if stored is not None:
        rows = stored.get("rows")
        numbers = ("min_seconds", "median_seconds")
        if (
            isinstance(rows, list)
            and all(isinstance(r, dict) for r in rows)
            and [r.get("param") for r in rows] == params
            and all(isinstance(r.get(n), (int, float)) and r[n] > 0 for r in rows for n in numbers)
        ):
            return rows
        problem = "is not a table of epoch timings for these parameterizations"
    if problem is not None:
        path = _cache.result_path(key, cache_dir)
        message = f"cache entry {path} {problem}: to be measured again and replaced"
        warnings.warn(message, _cache.CacheEntryInvalid, stacklevel=3)
    return None


def curves(results: Iterable[RunResult], key: str = "test_error") -> dict[str, list[list[float]]]:
    """Per parameterization, one list per seed of ``key`` (an
    :class:`~wnlib.experiments.training.EpochResult` field) by epoch."""
    return {p: [[getattr(e, key) for e in r.epochs] for r in runs] for p, runs in _by_param(results).items()}


def lr_sweep(
    preset: str = "cpu-small",
    params: Iterable[str] = _ALL,
    rates: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1),
    seed: int = 100,
    *,
    quiet: bool = False,
    cache_dir: str | None = None,
    threads: int | Literal["preset"] | None = "preset",
    **overrides: Any,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The rate with the lowest final *validation* error per parameterization, and the full table.

    Every run uses ``split="validation"`` (20% of the training set held out), so the test set plays no
    part in the choice.
    """
    if threads == "preset":
        threads = _preset_threads(preset)
    rows, best = [], {}
    for param in [get_parameterization(p).name for p in params]:
        errors = {}
        for lr in rates:
            config = make_config(preset, param, seed, lr=lr, split="validation", **overrides)
            result = train(config, quiet=quiet, cache_dir=cache_dir, threads=threads)
            errors[lr] = result.final_test_error
            rows.append({"param": param, "lr": lr, "validation_error": 100 * result.final_test_error})
        best[param] = min(errors, key=lambda lr: (errors[lr], lr))
    return best, rows
