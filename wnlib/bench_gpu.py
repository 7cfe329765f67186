"""GPU benchmark of the fused Triton weight-norm kernels against a copy, PyTorch ops and torch's kernel.

    python -m wnlib.bench_gpu [--out book/wnbook/data/bench_gpu.md] [--quick] [--repeats N] [--sweep]

Needs a CUDA GPU and Triton. In one run, for weight shapes from 256×256 to 16384×16384 (float32, and
bfloat16 for the large ones) and a 512×512×3×3 conv weight, all normalized along ``dim=0``, it times

* ``copy``: a device-to-device copy of the weight (read N + write N elements), the bandwidth roof;
* ``triton``: :func:`wnlib.kernels.weight_norm_forward` (eq. 2) and ``weight_norm_backward`` (eq. 3–4);
* ``torch._weight_norm``: torch's fused kernel, what ``torch.nn.utils.parametrizations.weight_norm``
  calls, forward and (autograd) backward;
* ``torch ops``: the textbook chain ``v * (g / torch.linalg.vector_norm(v))`` and its autograd backward;

and a whole weight-normalized ``Linear`` layer (Triton weight + ``F.linear``) forward + backward
against a plain ``nn.Linear`` and ``parametrizations.weight_norm(nn.Linear)``.

Timing: CUDA events around each call, after warm-up (which also compiles the kernels), with L2 flushed
(a 256 MiB buffer zeroed) before every call; the median of ``--repeats`` calls. Bandwidth is the
*minimum* traffic of the operation over the time: forward reads v, g and writes w and the norms (≈ 2N
elements), backward reads ∇w, v, g, norms and writes ∇v, ∇g (≈ 3N). The same byte count is used for every
method, so "% copy" compares them on one scale with the copy measured in the same run. ``max err`` is
the largest difference from ``torch._weight_norm`` relative to the largest magnitude.

The table (with the GPU's name, torch, Triton and CUDA versions) is printed and written as Markdown to
``--out`` for the Implementation chapter. ``--sweep`` adds a table of the Triton kernels under other
launch plans (tile sizes, warps, split), to check or retune :func:`wnlib.kernels.triton_wn.make_plan`
on the GPU at hand.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wnlib._defaults import DEFAULT_EPS
from wnlib._extras import require

__all__ = [
    "DEFAULT_OUT",
    "LAYER_COLUMNS",
    "SWEEP_COLUMNS",
    "WEIGHT_COLUMNS",
    "LayerCase",
    "Timer",
    "TritonWNLinear",
    "WeightCase",
    "bandwidth_gbs",
    "environment",
    "format_table",
    "keepdim_shape",
    "layer_cases",
    "main",
    "rel_err",
    "render",
    "run_layer_case",
    "run_sweep_case",
    "run_weight_case",
    "sweep_cases",
    "sweep_overrides",
    "torch_ops_weight_norm",
    "traffic_bytes",
    "weight_cases",
]

#: Where ``--out`` writes the tables unless told otherwise (relative to the working directory).
DEFAULT_OUT = Path("book/wnbook/data/bench_gpu.md")


@dataclass(frozen=True)
class WeightCase:
    """A weight to normalize: its shape, the kept axis and the dtype."""

    name: str
    shape: tuple[int, ...]
    dim: int
    dtype: torch.dtype


@dataclass(frozen=True)
class LayerCase:
    """A Linear layer ``in → out`` on a batch of ``batch`` rows."""

    batch: int
    d_in: int
    d_out: int
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return f"Linear {self.batch}×{self.d_in}→{self.d_out}"


def weight_cases(quick: bool = False) -> list[WeightCase]:
    """256² … 16384² Linear weights (float32; bfloat16 from 4096²) and a 3×3 conv weight, dim 0."""
    f32, bf16 = torch.float32, torch.bfloat16
    sizes = [256, 1024, 4096] if quick else [256, 1024, 4096, 16384]
    cases = [WeightCase(f"{n}×{n}", (n, n), 0, f32) for n in sizes]
    cases += [WeightCase(f"{n}×{n}", (n, n), 0, bf16) for n in sizes if n >= 4096]
    cases.append(WeightCase("conv 512×512×3×3", (512, 512, 3, 3), 0, f32))
    if not quick:
        cases.append(WeightCase("conv 512×512×3×3", (512, 512, 3, 3), 0, bf16))
    return cases


def layer_cases(quick: bool = False) -> list[LayerCase]:
    """The weight-normalized Linear layers timed end to end (``quick``: the smallest only)."""
    if quick:
        return [LayerCase(1024, 1024, 1024, torch.float32)]
    return [
        LayerCase(1024, 1024, 1024, torch.float32),
        LayerCase(4096, 4096, 4096, torch.float32),
        LayerCase(4096, 4096, 4096, torch.bfloat16),
    ]


# --------------------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------------------


def keepdim_shape(shape: Sequence[int], dim: int) -> list[int]:
    """torch's shape for g: the size along ``dim``, 1 elsewhere."""
    out = [1] * len(shape)
    out[dim] = shape[dim]
    return out


def torch_ops_weight_norm(v: Tensor, g: Tensor, dim: int, eps: float = DEFAULT_EPS) -> Tensor:
    """w = g · v / max(‖v‖, eps) with plain PyTorch ops (the unfused baseline), norms in float32 for
    half-precision ``v``; ``g`` has the keep-dim shape."""
    axes = [a for a in range(v.ndim) if a != dim]
    acc = torch.float64 if v.dtype == torch.float64 else torch.float32
    norm = torch.linalg.vector_norm(v, dim=axes, keepdim=True, dtype=acc).clamp_min(eps)
    return v * (g.to(acc) / norm).to(v.dtype)


def traffic_bytes(shape: Sequence[int], dim: int | None, dtype: torch.dtype) -> tuple[int, int]:
    """Minimum bytes moved by (forward, backward): eq. 2 reads v, g and writes w, norm; eq. 3–4 read ∇w,
    v, g, norm and write ∇v, ∇g. Norms are float32 (float64 for float64 weights)."""
    n = 1
    for s in shape:
        n *= s
    slices = 1 if dim is None else shape[dim]
    e = torch.empty((), dtype=dtype).element_size()
    e_norm = 8 if dtype == torch.float64 else 4
    forward = (2 * n + slices) * e + slices * e_norm
    backward = (3 * n + 2 * slices) * e + slices * e_norm
    return forward, backward


def bandwidth_gbs(n_bytes: float, ms: float) -> float:
    """GB/s (10⁹ bytes per second) for ``n_bytes`` in ``ms`` milliseconds."""
    return n_bytes / (ms * 1e-3) / 1e9


def rel_err(a: Tensor, b: Tensor) -> float:
    """``max |a − b| / max |b|``, computed in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


class Timer:
    """Median milliseconds of a callable: warm-up, then one timed call at a time, with the L2 cache
    flushed (``flush_bytes`` zeroed) before each so that no call reads the previous one's data from
    cache. On CUDA each call is timed with a pair of CUDA events; elsewhere (only for smoke tests of
    this module) with ``time.perf_counter``."""

    def __init__(
        self, device: torch.device, repeats: int, warmup: int, flush_bytes: int = 256 * 2**20
    ) -> None:
        self.device = device
        self.repeats = repeats
        self.warmup = warmup
        self.flush = torch.empty(flush_bytes, dtype=torch.uint8, device=device)

    def __call__(self, fn: Callable[[], object]) -> float:
        cuda = self.device.type == "cuda"
        for _ in range(self.warmup):
            fn()
        if cuda:
            torch.cuda.synchronize(self.device)
        times = []
        for _ in range(self.repeats):
            self.flush.zero_()
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


# --------------------------------------------------------------------------------------------------
# Weight benchmark
# --------------------------------------------------------------------------------------------------


def run_weight_case(case: WeightCase, timer: Timer, device: torch.device) -> list[dict]:
    """One row per method: times, bandwidths, % of copy, error against torch._weight_norm."""
    from wnlib import kernels
    from wnlib.functional import TritonWeightNorm

    torch.manual_seed(0)
    v = torch.randn(case.shape, device=device, dtype=case.dtype)
    g_kd = torch.rand(keepdim_shape(case.shape, case.dim), device=device, dtype=case.dtype) + 0.5
    g = g_kd.reshape(-1)
    grad_w = torch.randn_like(v)
    fwd_bytes, bwd_bytes = traffic_bytes(case.shape, case.dim, case.dtype)

    copy_ms = timer(functools.partial(torch.empty_like(v).copy_, v))
    copy_gbs = bandwidth_gbs(2 * v.numel() * v.element_size(), copy_ms)

    # Every backward is timed through autograd (torch.autograd.grad on a retained graph), so each method
    # pays the same engine overhead; the forwards run on tensors that need no grad (no graph is built).
    v_req = v.detach().requires_grad_()
    g_req = g_kd.detach().requires_grad_()
    methods: dict[str, tuple[Callable[[], object], Callable[[Tensor, Tensor], Tensor]]] = {
        "triton": (
            lambda: kernels.weight_norm_forward(v, g, case.dim, DEFAULT_EPS),
            lambda v_, g_: TritonWeightNorm.apply(v_, g_, case.dim, DEFAULT_EPS)[0],
        ),
        "torch._weight_norm": (
            lambda: torch._weight_norm(v, g_kd, case.dim),
            lambda v_, g_: torch._weight_norm(v_, g_, case.dim),
        ),
        "torch ops": (
            lambda: torch_ops_weight_norm(v, g_kd, case.dim),
            lambda v_, g_: torch_ops_weight_norm(v_, g_, case.dim),
        ),
    }
    rows = []
    for method, (forward, differentiable) in methods.items():
        w = differentiable(v_req, g_req.reshape(-1) if method == "triton" else g_req)
        grad_v, grad_g = torch.autograd.grad(w, (v_req, g_req), grad_w, retain_graph=True)
        fwd_ms = timer(forward)
        bwd_ms = timer(lambda w=w: torch.autograd.grad(w, (v_req, g_req), grad_w, retain_graph=True))
        rows.append((method, fwd_ms, bwd_ms, (w.detach(), grad_v, grad_g.reshape(-1))))
        del w  # frees the graph
    reference = next(r[3] for r in rows if r[0] == "torch._weight_norm")
    out = []
    for method, fwd_ms, bwd_ms, outputs in rows:
        err = max(rel_err(a, b) for a, b in zip(outputs, reference, strict=True))
        fwd_gbs, bwd_gbs = bandwidth_gbs(fwd_bytes, fwd_ms), bandwidth_gbs(bwd_bytes, bwd_ms)
        out.append(
            dict(
                weight=case.name,
                dtype=str(case.dtype).removeprefix("torch."),
                copy_gbs=copy_gbs,
                method=method,
                fwd_ms=fwd_ms,
                fwd_gbs=fwd_gbs,
                fwd_pct=100 * fwd_gbs / copy_gbs,
                bwd_ms=bwd_ms,
                bwd_gbs=bwd_gbs,
                bwd_pct=100 * bwd_gbs / copy_gbs,
                err=err,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# Plan sweep (--sweep): alternatives to the default tiles, to tune make_plan on a given GPU
# --------------------------------------------------------------------------------------------------


def sweep_cases(quick: bool = False) -> list[WeightCase]:
    """Rows (dim 0), columns (dim 1) and one long slice (dim None) at sizes where bandwidth matters."""
    f32, bf16 = torch.float32, torch.bfloat16
    cases = [
        WeightCase("4096×4096", (4096, 4096), 0, f32),
        WeightCase("4096×4096", (4096, 4096), 1, f32),
        WeightCase("4096×4096", (4096, 4096), None, f32),
    ]
    if not quick:
        cases += [
            WeightCase("16384×16384", (16384, 16384), 0, f32),
            WeightCase("16384×16384", (16384, 16384), 0, bf16),
            WeightCase("16384×16384", (16384, 16384), 1, f32),
        ]
    return cases


def sweep_overrides(A: int, S: int, B: int) -> list[dict[str, int]]:
    """Plan overrides to try (besides the default) for an (A, S, B) problem: tile height/width, warps,
    split or not. Pure function of the shape, so it is testable without a GPU."""

    def pow2(n: int) -> int:
        return 1 if n <= 1 else 1 << (n - 1).bit_length()

    L = A * B
    out: list[dict[str, int]] = []
    if S == 1:  # one long slice: how many programs share it
        for split in (132, 264, 528, 1056):
            for block_k in (4096, 16384):
                out.append(dict(block_k=block_k, split=split))
    elif A == 1:  # rows
        for block_k in sorted({min(pow2(L), k) for k in (4096, 8192, 16384)}):
            for num_warps in (4, 8, 16, 32):
                out.append(dict(block_k=block_k, num_warps=num_warps, split=1))
    else:  # columns (and middle dims)
        for block_s in (4, 8, 16, 32):
            block_k = min(pow2(L), max(1, 16384 // block_s))
            for num_warps in (8, 16):
                out.append(dict(block_s=block_s, block_k=block_k, num_warps=num_warps, split=1))
                out.append(dict(block_s=block_s, block_k=min(block_k, 128), num_warps=num_warps))
    return out


def run_sweep_case(case: WeightCase, timer: Timer, device: torch.device) -> list[dict]:
    """Triton forward/backward time for the default plan and each of :func:`sweep_overrides`."""
    from wnlib.kernels import triton_wn as T

    torch.manual_seed(0)
    v = torch.randn(case.shape, device=device, dtype=case.dtype)
    g = torch.rand(1 if case.dim is None else case.shape[case.dim], device=device, dtype=case.dtype) + 0.5
    grad_w = torch.randn_like(v)
    fwd_bytes, bwd_bytes = traffic_bytes(case.shape, case.dim, case.dtype)
    copy_ms = timer(functools.partial(torch.empty_like(v).copy_, v))
    copy_gbs = bandwidth_gbs(2 * v.numel() * v.element_size(), copy_ms)
    A, S, B = T.view_3d(case.shape, case.dim)
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    default = T.make_plan(A, S, B, v.element_size(), n_sm)
    w_ref, norm_ref = T.forward(v, g, case.dim, DEFAULT_EPS, plan=default)
    grad_ref = T.backward(grad_w, v, g, norm_ref, case.dim, plan=default)[0]
    rows = []
    plans = [("default", default)]
    plans += [("", T.make_plan(A, S, B, v.element_size(), n_sm, **o)) for o in sweep_overrides(A, S, B)]
    seen = set()
    for label, plan in plans:
        if plan in seen:
            continue
        seen.add(plan)
        try:  # a plan that fails (to compile, say) is reported, not fatal: the sweep is exploratory
            w, norm = T.forward(v, g, case.dim, DEFAULT_EPS, plan=plan)
            grad_v = T.backward(grad_w, v, g, norm, case.dim, plan=plan)[0]
            err: float | str = max(rel_err(w, w_ref), rel_err(grad_v, grad_ref))
            fwd_ms = timer(lambda plan=plan: T.forward(v, g, case.dim, DEFAULT_EPS, plan=plan))
            bwd_ms = timer(lambda plan=plan: T.backward(grad_w, v, g, norm_ref, case.dim, plan=plan))
        except Exception as exc:
            err = f"failed: {type(exc).__name__}"
            fwd_ms = bwd_ms = float("nan")
        rows.append(
            dict(
                weight=case.name,
                dim=str(case.dim),
                dtype=str(case.dtype).removeprefix("torch."),
                plan=label,
                block_s=plan.block_s,
                block_k=plan.block_k,
                split=plan.split,
                warps=plan.num_warps,
                one_tile="yes" if plan.one_tile else "no",
                fwd_ms=fwd_ms,
                fwd_pct=100 * bandwidth_gbs(fwd_bytes, fwd_ms) / copy_gbs,
                bwd_ms=bwd_ms,
                bwd_pct=100 * bandwidth_gbs(bwd_bytes, bwd_ms) / copy_gbs,
                err=err,
            )
        )
    return rows


#: The launch-plan sweep table, as (column heading, row key) pairs.
SWEEP_COLUMNS = [
    ("weight", "weight"),
    ("dim", "dim"),
    ("dtype", "dtype"),
    ("plan", "plan"),
    ("block_s", "block_s"),
    ("block_k", "block_k"),
    ("split", "split"),
    ("warps", "warps"),
    ("one tile", "one_tile"),
    ("fwd ms", "fwd_ms"),
    ("fwd % copy", "fwd_pct"),
    ("bwd ms", "bwd_ms"),
    ("bwd % copy", "bwd_pct"),
    ("max err", "err"),
]


# --------------------------------------------------------------------------------------------------
# Layer benchmark
# --------------------------------------------------------------------------------------------------


class TritonWNLinear(nn.Module):
    """y = x wᵀ + b with w = g · v / ‖v‖ per output unit (eq. 1–2) through the fused kernels."""

    def __init__(self, plain: nn.Linear) -> None:
        super().__init__()
        with torch.no_grad():
            self.v = nn.Parameter(plain.weight.detach().clone())
            self.g = nn.Parameter(torch.linalg.vector_norm(self.v, dim=1))
            self.bias = nn.Parameter(plain.bias.detach().clone()) if plain.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        from wnlib.functional import TritonWeightNorm

        return F.linear(x, TritonWeightNorm.apply(self.v, self.g, 0, DEFAULT_EPS)[0], self.bias)


def run_layer_case(case: LayerCase, timer: Timer, device: torch.device) -> list[dict]:
    """Forward + backward of one training step's layer work, three ways."""
    import copy

    torch.manual_seed(0)
    plain = nn.Linear(case.d_in, case.d_out).to(device=device, dtype=case.dtype)
    layers = {
        "nn.Linear": plain,
        "WN-Linear (triton)": TritonWNLinear(plain),
        "parametrizations.weight_norm": torch.nn.utils.parametrizations.weight_norm(copy.deepcopy(plain)),
    }
    x = torch.randn(case.batch, case.d_in, device=device, dtype=case.dtype, requires_grad=True)
    grad_y = torch.randn(case.batch, case.d_out, device=device, dtype=case.dtype)

    def step(layer: nn.Module) -> None:
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        layer(x).backward(grad_y)

    with torch.no_grad():  # all three compute the same function at initialization (g = ‖v‖)
        y_plain = plain(x)
        errors = {name: rel_err(layer(x), y_plain) for name, layer in layers.items()}
    times = {name: timer(lambda layer=layer: step(layer)) for name, layer in layers.items()}
    base = times["nn.Linear"]
    return [
        dict(
            layer=case.name,
            dtype=str(case.dtype).removeprefix("torch."),
            method=k,
            ms=t,
            ratio=t / base,
            err=errors[k],
        )
        for k, t in times.items()
    ]


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats with 3 significant figures (fixed point when ≥ 0.1), None as '–'."""

    def cell(x: object) -> str:
        if x is None:
            return "–"
        if isinstance(x, float):
            if x != 0 and abs(x) < 0.1:
                return f"{x:.2e}"
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells but the table has {len(headers)} columns")
        lines.append("| " + " | ".join(cell(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


#: The weight (forward and backward of w alone) table, as (column heading, row key) pairs.
WEIGHT_COLUMNS = [
    ("weight", "weight"),
    ("dtype", "dtype"),
    ("method", "method"),
    ("fwd ms", "fwd_ms"),
    ("fwd GB/s", "fwd_gbs"),
    ("fwd % copy", "fwd_pct"),
    ("bwd ms", "bwd_ms"),
    ("bwd GB/s", "bwd_gbs"),
    ("bwd % copy", "bwd_pct"),
    ("copy GB/s", "copy_gbs"),
    ("max err", "err"),
]
#: The whole-layer table, as (column heading, row key) pairs.
LAYER_COLUMNS = [
    ("layer", "layer"),
    ("dtype", "dtype"),
    ("method", "method"),
    ("fwd+bwd ms", "ms"),
    ("× nn.Linear", "ratio"),
    ("output err", "err"),
]


def environment() -> dict[str, str]:
    """GPU name and library versions for the report's header."""
    triton = require("triton", "the GPU benchmark's report")
    return {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def render(
    env: dict[str, str],
    weight_rows: list[dict],
    layer_rows: list[dict],
    repeats: int,
    sweep_rows: Sequence[dict] = (),
) -> str:
    """The Markdown report: header, weight-norm table, layer table (and the plan sweep, if run)."""
    head = (
        f"Measured on **{env['gpu']}**, torch {env['torch']}, Triton {env['triton']}, CUDA {env['cuda']}, "
        f"Python {env['python']}, {env['date']}; `python -m wnlib.bench_gpu`. Median of {repeats} calls "
        "(CUDA events, L2 flushed before each). Bandwidth = minimum bytes (forward ≈ 2N, backward ≈ 3N "
        "elements) / time, the same count for every method; % copy is against a device-to-device copy "
        "measured in the same run. Backwards are timed through autograd. `max err`: largest difference "
        "of w, ∇v, ∇g from `torch._weight_norm`'s, relative to their largest magnitude; `output err`: "
        "the layer's output against `nn.Linear`'s at initialization (g = ‖v‖)."
    )
    weights = format_table(
        [h for h, _ in WEIGHT_COLUMNS], [[r[k] for _, k in WEIGHT_COLUMNS] for r in weight_rows]
    )
    layers = format_table(
        [h for h, _ in LAYER_COLUMNS], [[r[k] for _, k in LAYER_COLUMNS] for r in layer_rows]
    )
    text = (
        f"{head}\n\n### Weight norm alone (dim 0)\n\n{weights}\n"
        f"### A weight-normalized Linear layer, forward + backward\n\n{layers}"
    )
    if sweep_rows:
        sweep = format_table(
            [h for h, _ in SWEEP_COLUMNS], [[r[k] for _, k in SWEEP_COLUMNS] for r in sweep_rows]
        )
        text += (
            "\n### Launch-plan sweep (Triton kernels only; `max err` against the default plan)\n\n" + sweep
        )
    return text


def main(argv: list[str] | None = None) -> None:
    """``python -m wnlib.bench_gpu``: time every case on the GPU, write the Markdown tables to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m wnlib.bench_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"Markdown file (default {DEFAULT_OUT})"
    )
    parser.add_argument("--quick", action="store_true", help="up to 4096×4096, fewer repeats")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default 50)")
    parser.add_argument(
        "--sweep", action="store_true", help="also time alternative launch plans (block sizes, warps, split)"
    )
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        raise SystemExit(
            "python -m wnlib.bench_gpu needs a CUDA GPU, and torch sees none "
            f"(torch {torch.__version__}); the CPU benchmark is `python -m wnlib.bench`"
        )
    from wnlib import kernels

    if not kernels.available():
        raise SystemExit("python -m wnlib.bench_gpu needs Triton: pip install \"wnlib[gpu]\"")
    from wnlib.kernels import triton_wn

    if triton_wn.interpreted():
        raise SystemExit("TRITON_INTERPRET is set: unset it to benchmark compiled kernels")

    device = torch.device("cuda")
    repeats = 10 if args.quick else args.repeats
    timer = Timer(device, repeats=repeats, warmup=3)
    env = environment()
    print(f"{env['gpu']}: torch {env['torch']}, triton {env['triton']}", flush=True)
    weight_rows: list[dict] = []
    for case in weight_cases(args.quick):
        weight_rows += run_weight_case(case, timer, device)
        print(f"  measured {case.name} {case.dtype}", flush=True)
        torch.cuda.empty_cache()
    layer_rows: list[dict] = []
    for case in layer_cases(args.quick):
        layer_rows += run_layer_case(case, timer, device)
        print(f"  measured {case.name} {case.dtype}", flush=True)
        torch.cuda.empty_cache()
    sweep_rows: list[dict] = []
    if args.sweep:
        for case in sweep_cases(args.quick):
            sweep_rows += run_sweep_case(case, timer, device)
            print(f"  swept {case.name} dim {case.dim} {case.dtype}", flush=True)
            torch.cuda.empty_cache()
    text = render(env, weight_rows, layer_rows, repeats, sweep_rows)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
