"""Command line: ``python -m wnlib.experiments --preset cpu-small --param weightnorm --seeds 0 1 2``.

Trains the chosen parameterizations × seeds of a preset (results cached; see
:mod:`wnlib.experiments.cache`), prints each run's per-epoch table and a summary in Markdown.

Everything that can be checked before training is: the arguments' types and ranges, the names, that the
network fits the data set's inputs, the device, and that the cache directory, ``--save-model`` and
``--json`` can be written; the batch size against the training split right after the data is loaded.
A bad argument exits with status 2 and one line on stderr. A cache entry that does not validate is
reported in one line (``note: ...``), retrained and replaced; a run whose loss became non-finite is
shown as diverged.

The paper's full run (CIFAR-10, 200 epochs, downloads CIFAR-10 on first use) on a GPU::

    python -m wnlib.experiments --preset paper --param weightnorm_meanonly --device cuda

Log-scale gain (g = eˢ) against the plain gain, both with the data-dependent init (see
:mod:`wnlib.experiments.log_gain`)::

    python -m wnlib.experiments --preset cpu-small --param weightnorm_init weightnorm_init_log_gain

Data-parallel on several processes (DDP: gloo on CPU, NCCL on GPU)::

    torchrun --nproc_per_node 4 -m wnlib.experiments --preset paper --param all --device cuda
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import torch
import torch.distributed as dist

from wnlib.experiments import cache as _cache
from wnlib.experiments.data import ChecksumError, DownloadError
from wnlib.experiments.params import PARAMETERIZATIONS, VARIANTS, get_parameterization
from wnlib.experiments.presets import PRESETS, _preset_threads, make_config
from wnlib.experiments.results import markdown_table, summarize
from wnlib.experiments.training import ConfigError, RunResult, _check_device, _resolve_device, fit, train

__all__ = [
    "OTHER_TASKS",
    "main",
    "overrides",
    "parse_args",
    "report",
    "run",
]


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: Callable[[str], float], what: str, minimum: float) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, finite and at least ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__doc__ = f"An argparse type that accepts {what}."
    return parse


_POSITIVE_INT = _number(int, "a positive integer", 1)
_POSITIVE_FLOAT = _number(float, "a positive finite number", math.ulp(0.0))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments (``sys.argv[1:]`` if ``argv`` is None); a bad one exits with status 2."""
    p = _Parser(
        prog="python -m wnlib.experiments",
        description="Train the parameterizations of Salimans & Kingma (2016, §5.1); print result tables.",
    )
    p.add_argument(
        "--preset",
        default="cpu-small",
        help=f"one of: {', '.join(PRESETS)} (default cpu-small); vae-small, vae-paper, dqn-small and "
        "dqn-paper run the VAE (§5.2) and DQN (§5.4) experiments, with their own options",
    )
    p.add_argument(
        "--param",
        nargs="+",
        default=["weightnorm"],
        help=f"parameterization(s), or 'all' (the six): {', '.join(PARAMETERIZATIONS)}; or a variant: "
        f"{', '.join(VARIANTS)}",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--epochs", type=_POSITIVE_INT, help="override the preset's number of epochs")
    p.add_argument("--lr", type=_POSITIVE_FLOAT, help="override the preset's learning rate")
    p.add_argument("--batch-size", type=_POSITIVE_INT, help="global minibatch size (split across ranks)")
    p.add_argument("--width", type=_POSITIVE_FLOAT, help="channel multiplier of the network")
    p.add_argument("--dataset", help="override the preset's data set (digits, mnist1d, mnist, cifar10)")
    p.add_argument("--arch", help="override the preset's network (mlp, convnet, paper_cnn)")
    p.add_argument("--max-batches", type=_POSITIVE_INT, help="stop each epoch after this many minibatches")
    p.add_argument("--split", choices=("test", "validation"), default=None)
    p.add_argument("--cache-dir", help="cache directory (default $WNLIB_CACHE or ~/.cache/wnlib)")
    p.add_argument("--no-cache", action="store_true", help="train even if a result is cached (and store it)")
    p.add_argument(
        "--save-model",
        metavar="DIR",
        help="save each run's final state_dict (per rank) in DIR; trains, bypassing the result cache",
    )
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE")
    p.add_argument("--threads", type=_POSITIVE_INT, help="torch CPU threads (default: the preset's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict:
    """The options given that replace a preset's setting (``--epochs``, ``--lr``, ...), by field name."""
    names = ("epochs", "lr", "batch_size", "width", "dataset", "arch", "max_batches", "split")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any training: every place the run will write to can be written
    (:class:`~wnlib.experiments.cache.NotWritableError` otherwise)."""
    if args.save_model:
        _cache._check_writable(args.save_model, "--save-model")
    else:  # results are stored, with --no-cache too
        what = (
            "--cache-dir" if args.cache_dir else f"the cache directory (${_cache._ENV_VAR} or ~/.cache/wnlib)"
        )
        _cache._check_writable(_cache.cache_dir(args.cache_dir) / "results", what)
    if args.json:
        if Path(args.json).is_dir():
            raise _cache.NotWritableError(f"--json: {args.json} is a directory; pass a file name")
        _cache._check_writable(Path(args.json).expanduser().parent, "--json")


def _init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, NCCL on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


def _prepare(args: argparse.Namespace) -> tuple[list, torch.device, int | None]:
    """(the runs' configurations, the device, the thread count), every argument checked; a ValueError
    (or TypeError, RuntimeError) says what is wrong."""
    params = list(PARAMETERIZATIONS) if args.param == ["all"] else args.param
    params = [get_parameterization(p).name for p in params]
    configs = [make_config(args.preset, p, s, **overrides(args)) for s in args.seeds for p in params]
    device = _check_device(args.device)
    threads = args.threads if args.threads is not None else _preset_threads(args.preset)
    _check_outputs(args)
    return configs, device, threads


def _heading(result: RunResult) -> str:
    """The line above a run's table: its parameterization and seed, whether cached or diverged."""
    c = result.config
    notes = [" (cached)" if result.cached else ""]
    if result.diverged:
        notes.append(f" (diverged in epoch {len(result.epochs)}: the training loss became non-finite)")
    return f"## {c.param}, seed {c.seed}{''.join(notes)}"


def _one_line_notes(show: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints a cache entry's problem as one line on stderr
    (``note: ...``) and hands every other warning to ``show``."""

    def notes(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, _cache.CacheEntryInvalid):
            print(f"note: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return notes


def run(
    args: argparse.Namespace, configs: list, device: torch.device, threads: int | None, rank: int
) -> list:
    """Train (or read back) every configuration, printing each table on rank 0."""
    quiet = args.quiet or rank != 0
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", _cache.CacheEntryInvalid)
        warnings.showwarning = _one_line_notes(warnings.showwarning)
        for config in configs:
            if args.save_model:
                model, result = fit(
                    config, device=device, quiet=quiet, cache_dir=args.cache_dir, threads=threads
                )
                out = Path(args.save_model)
                torch.save(model.state_dict(), out / f"{config.param}_seed{config.seed}_rank{rank}.pt")
            else:
                result = train(
                    config,
                    device=device,
                    quiet=quiet,
                    use_cache=not args.no_cache,
                    cache_dir=args.cache_dir,
                    threads=threads,
                )
            results.append(result)
            if rank == 0:
                print(f"\n{_heading(result)}\n\n{result.to_markdown()}")
    return results


def report(args: argparse.Namespace, results: list) -> None:
    """The summary table (diverged runs counted, not averaged) and the JSON file, if asked for."""
    columns = ["param", "seeds", "diverged", "test_error_mean", "test_error_std", "seconds_per_epoch"]
    print("\n## Summary (final test error in %, over the runs that did not diverge)\n")
    print(markdown_table(summarize(results), columns))
    if any(r.diverged for r in results):
        print(
            f"\n{sum(r.diverged for r in results)} of {len(results)} runs diverged "
            "(non-finite training loss)."
        )
    if args.json:
        Path(args.json).expanduser().write_text(_cache.dumps([r.to_dict() for r in results]))


#: Presets of the paper's other experiments, by name prefix, each with a CLI of its own that this one
#: hands over to.
OTHER_TASKS = {"vae-": "wnlib.experiments.vae", "dqn-": "wnlib.experiments.dqn"}


def _other_task(argv: Sequence[str]) -> str | None:
    """The module whose CLI handles ``--preset`` in ``argv`` (e.g. ``vae-small``), or None."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        preset = argv[i + 1] if arg == "--preset" and i + 1 < len(argv) else arg.partition("=")[2]
        if arg == "--preset" or arg.startswith("--preset="):
            return next((m for p, m in OTHER_TASKS.items() if preset.startswith(p)), None)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv``, default ``sys.argv[1:]``) and return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    module = _other_task(argv)
    if module is not None:
        return importlib.import_module(module).main(argv)
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (already reported in one line)
        return e.code if isinstance(e.code, int) else 2
    try:
        configs, device, threads = _prepare(args)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    started = _init_distributed(device)
    device = _resolve_device(args.device)  # the local GPU once the group exists
    rank = dist.get_rank() if dist.is_initialized() else 0
    try:
        results = run(args, configs, device, threads, rank)
        if rank == 0:
            report(args, results)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (DownloadError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
