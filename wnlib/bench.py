"""Benchmark: what weight norm costs on top of plain layers, for wnlib and for torch's two APIs.

    python -m wnlib.bench [--device cpu|cuda] [--threads N] [--rounds N] [--out FILE] [--quick]

Two kinds of rows, each timing four versions of the same network with the same weights, measured in
one run and interleaved round by round so that drift of the machine hits all of them alike: the plain
network, wnlib (``wnlib.weight_norm`` on every Linear/Conv/ConvTranspose), ``torch.nn.utils.
parametrizations.weight_norm`` and the legacy ``torch.nn.utils.weight_norm`` (all with the same ``dim``,
the output axis):

- layers (three Linear sizes and a Conv2d): forward + backward;
- models, a whole training step (forward, backward, Adam step) of three real networks: an off-policy
  RL critic (MLP 24→256→256→1, batch 256), the paper's ConvPool-CNN-C at 1/4 width (batch 32, 32×32
  inputs) and a HiFi-GAN-like Conv1d stack with an upsampling ConvTranspose1d.

Each variant is reported as a ratio to the plain network: the median over rounds of the per-round
ratio, ± half its interquartile range (the run-to-run noise), and the peak memory allocated during one
step. The table is printed, and written as Markdown to ``--out`` (the Implementation chapter reads
``book/wnbook/data/bench_cpu.md``, the book package's data file, written by
``python -m wnlib.bench --out book/wnbook/data/bench_cpu.md`` from the repository root).
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

__all__ = [
    "NORMALIZED",
    "VARIANTS",
    "Case",
    "Step",
    "cases",
    "convpool_cnn_c",
    "layer_cases",
    "machine",
    "main",
    "model_cases",
    "peak_memory",
    "rl_critic",
    "run_case",
    "table",
    "time_step",
    "variants",
    "vocoder_stack",
]

#: The layer types the benchmark puts weight norm on (Linear and every Conv/ConvTranspose).
NORMALIZED = (nn.Linear, nn.modules.conv._ConvNd)
#: The versions of each case that are timed; the first, the plain network, is the baseline of every ratio.
VARIANTS = ("plain", "wnlib", "torch parametrizations", "torch legacy")


@dataclass(frozen=True)
class Case:
    """One benchmark row: a network factory, its input shape, and whether a row is a training step."""

    name: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    train_step: bool = False


def layer_cases(quick: bool = False) -> list[Case]:
    """Linear (batch, in, out) and a 3×3 Conv2d on 32×32 images: forward + backward of one layer."""
    linear = [(32, 256, 256), (256, 1024, 1024), (64, 4096, 4096)]
    if quick:
        linear = linear[:2]
    out = [Case(f"Linear {b}×{i}→{o}", lambda i=i, o=o: nn.Linear(i, o), (b, i)) for b, i, o in linear]
    out.append(Case("Conv2d 32×64→64, 32×32, 3×3", lambda: nn.Conv2d(64, 64, 3, padding=1), (32, 64, 32, 32)))
    return out


def rl_critic() -> nn.Module:
    """An off-policy RL critic: Q(s, a) from a 24-d state-action vector, MLP 24→256→256→1."""
    return nn.Sequential(nn.Linear(24, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))


def convpool_cnn_c() -> nn.Module:
    """The paper's ConvPool-CNN-C (§5.1) at 1/4 width, plain (wnlib.experiments.models.paper_cnn)."""
    from wnlib.experiments.models import paper_cnn

    model = paper_cnn((3, 32, 32), 10, "normal", width=0.25)
    for module in model.modules():  # the experiments build every parameterization from wnlib layers
        for name in list(wnlib.weight_norm_specs(module)):
            wnlib.remove_weight_norm(module, name)
    return model


class _ResBlock1d(nn.Module):
    """HiFi-GAN's residual block: leaky ReLU → dilated Conv1d → leaky ReLU → Conv1d, plus the input."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        act = nn.functional.leaky_relu
        return x + self.conv2(act(self.conv1(act(x, 0.1)), 0.1))


def vocoder_stack() -> nn.Module:
    """A HiFi-GAN-like generator stage: Conv1d 80→128 (k 7), ConvTranspose1d 128→64 (×8 upsampling,
    k 16), three dilated residual blocks (1, 3, 5) and Conv1d 64→1 (k 7) with tanh."""
    return nn.Sequential(
        nn.Conv1d(80, 128, 7, padding=3),
        nn.LeakyReLU(0.1),
        nn.ConvTranspose1d(128, 64, 16, stride=8, padding=4),
        *(_ResBlock1d(64, d) for d in (1, 3, 5)),
        nn.LeakyReLU(0.1),
        nn.Conv1d(64, 1, 7, padding=3),
        nn.Tanh(),
    )


def model_cases() -> list[Case]:
    """Whole training steps (forward, backward, Adam) of the three networks issue 9 names."""
    return [
        Case("RL critic MLP 24→256→256→1, batch 256", rl_critic, (256, 24), True),
        Case("ConvPool-CNN-C ¼ width, batch 32, 32×32", convpool_cnn_c, (32, 3, 32, 32), True),
        Case("HiFi-GAN-like Conv1d stack, batch 4, 32 frames", vocoder_stack, (4, 80, 32), True),
    ]


def cases(quick: bool = False) -> list[Case]:
    """Every row: the layers, then the models."""
    return layer_cases(quick) + model_cases()


def _output_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def _wrap_every_layer(model: nn.Module, apply: Callable[[nn.Module, int], nn.Module]) -> nn.Module:
    """A copy of ``model`` with ``apply(layer, dim)`` on every Linear/Conv/ConvTranspose (output axis)."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, NORMALIZED):
            apply(module, _output_dim(module))
    return model


def variants(plain: nn.Module) -> dict[str, nn.Module]:
    """The same network four ways, all computing the same function at the start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the legacy API is deprecated, on purpose here
        legacy = _wrap_every_layer(plain, lambda m, d: torch.nn.utils.weight_norm(m, dim=d))
    return {
        "plain": plain,
        "wnlib": _wrap_every_layer(plain, lambda m, d: wnlib.weight_norm(m, dim=d)),
        "torch parametrizations": _wrap_every_layer(
            plain, lambda m, d: torch.nn.utils.parametrizations.weight_norm(m, dim=d)
        ),
        "torch legacy": legacy,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Step:
    """One timed unit of work on a network: forward + backward, or a whole Adam training step."""

    def __init__(self, net: nn.Module, x: Tensor, grad: Tensor, train_step: bool) -> None:
        self.net, self.x, self.grad = net, x, grad
        self.opt = torch.optim.Adam(net.parameters(), lr=1e-4) if train_step else None

    def __call__(self) -> None:
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
            self.net(self.x).backward(self.grad)
            self.opt.step()
            return
        for p in self.net.parameters():
            p.grad = None
        self.x.grad = None
        self.net(self.x).backward(self.grad)


def time_step(step: Step, inner: int) -> float:
    """Seconds per step, averaged over ``inner`` back-to-back steps."""
    _sync(step.x.device)
    start = time.perf_counter()
    for _ in range(inner):
        step()
    _sync(step.x.device)
    return (time.perf_counter() - start) / inner


def peak_memory(step: Step) -> int:
    """Peak bytes allocated above the starting point during one step.

    On CUDA from the allocator's statistics; on CPU from the profiler's allocation events, replayed in
    order to find the high-water mark.
    """
    step()  # gradients (and optimizer state) exist afterwards in every variant: start from the same state
    if step.x.device.type == "cuda":
        torch.cuda.synchronize(step.x.device)
        base = torch.cuda.memory_allocated(step.x.device)
        torch.cuda.reset_peak_memory_stats(step.x.device)
        step()
        torch.cuda.synchronize(step.x.device)
        return torch.cuda.max_memory_allocated(step.x.device) - base
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        step()
    # Allocation (+bytes) and release (−bytes) records, replayed in time order.
    records = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in records:
        level += nbytes
        peak = max(peak, level)
    return peak


def _ratio_stats(samples: list[float], base: list[float]) -> tuple[float, float]:
    """Median of the per-round ratios to the plain network, and half their interquartile range."""
    ratios = sorted(a / b for a, b in zip(samples, base, strict=True))
    if len(ratios) < 4:
        return statistics.median(ratios), 0.0
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), (q3 - q1) / 2


def run_case(case: Case, device: torch.device, rounds: int, target_s: float = 0.05) -> dict[str, dict]:
    """Times (ratio to plain, noise) and peak memory for the four variants of one case."""
    torch.manual_seed(0)
    nets = {k: m.to(device) for k, m in variants(case.make()).items()}
    x = torch.randn(case.input_shape, device=device, requires_grad=not case.train_step)
    grad = torch.randn_like(nets["plain"](x))
    steps = {k: Step(net, x, grad, case.train_step) for k, net in nets.items()}
    for step in steps.values():  # warm-up, and calibrate how many steps make one timed sample
        time_step(step, 2)
    inner = max(1, int(target_s / time_step(steps["plain"], 3)))
    samples: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for k in order:
            samples[k].append(time_step(steps[k], inner))
    out = {}
    for k, step in steps.items():
        ratio, noise = _ratio_stats(samples[k], samples["plain"])
        time_s = statistics.median(samples[k])
        out[k] = {"time": time_s, "ratio": ratio, "noise": noise, "peak": peak_memory(step)}
    return out


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


def table(results: dict[str, dict[str, dict]], where: str, rounds: int) -> str:
    """Markdown: time ratio to the plain network ± noise (and peak memory) per case and variant."""
    names = VARIANTS[1:]
    head = "| case | plain (ms) | " + " | ".join(f"{n} (× plain)" for n in names)
    head += " | peak MiB: plain / " + " / ".join(names) + " |"
    lines = [
        f"Layers: forward + backward; models: a whole training step (forward, backward, Adam). Ratio to "
        f"the plain network: median of {rounds} interleaved rounds ± half the interquartile range. "
        f"Measured on: {where}.",
        "",
        head,
        "|" + "---|" * (3 + len(names)),
    ]
    for case, r in results.items():
        ratios = " | ".join(f"{r[n]['ratio']:.2f} ±{r[n]['noise']:.2f}" for n in names)
        mib = " / ".join(f"{r[n]['peak'] / 2**20:.1f}" for n in VARIANTS)
        lines.append(f"| {case} | {r['plain']['time'] * 1e3:.2f} | {ratios} | {mib} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m wnlib.bench``: time every case, print the Markdown table (``--out``: also write it)."""
    parser = argparse.ArgumentParser(prog="python -m wnlib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per variant (default 15)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    parser.add_argument("--quick", action="store_true", help="skip the largest Linear, 5 rounds")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU, and torch sees none")
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")
    rounds = 5 if args.quick else args.rounds
    selected = [c for c in cases(args.quick) if args.only is None or args.only in c.name]
    with torch_threads(args.threads if device.type == "cpu" else None):
        results = {}
        for case in selected:
            results[case.name] = run_case(case, device, rounds)
            print(f"  measured {case.name}", flush=True)
        text = table(results, machine(device), rounds)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
