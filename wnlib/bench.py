"""Benchmark: what weight norm costs on top of a plain layer, for wnlib and for torch's two APIs.

    python -m wnlib.bench [--device cpu|cuda] [--threads N] [--repeats N] [--out FILE] [--quick]

For each case (three Linear sizes and a Conv2d) it times forward + backward of four versions of the same
layer with the same weights, measured in one run and interleaved round by round so that drift of the
machine hits all of them alike: the plain layer, ``wnlib.nn``, ``torch.nn.utils.parametrizations.
weight_norm`` and the legacy ``torch.nn.utils.weight_norm``. It reports each as a ratio to the plain
layer (median over rounds) and the peak memory allocated during forward + backward. The table is printed
and written as Markdown (default ``book/data/bench_cpu.md``) for the Implementation chapter.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import wnlib
from wnlib._threads import torch_threads


@dataclass(frozen=True)
class Case:
    """One benchmark row: a layer factory and its input shape."""

    name: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


def cases(quick: bool = False) -> list[Case]:
    """The issue's sizes: Linear (batch, in, out) and a 3×3 Conv2d on 32×32 images."""
    linear = [(32, 256, 256), (256, 1024, 1024), (64, 4096, 4096)]
    if quick:
        linear = linear[:2]
    out = [Case(f"Linear {b}×{i}→{o}", lambda i=i, o=o: nn.Linear(i, o), (b, i)) for b, i, o in linear]
    out.append(Case("Conv2d 32×64→64, 32×32, 3×3", lambda: nn.Conv2d(64, 64, 3, padding=1), (32, 64, 32, 32)))
    return out


def variants(plain: nn.Module) -> dict[str, nn.Module]:
    """The same layer four ways, all computing the same function at the start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the legacy API is deprecated, on purpose here
        legacy = torch.nn.utils.weight_norm(copy.deepcopy(plain))
    return {
        "plain": plain,
        "wnlib": wnlib.weight_norm(copy.deepcopy(plain)),
        "torch parametrizations": torch.nn.utils.parametrizations.weight_norm(copy.deepcopy(plain)),
        "torch legacy": legacy,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(layer: nn.Module, x: Tensor, grad: Tensor) -> None:
    for p in layer.parameters():
        p.grad = None
    x.grad = None
    layer(x).backward(grad)


def time_step(layer: nn.Module, x: Tensor, grad: Tensor, inner: int) -> float:
    """Seconds per forward + backward, averaged over ``inner`` back-to-back steps."""
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(inner):
        _step(layer, x, grad)
    _sync(x.device)
    return (time.perf_counter() - start) / inner


def peak_memory(layer: nn.Module, x: Tensor, grad: Tensor) -> int:
    """Peak bytes allocated above the starting point during one forward + backward.

    On CUDA from the allocator's statistics; on CPU from the profiler's allocation events, replayed in
    order to find the high-water mark.
    """
    _step(layer, x, grad)  # gradients exist afterwards in every variant: start from the same state
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        base = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        _step(layer, x, grad)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - base
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        _step(layer, x, grad)
    # Allocation (+bytes) and release (−bytes) records, replayed in time order.
    records = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in records:
        level += nbytes
        peak = max(peak, level)
    return peak


def run_case(case: Case, device: torch.device, rounds: int, target_s: float = 0.05) -> dict[str, dict]:
    """Times and peak memory for the four variants of one case."""
    torch.manual_seed(0)
    layers = {k: m.to(device) for k, m in variants(case.make()).items()}
    x = torch.randn(case.input_shape, device=device, requires_grad=True)
    grad = torch.randn_like(layers["plain"](x))
    for layer in layers.values():  # warm-up, and calibrate how many steps make one timed sample
        time_step(layer, x, grad, 2)
    inner = max(1, int(target_s / time_step(layers["plain"], x, grad, 3)))
    samples: dict[str, list[float]] = {k: [] for k in layers}
    for r in range(rounds):
        order = list(layers) if r % 2 == 0 else list(reversed(layers))
        for k in order:
            samples[k].append(time_step(layers[k], x, grad, inner))
    return {
        k: {"time": statistics.median(samples[k]), "peak": peak_memory(layers[k], x, grad)} for k in layers
    }


def machine(device: torch.device) -> str:
    """A one-line description of where the numbers were measured."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    what = line.split(":", 1)[1].strip()
                    break
        what += f", {torch.get_num_threads()} threads"
    return f"{what}; torch {torch.__version__}, Python {platform.python_version()}"


def table(results: dict[str, dict[str, dict]], where: str) -> str:
    """Markdown: time ratio to the plain layer (and peak memory) per case and variant."""
    names = ["wnlib", "torch parametrizations", "torch legacy"]
    head = "| case | plain (ms) | " + " | ".join(f"{n} (× plain)" for n in names)
    head += " | peak MiB: plain / " + " / ".join(names) + " |"
    lines = [f"Forward + backward, median over rounds. Measured on: {where}.", "", head]
    lines.append("|" + "---|" * (3 + len(names)))
    for case, r in results.items():
        base = r["plain"]["time"]
        ratios = " | ".join(f"{r[n]['time'] / base:.2f}" for n in names)
        mib = " / ".join(f"{r[n]['peak'] / 2**20:.1f}" for n in ["plain", *names])
        lines.append(f"| {case} | {base * 1e3:.2f} | {ratios} | {mib} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wnlib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per variant (default 15)")
    parser.add_argument(
        "--out", type=Path, default=None, help="Markdown file (default book/data/bench_<device>.md)"
    )
    parser.add_argument("--quick", action="store_true", help="skip the largest Linear, fewer rounds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU, and torch sees none")
    rounds = 5 if args.quick else args.rounds
    with torch_threads(args.threads if device.type == "cpu" else None):
        results = {}
        for case in cases(args.quick):
            results[case.name] = run_case(case, device, rounds)
            print(f"  measured {case.name}", flush=True)
        text = table(results, machine(device))
    print(text)
    out = args.out or Path("book/data") / f"bench_{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
