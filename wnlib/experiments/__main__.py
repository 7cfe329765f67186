"""Command line: ``python -m wnlib.experiments --preset cpu-small --param weightnorm --seeds 0 1 2``.

Trains the chosen parameterizations × seeds of a preset (results cached; see
:mod:`wnlib.experiments.cache`), prints each run's per-epoch table and a summary in Markdown.

The paper's full run (CIFAR-10, 200 epochs, downloads CIFAR-10 on first use) on a GPU::

    python -m wnlib.experiments --preset paper --param weightnorm_meanonly --device cuda

Data-parallel on several processes (DDP: gloo on CPU, NCCL on GPU)::

    torchrun --nproc_per_node 4 -m wnlib.experiments --preset paper --param all --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from wnlib.experiments.data import ChecksumError, DownloadError
from wnlib.experiments.params import PARAMETERIZATIONS, get_parameterization
from wnlib.experiments.presets import PRESETS, make_config, preset_threads
from wnlib.experiments.results import markdown_table, summarize
from wnlib.experiments.training import fit, resolve_device, train


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m wnlib.experiments",
        description="Train the parameterizations of Salimans & Kingma (2016, §5.1); print result tables.",
    )
    p.add_argument("--preset", default="cpu-small", help=f"one of: {', '.join(PRESETS)} (default cpu-small)")
    p.add_argument(
        "--param",
        nargs="+",
        default=["weightnorm"],
        help=f"parameterization(s), or 'all': {', '.join(PARAMETERIZATIONS)}",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    p.add_argument("--lr", type=float, help="override the preset's learning rate")
    p.add_argument("--batch-size", type=int, help="global minibatch size (split across ranks)")
    p.add_argument("--width", type=float, help="channel multiplier of the network")
    p.add_argument("--dataset", help="override the preset's data set (digits, mnist1d, mnist, cifar10)")
    p.add_argument("--arch", help="override the preset's network (mlp, convnet, paper_cnn)")
    p.add_argument("--max-batches", type=int, help="stop each epoch after this many minibatches")
    p.add_argument("--split", choices=("test", "validation"), default=None)
    p.add_argument("--cache-dir", help="cache directory (default $WNLIB_CACHE or ~/.cache/wnlib)")
    p.add_argument("--no-cache", action="store_true", help="train even if a result is cached")
    p.add_argument(
        "--save-model",
        metavar="DIR",
        help="save each run's final state_dict (per rank) in DIR; trains, bypassing the result cache",
    )
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the preset's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict:
    names = ("epochs", "lr", "batch_size", "width", "dataset", "arch", "max_batches", "split")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, NCCL on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = list(PARAMETERIZATIONS) if args.param == ["all"] else args.param
    try:
        params = [get_parameterization(p).name for p in params]
        configs = [make_config(args.preset, p, s, **overrides(args)) for s in args.seeds for p in params]
        device = resolve_device(args.device)
        threads = args.threads if args.threads is not None else preset_threads(args.preset)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = init_distributed(device)
    device = resolve_device(args.device)  # the local GPU once the group exists
    rank = dist.get_rank() if dist.is_initialized() else 0
    quiet = args.quiet or rank != 0
    try:
        results = []
        for config in configs:
            if args.save_model:
                model, result = fit(
                    config, device=device, quiet=quiet, cache_dir=args.cache_dir, threads=threads
                )
                out = Path(args.save_model)
                out.mkdir(parents=True, exist_ok=True)
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
                source = " (cached)" if result.cached else ""
                print(f"\n## {config.param}, seed {config.seed}{source}\n\n{result.to_markdown()}")
    except (DownloadError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    else:
        if rank == 0:
            columns = ["param", "seeds", "test_error_mean", "test_error_std", "seconds_per_epoch"]
            print(f"\n## Summary (final test error in %)\n\n{markdown_table(summarize(results), columns)}")
            if args.json:
                Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=1))
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
