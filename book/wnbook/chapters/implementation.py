"""Computations and figures of the Implementation chapter (``book/implementation.ipynb``).

The chapter goes from the NumPy reference of Salimans & Kingma (2016), eq. 2–4, to the PyTorch op
(:func:`wnlib.functional.weight_norm`), the dense layer that never forms w
(:func:`wnlib.functional.linear`), the layers and the benchmark. This module holds what its figures and
tables compute:

- :func:`autograd_node` and :func:`saved_for_backward`: which path of the op ran and which tensors
  autograd keeps for the backward (what an op costs in memory); :func:`aten_ops`: the ATen operations one
  forward + backward dispatches (what it costs in per-op overhead);
- :func:`paths_agree`: the op on PyTorch's fused kernels against ``WeightNormFunction`` on the same inputs;
- :func:`gradient_penalty_vs_naive`, :func:`per_sample_grads_vs_loop`, :func:`compiled_vs_naive`,
  :func:`channels_last_vs_naive`: the modes users reach (second order, ``vmap``, a full-graph compile,
  channels_last), each against :func:`naive_twin` (the same parameters through the naive formula), and
  :func:`torch_fused_gradgradcheck` (PyTorch's own fused op fails it);
- :func:`eps_response`: what the clamp ‖v‖ → max(‖v‖, eps) does to w (eq. 2) and to the gradient gain
  g/‖v‖ of eq. 4, with :func:`plot_eps` and :func:`eps_widget`;
- :func:`bf16_norm_errors`: the norm of eq. 2 in bfloat16 with a bfloat16 accumulator versus wnlib's
  float32 accumulation, with :func:`plot_bf16`;
- :func:`scaled_vs_materialized`: y = (g/‖v‖) ⊙ (x vᵀ) + b against y = x wᵀ + b, values and gradients;
- :func:`output_channels_scaled`: which output channels a single g moves (ConvTranspose's kept axis);
- :func:`plot_bench`, :func:`gpu_bench_markdown` (parsed by :mod:`wnbook.benchmarks`): the tables
  written by ``python -m wnlib.bench`` and ``python -m wnlib.bench_gpu``.

Everything is small, seeded and deterministic; the weight norm itself always comes from wnlib.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import wnlib
from wnbook.benchmarks import TARGETS, VARIANTS, BenchTable
from wnbook.style import ACCENT, PALETTE, book_style, figure
from wnbook.widgets import control, frame_widget
from wnlib import bench

__all__ = [
    "BF16_UNIT_ROUNDOFF",
    "AccumulationErrors",
    "SavedTensor",
    "aten_ops",
    "autograd_node",
    "bf16_norm_errors",
    "channels_last_vs_naive",
    "compiled_vs_naive",
    "describe_saved",
    "draw_eps_frame",
    "eps_response",
    "eps_widget",
    "gpu_bench_markdown",
    "gradient_penalty_vs_naive",
    "naive_twin",
    "naive_weight",
    "output_channels_scaled",
    "paths_agree",
    "peak_memory_rechecked",
    "per_sample_grads_vs_loop",
    "plot_bench",
    "plot_bf16",
    "plot_eps",
    "saved_for_backward",
    "saved_table",
    "scaled_vs_materialized",
    "torch_fused_gradgradcheck",
]

BF16_UNIT_ROUNDOFF = 2.0**-8  # half the spacing of bfloat16 numbers just above 1 (8 significant bits)


# --------------------------------------------------------------------------------------------------
# What autograd keeps for the backward
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedTensor:
    """One tensor saved for the backward: its shape and size, and whether it is one of the inputs."""

    shape: tuple[int, ...]
    nbytes: int
    is_input: bool  # shares storage with an input (a parameter or x, in memory anyway)
    storage: int = field(repr=False, compare=False)
    dtype: torch.dtype | None = field(default=None, compare=False)


def saved_for_backward(fn: Callable[[], Tensor], inputs: Sequence[Tensor]) -> list[SavedTensor]:
    """The tensors autograd saves while ``fn()`` runs (``torch.autograd.graph.saved_tensors_hooks``).

    A tensor sharing storage with one of ``inputs`` costs no memory of its own; every other one is a
    new allocation kept alive until the backward, e.g. the materialized w = g·v/‖v‖ (eq. 2).
    """
    ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    saved: list[SavedTensor] = []

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        saved.append(SavedTensor(tuple(t.shape), t.numel() * t.element_size(), ptr in ptrs, ptr, t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


def autograd_node(fn: Callable[[], Tensor], inputs: Sequence[Tensor]) -> tuple[str, list[SavedTensor]]:
    """The autograd node that ``fn()``'s output hangs from: its name and the tensors it holds.

    For :func:`wnlib.functional.weight_norm` in eager mode the node is wnlib's own
    (``_EagerWeightNormBackward``, a Python node, ``saved_tensors``; ``TritonWeightNormBackward`` on
    the Triton path); C++ nodes such as PyTorch's ``WeightNormInterfaceBackward0`` keep their tensors as
    ``_saved_*`` attributes, which are listed too. Unlike
    :func:`saved_for_backward`, only this node's tensors are listed, not those of other nodes created
    on the way (for instance of a fused forward tried first and dropped).
    """
    node = fn().grad_fn
    if hasattr(node, "saved_tensors"):
        tensors = list(node.saved_tensors)
    else:
        names = sorted(  # v and g first, as WeightNormFunction saves them
            (a for a in dir(node) if a.startswith("_saved_")),
            key=lambda a: (a != "_saved_v", a != "_saved_g", a),
        )
        tensors = [getattr(node, a) for a in names]
        tensors = [t for t in tensors if isinstance(t, Tensor)]
    ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    saved = []
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        saved.append(SavedTensor(tuple(t.shape), t.numel() * t.element_size(), ptr in ptrs, ptr, t.dtype))
    return node.name(), saved


def describe_saved(saved: Sequence[SavedTensor]) -> str:
    """One line per saved tensor set: shape, dtype, and whether it is an input or a new allocation."""
    parts = []
    for s in saved:
        dtype = str(s.dtype).removeprefix("torch.") if s.dtype is not None else "?"
        parts.append(f"{s.shape} {dtype} {'input' if s.is_input else 'new'}")
    return " · ".join(parts)


def aten_ops(step: Callable[[], None]) -> list[str]:
    """The ATen operations ``step()`` dispatches, in order (forward and backward, if it runs both).

    Each is one trip through PyTorch's dispatcher; for small weights that fixed cost, not memory
    traffic, is what an op costs. Logged with a ``TorchDispatchMode``, so views and the ``detach`` of
    gradient accumulation count too.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    ops: list[str] = []

    class _Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with _Log():
        step()
    return ops


def paths_agree(
    shape: Sequence[int] = (64, 33), dim: int = 0, dtype: torch.dtype = torch.float64, seed: int = 0
) -> dict[str, float | str]:
    """:func:`wnlib.functional.weight_norm` against ``WeightNormFunction`` on the same v, g and ∇w L.

    On CPU for float32/64 along the first or last axis the former runs PyTorch's fused kernels
    (``_weight_norm_interface`` and its backward) under its own autograd node, the latter PyTorch ops;
    both compute eq. 2–4 with the same norms up to the order of the sum.
    Returns the path taken and, for w, ∇v and ∇g, the largest difference relative to the largest
    magnitude.
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()
    g = (torch.rand(shape[dim], generator=gen, dtype=dtype) + 0.5).requires_grad_()
    grad_w = torch.randn(*shape, generator=gen, dtype=dtype)

    def run(w: Tensor) -> list[Tensor]:
        w.backward(grad_w)
        out = [w.detach(), v.grad, g.grad]
        v.grad = g.grad = None
        return out

    w = wnlib.functional.weight_norm(v, g, dim)
    path = w.grad_fn.name()
    dispatched = run(w)
    ours = run(
        wnlib.functional.WeightNormFunction.apply(v, g, dim % len(shape), wnlib.functional.DEFAULT_EPS)[0]
    )
    out: dict[str, float | str] = {"path": path}
    for name, a, ref in zip(("w", "∇v", "∇g"), dispatched, ours, strict=True):
        out[name] = float((a - ref).abs().max() / ref.abs().max())
    return out


def _new_allocations(saved: Sequence[SavedTensor]) -> list[SavedTensor]:
    """Saved tensors that are not inputs, each storage counted once."""
    seen: set[int] = set()
    out = []
    for s in saved:
        if not s.is_input and s.storage not in seen:
            seen.add(s.storage)
            out.append(s)
    return out


def saved_table(cases: dict[str, list[SavedTensor]], weight_shape: Sequence[int]) -> tuple[str, dict]:
    """A text table of what each way of computing a layer keeps for its backward, and the counts.

    Returns the table and, per case, ``{"weight_sized": n, "new_kib": k}``: how many new tensors of
    the weight's size are kept, and the KiB of all new allocations kept.
    """
    numel = int(np.prod(weight_shape))
    lines = [f"{'':34}{'saved':>6}{'new weight-sized':>18}{'new KiB kept':>14}"]
    counts = {}
    for name, saved in cases.items():
        new = _new_allocations(saved)
        n_weight = sum(1 for s in new if int(np.prod(s.shape)) == numel)
        kib = sum(s.nbytes for s in new) / 1024
        counts[name] = {"weight_sized": n_weight, "new_kib": kib}
        lines.append(f"{name:34}{len(saved):>6}{n_weight:>18}{kib:>14.1f}")
    return "\n".join(lines), counts


# --------------------------------------------------------------------------------------------------
# Every mode against the naive formula
# --------------------------------------------------------------------------------------------------


def naive_weight(v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
    """w = g·v/max(‖v‖, eps) per slice in plain autograd ops: the definition, used as the oracle."""
    if dim is None:
        return g.reshape(()) * v / torch.sqrt((v * v).sum()).clamp_min(eps)
    reduce = [d for d in range(v.ndim) if d != dim]
    shape = [1] * v.ndim
    shape[dim] = -1
    return g.reshape(shape) * v / torch.sqrt((v * v).sum(reduce, keepdim=True)).clamp_min(eps)


def naive_twin(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``model``'s function with every weight computed by :func:`naive_weight` from the model's own
    v and g (so gradients reach the same parameters), through a plain copy and ``functional_call``."""
    import copy

    plain = copy.deepcopy(model)
    for module in plain.modules():
        for name in list(wnlib.weight_norm_specs(module)):
            wnlib.remove_weight_norm(module, name)

    def forward(x: Tensor) -> Tensor:
        params: dict[str, Tensor] = {}
        for prefix, module in model.named_modules():
            for name, spec in wnlib.weight_norm_specs(module).items():
                v, g = getattr(module, f"{name}_v"), wnlib.parametrize.gain(module, name)
                params[f"{prefix}.{name}" if prefix else name] = naive_weight(v, g, spec.dim, spec.eps)
        for key, p in model.named_parameters():
            if not key.endswith(("_v", "_g")):
                params[key] = p
        return torch.func.functional_call(plain, params, (x,))

    return forward


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _critic(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        wnlib.nn.Linear(6, 32), nn.Tanh(), wnlib.nn.Linear(32, 32), nn.Tanh(), wnlib.nn.Linear(32, 1)
    ).double()


def gradient_penalty_vs_naive(seed: int = 0) -> float:
    """A WGAN-GP gradient penalty, (‖∇x D(x)‖ − 1)², differentiated w.r.t. the critic's v and g
    (second order: through ``create_graph=True``), against the naive twin. Largest relative difference."""
    critic = _critic(seed)
    x = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)

    def penalty_grads(fn: Callable[[Tensor], Tensor]) -> list[Tensor]:
        (gx,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        penalty = ((gx.norm(dim=1) - 1) ** 2).mean()
        # the last bias does not move ∇x D, so its gradient is zero
        return list(torch.autograd.grad(penalty, list(critic.parameters()), materialize_grads=True))

    got, want = penalty_grads(critic), penalty_grads(naive_twin(critic))
    return max(_rel(a, b) for a, b in zip(got, want, strict=True) if b.abs().max() > 0)


def per_sample_grads_vs_loop(seed: int = 0, batch: int = 8) -> float:
    """Per-sample gradients by ``vmap(grad)`` (one call) against ``batch`` separate backward passes."""
    critic = _critic(seed)
    params = {k: p.detach() for k, p in critic.named_parameters()}
    x = torch.randn(batch, 6, dtype=torch.float64)

    def loss(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return torch.func.functional_call(critic, p, (xi[None],)).squeeze() ** 2

    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    worst = 0.0
    for i in range(batch):
        y = naive_twin(critic)(x[i : i + 1]).squeeze()
        grads = torch.autograd.grad(y**2, list(critic.parameters()))
        for (k, _), ref in zip(critic.named_parameters(), grads, strict=True):
            worst = max(worst, _rel(batched[k][i], ref))
    return worst


def _convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        wnlib.nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        wnlib.nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        wnlib.nn.Linear(8 * 8 * 8, 4),
    )


def _outputs_and_grads(fn: Callable[[Tensor], Tensor], model: nn.Module, x: Tensor) -> list[Tensor]:
    y = fn(x)
    return [y.detach(), *torch.autograd.grad(y.square().sum(), list(model.parameters()))]


def compiled_vs_naive(seed: int = 0, backend: str = "aot_eager") -> float:
    """``torch.compile(model, fullgraph=True)``: outputs and parameter gradients against the naive twin."""
    model = _convnet(seed)
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    got = _outputs_and_grads(compiled, model, x)
    want = _outputs_and_grads(naive_twin(model), model, x)
    return max(_rel(a, b) for a, b in zip(got, want, strict=True))


def channels_last_vs_naive(seed: int = 0) -> float:
    """A convnet moved to channels_last (v non-contiguous), with channels_last input: outputs and
    gradients against the naive twin of the contiguous model."""
    model = _convnet(seed)
    x = torch.randn(2, 3, 8, 8)
    want = _outputs_and_grads(naive_twin(model), model, x)
    model = model.to(memory_format=torch.channels_last)
    assert not model[0].weight_v.is_contiguous()
    got = _outputs_and_grads(model, model, x.to(memory_format=torch.channels_last))
    return max(_rel(a, b) for a, b in zip(got, want, strict=True))


def torch_fused_gradgradcheck() -> dict[str, bool]:
    """gradgradcheck (float64) of PyTorch's ``torch._weight_norm`` and of wnlib's op, first and last axis."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for dim in (0, 1):
        v = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        shape = [4, 1] if dim == 0 else [1, 3]
        g = (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
        for name, fn in (("torch._weight_norm", torch._weight_norm), ("wnlib", wnlib.functional.weight_norm)):
            out[f"{name}, dim={dim}"] = torch.autograd.gradgradcheck(
                lambda v, g, fn=fn, dim=dim: fn(v, g, dim), (v, g), raise_exception=False
            )
    return out


# --------------------------------------------------------------------------------------------------
# eps: ‖v‖ is clamped from below, n = max(‖v‖, eps)
# --------------------------------------------------------------------------------------------------


def eps_response(radii: np.ndarray, eps: float, g: float = 1.0) -> dict[str, np.ndarray]:
    """‖w‖ and the gradient gain at ‖v‖ = r, through :func:`wnlib.functional.weight_norm` (float64).

    For each radius r, v = r·u with u a unit 2-vector. wnlib divides by n = max(‖v‖, eps), so
    ‖w‖ = g for r ≥ eps and g·r/eps below. The upstream gradient ∇w L is a unit vector orthogonal to v,
    so eq. 3 gives ∇g L = 0 and eq. 4 gives ∇v L = (g/n)·∇w L: the gain ‖∇v L‖/‖∇w L‖ is g/‖v‖ for
    r ≥ eps and is capped at g/eps below. Returns ``w_norm`` and ``gain``.
    """
    r = torch.as_tensor(np.asarray(radii, dtype=np.float64))
    u = torch.tensor([0.6, 0.8], dtype=torch.float64)
    u_perp = torch.tensor([-0.8, 0.6], dtype=torch.float64)
    v = (r[:, None] * u).requires_grad_()
    gs = torch.full((len(r),), g, dtype=torch.float64)
    w = wnlib.functional.weight_norm(v, gs, dim=0, eps=eps)
    w.backward(u_perp.expand_as(w))
    return {
        "w_norm": torch.linalg.vector_norm(w.detach(), dim=1).numpy(),
        "gain": torch.linalg.vector_norm(v.grad, dim=1).numpy(),
    }


RADII = np.logspace(-10, 1, 221)
EPS_FIGURE = (1e-8, 1e-5, 1e-2)


def _eps_colors(eps_values: Sequence[float]) -> list[tuple]:
    cmap = plt.get_cmap("viridis")
    return [cmap(0.1 + 0.7 * i / max(len(eps_values) - 1, 1)) for i in range(len(eps_values))]


def _draw_eps(
    axes: Sequence[plt.Axes], eps_values: Sequence[float], colors: Sequence, g: float = 1.0
) -> None:
    ax_w, ax_gain = axes
    ax_gain.plot(RADII, g / RADII, ls="--", color=ACCENT, lw=1.5, label="no clamp: g/‖v‖", zorder=3)
    for eps, color in zip(eps_values, colors, strict=True):
        out = eps_response(RADII, eps, g)
        label = f"eps = {eps:.0e}"
        ax_w.plot(RADII, out["w_norm"] / g, color=color, lw=2, label=label)
        ax_gain.plot(RADII, out["gain"], color=color, lw=2, label=label)
        for ax in axes:
            ax.axvline(eps, color=color, ls=":", lw=1)
    ax_w.set(
        xscale="log",
        yscale="log",
        ylim=(1e-9, 5),
        xlabel="‖v‖ (dotted: eps)",
        ylabel="‖w‖ / g",
        title="‖w‖ = g above eps, g‖v‖/eps below",
    )
    ax_gain.set(
        xscale="log",
        yscale="log",
        ylim=(1e-2, 1e11),
        xlabel="‖v‖ (dotted: eps)",
        ylabel="gain ‖∇v L‖ / ‖∇w L‖",
        title="the gain g/‖v‖ is capped at g/eps",
    )
    ax_gain.legend(fontsize=8, loc="upper right")


def plot_eps(eps_values: Sequence[float] = EPS_FIGURE, g: float = 1.0) -> plt.Figure:
    """Static figure: ‖w‖/g and the gradient gain against ‖v‖ for several eps (eq. 2 and eq. 4)."""
    fig, axes = figure(2, height=3.2)
    with book_style():
        _draw_eps(axes, eps_values, _eps_colors(eps_values), g)
    fig.suptitle("The clamp changes nothing while ‖v‖ ≥ eps; it keeps a vanishing v finite")
    return fig


#: The eps widget's log-spaced grid: one frame per power of ten from 1e-9 to 1e-1.
EPS_WIDGET = tuple(10.0**e for e in range(-9, 0))


def draw_eps_frame(eps: float, g: float = 1.0) -> plt.Figure:
    """One frame of :func:`eps_widget`: the two panels of :func:`plot_eps` for one ``eps``, a new figure."""
    fig, axes = figure(2, height=3.2)
    with book_style():
        _draw_eps(axes, [eps], [PALETTE["weightnorm"]], g)
    fig.suptitle(f"eps = {eps:.0e}: ‖w‖ and the gain change only where ‖v‖ < eps")
    return fig


def eps_widget(g: float = 1.0, value: float = 1e-5) -> object:
    """A log-scale eps slider (:data:`EPS_WIDGET`) over the two panels of :func:`plot_eps`.

    Every frame is drawn now (:func:`wnbook.widgets.frame_widget`), so it works in the static HTML.
    """
    options = [e for e in EPS_WIDGET if np.isclose(e, value, rtol=1e-9)]
    value = options[0] if options else value  # 1e-5 as typed, or an error from control()
    labels = [f"{e:.0e}" for e in EPS_WIDGET]
    slider = control("slider", EPS_WIDGET, value, "eps", labels=labels)
    return frame_widget({"eps": slider}, lambda eps: draw_eps_frame(eps, g))


# --------------------------------------------------------------------------------------------------
# bfloat16: accumulate the norm in float32
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccumulationErrors:
    """Median relative error |‖w‖ − g| / g over the slices, per slice length, per way of summing Σv²."""

    lengths: np.ndarray
    errors: dict[str, np.ndarray]


RUNNING_BF16 = "running sum in bfloat16"
PAIRWISE_BF16 = "pairwise sum in bfloat16"
WNLIB_F32 = "wnlib: float32 accumulation"


def _pairwise_sum(a: Tensor) -> Tensor:
    """Σ along the last axis by halving (a tree of additions), each partial sum rounded to a's dtype."""
    while a.shape[-1] > 1:
        a = a[..., ::2] + a[..., 1::2]
    return a[..., 0]


def _w_norm_error(w: Tensor, g: float) -> float:
    return float((torch.linalg.vector_norm(w.double(), dim=1) - g).abs().median() / g)


def bf16_norm_errors(
    lengths: Sequence[int] = tuple(2**k for k in range(6, 15)),
    slices: int = 16,
    g: float = 1.0,
    seed: int = 0,
) -> AccumulationErrors:
    """The error in ‖w‖ = g (eq. 2) for bfloat16 weights, by how Σ v² is accumulated.

    v has ``slices`` rows of standard normal bfloat16 values; for each slice length L (a power of two)
    the first L columns are normalized. Squares are rounded to bfloat16 in every variant. A *running
    sum* keeps its accumulator in bfloat16, as a naive kernel would: once the sum is 2⁸ times a term,
    the term is rounded away, and the norm stalls. A *pairwise sum* (a tree of additions, also rounded
    to bfloat16 at every step) loses far less. Then w = (g/‖v‖)·v in bfloat16. wnlib's op accumulates
    in float32 and rounds only w. (PyTorch's own CPU reductions also accumulate bfloat16 in float32,
    so the naive variants are written out here.)
    """
    lengths = [int(n) for n in lengths]
    if any(n & (n - 1) for n in lengths):
        raise ValueError(f"lengths must be powers of two, got {lengths}")
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(slices, max(lengths), generator=gen).to(torch.bfloat16)
    g_t = torch.full((slices,), g, dtype=torch.bfloat16)
    squares = v * v
    running: dict[int, Tensor] = {}
    acc = torch.zeros(slices, dtype=torch.bfloat16)
    for k in range(max(lengths)):
        acc = acc + squares[:, k]
        if k + 1 in lengths:
            running[k + 1] = acc
    errors: dict[str, list[float]] = {RUNNING_BF16: [], PAIRWISE_BF16: [], WNLIB_F32: []}
    for n in lengths:
        vn = v[:, :n]
        for name, ssq in ((RUNNING_BF16, running[n]), (PAIRWISE_BF16, _pairwise_sum(squares[:, :n]))):
            scale = g_t / ssq.sqrt()  # bfloat16 throughout
            errors[name].append(_w_norm_error(vn * scale[:, None], g))
        errors[WNLIB_F32].append(_w_norm_error(wnlib.functional.weight_norm(vn, g_t), g))
    return AccumulationErrors(np.array(lengths), {k: np.array(e) for k, e in errors.items()})


def plot_bf16(result: AccumulationErrors) -> plt.Figure:
    """Log–log plot of :func:`bf16_norm_errors`, with bfloat16's unit roundoff for scale."""
    fig, ax = figure(height=3.3)
    styles = {
        RUNNING_BF16: {"color": ACCENT, "marker": "o"},
        PAIRWISE_BF16: {"color": "0.45", "marker": "s"},
        WNLIB_F32: {"color": PALETTE["weightnorm"], "marker": "D"},
    }
    with book_style():
        for name, err in result.errors.items():
            ax.plot(result.lengths, err, lw=2, ms=4, label=name, **styles[name])
        ax.axhline(BF16_UNIT_ROUNDOFF, color="0.6", ls=":", lw=1)
        ax.annotate(
            "bfloat16 unit roundoff 2⁻⁸",
            (result.lengths[-2], BF16_UNIT_ROUNDOFF),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color="0.4",
        )
        ax.set(
            yscale="log",
            xlabel="slice length L (elements per norm)",
            ylabel="median |‖w‖ − g| / g",
            title="A bfloat16 running sum stalls as L grows; float32 accumulation keeps ‖w‖ = g",
        )
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8.5, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------------
# The dense layer without w
# --------------------------------------------------------------------------------------------------


def scaled_vs_materialized(
    rows: int = 16, d_in: int = 512, d_out: int = 512, dtype: torch.dtype = torch.float64, seed: int = 0
) -> dict[str, float | str]:
    """:func:`wnlib.functional.linear` against x wᵀ + b with w = g·v/‖v‖ formed first (eq. 1–2).

    ``linear`` scales the output only when rows ≤ d_in and the weight has at least
    ``wnlib.functional.SCALED_LINEAR_MIN_NUMEL`` elements (the default 512 × 512 is exactly that many).
    Returns the path ``linear`` took (the name of its autograd node) and, for y and each gradient
    (x, v, g, b), the largest difference relative to the largest magnitude.
    """
    gen = torch.Generator().manual_seed(seed)

    def leaf(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    x, v, g, b = leaf(rows, d_in), leaf(d_out, d_in), leaf(d_out), leaf(d_out)
    grad_y = torch.randn(rows, d_out, generator=gen, dtype=dtype)
    results = []
    for form in ("scaled", "materialized"):
        for t in (x, v, g, b):
            t.grad = None
        if form == "scaled":
            y = wnlib.functional.linear(x, v, g, b)
            path = y.grad_fn.name()
        else:
            y = F.linear(x, wnlib.functional.weight_norm(v, g, 0), b)
        y.backward(grad_y)
        results.append([y.detach(), x.grad, v.grad, g.grad, b.grad])
    out: dict[str, float | str] = {"path": path}
    for name, a, ref in zip(("y", "∇x", "∇v", "∇g", "∇b"), *results, strict=True):
        out[name] = float((a - ref).abs().max() / ref.abs().max())
    return out


# --------------------------------------------------------------------------------------------------
# ConvTranspose: which axis is the output
# --------------------------------------------------------------------------------------------------


def output_channels_scaled(layer: nn.Module, g: Tensor, index: int, x: Tensor) -> list[int]:
    """Output channels whose values change when ``g[index]`` is doubled (restored afterwards).

    With the kept axis on the output channels (wnlib's ConvTranspose default, dim 1) one g moves one
    output channel; with torch's default dim 0 (the *input* channels of a ConvTranspose weight) one g
    moves every output channel.
    """
    with torch.no_grad():
        before = layer(x)
        flat = g.view(-1)
        old = flat[index].clone()
        flat[index] *= 2
        after = layer(x)
        flat[index] = old
    changed = (after - before).abs().amax(dim=[d for d in range(before.ndim) if d != 1]) > 0
    return changed.nonzero().flatten().tolist()


# --------------------------------------------------------------------------------------------------
# Benchmark tables
# --------------------------------------------------------------------------------------------------

# The parsed table comes from :mod:`wnbook.benchmarks`.


def plot_bench(table: BenchTable) -> plt.Figure:
    """Horizontal bars: each variant's forward + backward time as a ratio to the plain layer."""
    colors = {"wnlib": PALETTE["weightnorm"], "torch parametrizations": "0.5", "torch legacy": "0.8"}
    fig, ax = figure(height=0.55 * len(table.rows) * len(VARIANTS) / 2 + 1.2)
    with book_style():
        height = 0.8 / len(VARIANTS)
        for i, row in enumerate(table.rows):
            for j, name in enumerate(VARIANTS):
                y = i + (j - (len(VARIANTS) - 1) / 2) * height
                ax.barh(
                    y,
                    row.ratios[name],
                    height=height * 0.9,
                    color=colors[name],
                    label=name if i == 0 else None,
                )
            if row.case in TARGETS:
                ax.plot([TARGETS[row.case]] * 2, [i - 0.45, i + 0.45], color=ACCENT, lw=2)
        ax.axvline(1.0, color="k", lw=1)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color=ACCENT, lw=2))
        labels.append("target for wnlib")
        ax.set_yticks(range(len(table.rows)), [r.case for r in table.rows])
        ax.invert_yaxis()
        ax.set(
            xlabel="time of a step ÷ the plain network's (axis from 0; black line: 1 = free)",
            title="Weight norm's cost over the plain network",
        )
        ax.set_xlim(left=0)  # bars start at zero, so their lengths compare honestly
        ax.legend(handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
        ax.grid(axis="y", visible=False)
    return fig


def peak_memory_rechecked(case_name: str, repeats: int = 3) -> dict[str, list[float]]:
    """:func:`wnlib.bench.peak_memory` (MiB) of every variant of one benchmark case, ``repeats`` times over,
    in a fresh Python process (as ``python -m wnlib.bench`` measures: what the CPU allocator has seen
    before changes the result, see below).

    Set up as :func:`wnlib.bench.run_case` sets a case up (the four variants share one input ``x``, and
    some steps run before any measurement), then each variant is measured in the benchmark's order,
    and the whole round repeated. On CPU the measurement replays the profiler's allocation and release
    records; a release is recorded only for a block the CPU allocator saw allocated while memory
    profiling was on, so the first measurement can miss the release of a block allocated before it.
    """
    if case_name not in {c.name for c in bench.cases()}:
        raise ValueError(f"no benchmark case {case_name!r}; cases: {[c.name for c in bench.cases()]}")
    code = (
        "import json; from wnbook.chapters.implementation import _peaks_in_this_process as f; "
        f"print(json.dumps(f({case_name!r}, {int(repeats)})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peaks_in_this_process(case_name: str, repeats: int) -> dict[str, list[float]]:
    """The body of :func:`peak_memory_rechecked`, run in its fresh process."""
    case = {c.name: c for c in bench.cases()}[case_name]
    torch.manual_seed(0)
    nets = bench.variants(case.make())
    x = torch.randn(case.input_shape, requires_grad=not case.train_step)
    grad = torch.randn_like(nets["plain"](x))
    steps = {k: bench.Step(net, x, grad, case.train_step) for k, net in nets.items()}
    for step in steps.values():
        bench.time_step(step, 2)
    out: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            out[k].append(bench.peak_memory(step) / 2**20)
    return out


def gpu_bench_markdown(path: Path) -> object:
    """The GPU table as Markdown if ``path`` exists, else a plain statement that it is not measured yet."""
    from IPython.display import Markdown

    if path.exists():
        return Markdown(path.read_text())
    return Markdown(
        "*No GPU measurements yet:* `book/wnbook/data/bench_gpu.md` does not exist. "
        "It is written by `python -m wnlib.bench_gpu` on a machine with a CUDA GPU and Triton."
    )
