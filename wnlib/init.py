"""Data-dependent initialization of weight-normalized networks (Salimans & Kingma 2016, §3).

For each weight-normalized layer, in forward order, with the layers before it already initialized, the
pre-activation of each output feature on a batch of data is first computed with unit scale and no bias,

    t = v·x / ‖v‖,

and then g and b are set so that the layer's output y = g·t + b has zero mean and standard deviation
``init_scale`` over the batch (eq. 5–6):

    g ← init_scale / σ[t],        b ← −μ[t] · init_scale / σ[t].

Statistics run over the batch and, for convolutions, over all spatial positions, in float64 and in two
passes (μ first, then the centred Σ(t − μ)²), so a large common offset does not cancel σ away. A layer
followed directly by :class:`~wnlib.mean_only_bn.MeanOnlyBatchNorm` keeps its bias: the batch norm
removes the mean, so only g ← init_scale/σ is set, as in the paper's code.

Guarantees of :func:`data_dependent_init`:

- **Atomic.** On any error every parameter and buffer of the model is bit-identical to before, and every
  module's train/eval mode and every parameter's ``requires_grad`` are as they were. On success only g and
  the biases change (buffers such as running statistics are restored too).
- **Non-finite values** in ``x`` or in a layer's pre-activations t raise :class:`InitError` naming the
  layer (and the first module whose output went non-finite).
- **Constant features**: a feature whose σ[t] ≤ ``constant_rtol(dtype)``·rms(t), i.e. within the
  rounding error of t's dtype of its own magnitude rms(t) = √(μ² + σ²), raises :class:`InitError` listing
  exactly those features (g = init_scale/σ would be set from rounding noise).
- **Distributed.** With a ``process_group``, (n, Σt) and then the centred Σ(t − μ)² are all-reduced, and
  during the init pass ``nn.BatchNorm*`` and ``MeanOnlyBatchNorm`` normalize with the statistics of the
  global batch too, so every rank sets the g and b of a single-process init on the concatenated shards.
  Before each collective step the ranks all-reduce an ok/failed flag: when one rank fails, all raise
  together, the others with an error naming the failing rank and its message.

The Initialization chapter shows what this does to the activations of a deep network, and checks each
guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from wnlib.mean_only_bn import MeanOnlyBatchNorm
from wnlib.parametrize import gain, is_weight_normed, set_gain, weight_norm_specs

__all__ = [
    "InitError",
    "InitReport",
    "LayerInit",
    "constant_rtol",
    "data_dependent_init",
    "output_axis",
]

_CONSTANT_ULPS = 1000
"""A feature is constant when σ[t] ≤ _CONSTANT_ULPS · eps(dtype) · rms(t) (capped at 1e-2 · rms(t))."""


@dataclass
class LayerInit:
    """What data-dependent init did to one layer: per-feature output statistics before and after."""

    name: str
    kind: str
    mean_before: Tensor
    std_before: Tensor
    mean_after: Tensor
    std_after: Tensor
    followed_by_mean_only_bn: bool = False
    module: nn.Module | None = field(default=None, repr=False, compare=False)


class InitReport(list):
    """The per-layer :class:`LayerInit` records, in forward order, printable as a table."""

    def __str__(self) -> str:
        width = max([5, *(len(r.name) for r in self)])
        kind = max([4, *(len(r.kind) for r in self)])
        cols = ("|μ| before", "σ before", "|μ| after", "σ after")
        rows = [f"{'layer':<{width}}  {'kind':<{kind}}" + "".join(f"{c:>11}" for c in cols)]
        for r in self:
            means = (r.mean_before, r.std_before, r.mean_after, r.std_after)
            stats = (m.abs().mean() if k % 2 == 0 else m.mean() for k, m in enumerate(means))
            rows.append(f"{r.name:<{width}}  {r.kind:<{kind}}" + "".join(f"{float(x):>11.4f}" for x in stats))
        return "\n".join(rows)


class InitError(ValueError):
    """A batch that cannot initialize a layer: too few values, non-finite values, a constant feature, or
    (with a ``process_group``) a failure on another rank."""


def _layer(name: str) -> str:
    """A module's name for messages: "layer 'encoder.0'", or "the model itself" for the root."""
    return f"layer {name!r}" if name else "the model itself"


def output_axis(module: nn.Module) -> int:
    """Axis of the output features: last for Linear, 1 (channels) for convolutions."""
    return -1 if isinstance(module, nn.Linear) else 1


def constant_rtol(dtype: torch.dtype) -> float:
    """The relative threshold below which σ[t] counts as zero: ``_CONSTANT_ULPS``·eps of t's dtype, at most
    1e-2 (2.2e-13 for float64, 1.2e-4 for float32, 1e-2 for float16 and bfloat16).

    >>> constant_rtol(torch.float32)
    0.00011920928955078125
    """
    return min(_CONSTANT_ULPS * torch.finfo(dtype).eps, 1e-2)


def _check_init_scale(init_scale: Any) -> float:
    if isinstance(init_scale, bool) or not isinstance(init_scale, int | float):
        raise TypeError(f"init_scale must be a positive finite number, got {type(init_scale).__name__}")
    if not math.isfinite(init_scale) or init_scale <= 0:
        raise ValueError(f"init_scale must be positive and finite, got {init_scale}")
    return float(init_scale)


def _check_initializable(name: str, module: nn.Module) -> None:
    spec = weight_norm_specs(module)["weight"]
    if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
        expected = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
        if spec.dim != expected:
            raise ValueError(
                f"data-dependent init needs one g per output feature, i.e. weight norm over dim={expected} "
                f"for {type(module).__name__}; {_layer(name)} has dim={spec.dim}"
            )
        if isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups != 1:
            raise ValueError(f"{_layer(name)}: data-dependent init of grouped ConvTranspose is not supported")
        return
    raise TypeError(
        f"{_layer(name)} ({type(module).__name__}) is weight-normalized, but data-dependent init only knows "
        "the output features of Linear, Conv and ConvTranspose layers"
    )


def _weight_normed_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in model.named_modules() if is_weight_normed(m, "weight")]
    if not layers:
        raise ValueError(
            "model has no weight-normalized layer: use wnlib.nn layers or wrap layers with wnlib.weight_norm"
        )
    for name, module in layers:
        _check_initializable(name, module)
    return layers


def _non_finite(y: Tensor) -> int:
    """How many entries of y are NaN or ±inf (0 for non-floating tensors)."""
    if not (y.is_floating_point() or y.is_complex()):
        return 0
    return int((~torch.isfinite(y)).sum())


def _input_error(x: Any) -> str | None:
    """Why the batch itself cannot initialize anything (non-finite entries), or None."""
    args = x if isinstance(x, tuple | list) else (x,)
    for k, arg in enumerate(args):
        if isinstance(arg, Tensor) and (bad := _non_finite(arg)):
            where = "x" if len(args) == 1 else f"x[{k}]"
            return (
                f"{where} has {bad} non-finite values (NaN or inf) out of {arg.numel()}; data-dependent init "
                "needs a finite batch: drop or fix those examples"
            )
    return None


# --------------------------------------------------------------------------------------------------
# Agreement between ranks
# --------------------------------------------------------------------------------------------------


class _Sync:
    """The collectives of one init call: all-reduces of statistics, and an ok/failed flag before each
    collective step, so that when one rank fails every rank raises (none waits on a dead peer)."""

    def __init__(self, process_group: Any, device: torch.device) -> None:
        self.distributed = process_group is not None and process_group is not False
        self.group = None if process_group is True else process_group
        self.device = device
        self.rank = dist.get_rank(self.group) if self.distributed else 0
        self.world = dist.get_world_size(self.group) if self.distributed else 1
        self.broken = False  # a collective itself raised: no further collective can be trusted

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place (nothing in a single process)."""
        if self.distributed:
            self._collective(dist.all_reduce, tensor, group=self.group)
        return tensor

    def agree(self, error: str | None) -> None:
        """Raise :class:`InitError` on every rank if ``error`` is set on any rank; else return."""
        failed = self.exchange(error)
        if error is not None:
            raise InitError(error)
        if failed:
            first, message = failed[0]
            raise InitError(
                f"data-dependent init failed on rank(s) {[r for r, _ in failed]} of {self.world}, so it "
                f"stops on rank {self.rank} too. Rank {first}: {message}"
            )

    def exchange(self, error: str | None) -> list[tuple[int, str]]:
        """All-reduce this rank's ok/failed flag; return (rank, message) of every rank that failed."""
        if not self.distributed or self.broken:
            return [(self.rank, error)] if error is not None else []
        flags = torch.zeros(self.world, dtype=torch.float64, device=self.device)
        flags[self.rank] = float(error is not None)
        self._collective(dist.all_reduce, flags, group=self.group)
        failed = torch.nonzero(flags).flatten().tolist()
        if not failed:
            return []
        messages: list[Any] = [None] * self.world
        self._collective(dist.all_gather_object, messages, error, group=self.group)
        return [(r, messages[r]) for r in failed]

    def _collective(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            op(*args, **kwargs)
        except Exception:
            self.broken = True
            raise


def _moments(y: Tensor, axis: int, sync: _Sync) -> tuple[Tensor, Tensor, int]:
    """Per-feature mean and population standard deviation of y over every axis but ``axis``, in float64,
    in two passes: (n, Σy) all-reduced, then the centred Σ(y − μ)² all-reduced."""
    y = y.movedim(axis, -1).reshape(-1, y.shape[axis]).double()
    count = torch.full((y.shape[1],), float(y.shape[0]), dtype=torch.float64, device=y.device)
    sums = sync.all_reduce(torch.stack([count, y.sum(0)]))
    n = int(sums[0, 0].item())
    mu = sums[1] / max(n, 1)
    centred = sync.all_reduce((y - mu).square().sum(0))
    return mu, (centred / max(n, 1)).sqrt(), n


def _stats_error(name: str, mu: Tensor, sigma: Tensor, n: int, dtype: torch.dtype) -> str | None:
    """Why (μ, σ) cannot set g = init_scale/σ: too few values, or constant features; or None."""
    if n < 2:
        return (
            f"{_layer(name)}: data-dependent init needs at least 2 values per feature, got a batch "
            f"giving {n}; use a larger batch"
        )
    rtol = constant_rtol(dtype)
    constant = sigma <= rtol * (mu.square() + sigma.square()).sqrt()
    if bool(constant.any()):
        return (
            f"{_layer(name)}: feature(s) {torch.nonzero(constant).flatten().tolist()} are constant over "
            f"the init batch (σ[t] ≤ {rtol:.2g}·rms(t), the rounding error of {dtype}), so g = "
            "init_scale/σ is undefined; use a larger or more varied batch, or drop the inputs that never vary"
        )
    return None


def _batch_norm_error(name: str, bn: nn.Module, x: Tensor) -> str | None:
    """Why ``bn`` (BatchNorm or MeanOnlyBatchNorm) cannot normalize x with batch statistics, or None."""
    features = bn.num_features
    if x.ndim < 2 or x.shape[1] != features:
        return f"{_layer(name)}: {type(bn).__name__}({features}) got input of shape {tuple(x.shape)}"
    if bad := _non_finite(x):
        return f"{_layer(name)} ({type(bn).__name__}): {bad} of {x.numel()} inputs are NaN or inf"
    return None


def _global_batch_norm(name: str, bn: nn.Module, sync: _Sync) -> Callable[[Tensor], Tensor]:
    """A forward for ``bn`` in the init pass that normalizes with the statistics of the global batch:
    y = x − μ + b (MeanOnlyBatchNorm, eq. 7) or (x − μ)/√(σ² + eps)·γ + β (BatchNorm)."""

    def forward(x: Tensor) -> Tensor:
        sync.agree(_batch_norm_error(name, bn, x))
        mu, sigma, n = _moments(x, 1, sync)
        few = f"{_layer(name)}: batch norm needs at least 2 values per feature, got {n}; use a larger batch"
        sync.agree(None if n >= 2 else few)
        shape = [1, -1] + [1] * (x.ndim - 2)
        y = x.double() - mu.view(shape)
        if not isinstance(bn, MeanOnlyBatchNorm):
            y = y / (sigma.square() + bn.eps).sqrt().view(shape)
            y = y * bn.weight.double().view(shape) if bn.weight is not None else y
        return (y + bn.bias.double().view(shape) if bn.bias is not None else y).to(x.dtype)

    return forward


@contextmanager
def _global_normalization(model: nn.Module, names: dict[nn.Module, str], sync: _Sync) -> Iterator[None]:
    """With a process group, batch norms use the global batch's statistics for the duration."""
    kinds = nn.modules.batchnorm._BatchNorm | MeanOnlyBatchNorm
    norms = [m for m in model.modules() if isinstance(m, kinds)] if sync.distributed else []
    own = {m: m.__dict__["forward"] for m in norms if "forward" in m.__dict__}
    for m in norms:
        m.forward = _global_batch_norm(names[m], m, sync)
    try:
        yield
    finally:
        for m in norms:
            del m.forward
            if m in own:
                m.forward = own[m]


# --------------------------------------------------------------------------------------------------
# The init pass
# --------------------------------------------------------------------------------------------------


class _Initializer:
    """Forward hooks that initialize each weight-normalized layer as the batch passes through it."""

    def __init__(self, model: nn.Module, init_scale: float, sync: _Sync) -> None:
        self.init_scale = init_scale
        self.sync = sync
        self.names = {m: n for n, m in model.named_modules()}
        self.report = InitReport()
        self.old: dict[nn.Module, tuple[Tensor, Tensor | None]] = {}  # g and b before init
        self.last_leaf: nn.Module | None = None
        self.current = ""
        self.first_non_finite: str | None = None  # the first module whose output was NaN or inf

    def track(self, module: nn.Module, args: tuple) -> None:
        """Pre-hook on every leaf module: remember what ran last (for mean-only BN and error messages)."""
        self.current = self.names[module]
        if isinstance(module, MeanOnlyBatchNorm) and self.report and self.report[-1].module is self.last_leaf:
            self._keep_bias_before_mean_only_bn(self.last_leaf, module)
        self.last_leaf = module

    def watch(self, module: nn.Module, args: tuple, y: Any) -> None:
        """Hook on every leaf module: remember the first one whose output is non-finite."""
        if self.first_non_finite is None and isinstance(y, Tensor) and _non_finite(y):
            self.first_non_finite = self.names[module]

    def before(self, module: nn.Module, args: tuple) -> None:
        """Pre-hook on a weight-normalized layer: unit scale and zero bias, so that its output is t."""
        if module in self.old:
            return
        bias = module.bias.detach().clone() if module.bias is not None else None
        g = gain(module)
        self.old[module] = (g.detach().clone(), bias)
        set_gain(module, torch.ones_like(g))
        if module.bias is not None:
            module.bias.zero_()

    def after(self, module: nn.Module, args: tuple, t: Tensor) -> Tensor | None:
        """Hook on a weight-normalized layer: check t, then set g and b from its statistics (eq. 5–6)."""
        if any(r.module is module for r in self.report):
            return None  # a shared layer, called again: already initialized
        name = self.names[module]
        self.sync.agree(self._non_finite_error(name, module, t))
        mu, sigma, n = _moments(t, output_axis(module), self.sync)
        self.sync.agree(_stats_error(name, mu, sigma, n, t.dtype))
        return self._set_g_and_b(name, module, t, mu, sigma)

    def _non_finite_error(self, name: str, module: nn.Module, t: Tensor) -> str | None:
        if not (bad := _non_finite(t)):
            return None
        origin = self.first_non_finite
        where = "" if origin in (None, name) else f"; the first non-finite output came from {_layer(origin)}"
        return (
            f"{_layer(name)} ({type(module).__name__}): {bad} of {t.numel()} pre-activations t = v·x/‖v‖ are "
            f"non-finite (NaN or inf){where}, so σ[t] and g are undefined; check the batch and the layers "
            "before it"
        )

    def _set_g_and_b(self, name: str, module: nn.Module, t: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
        axis = output_axis(module)
        shape = [1] * t.ndim
        shape[axis] = -1

        def per_feature(x: Tensor) -> Tensor:
            return x.reshape(shape).to(t.dtype)

        old_g, old_b = self.old[module]
        before = t * per_feature(old_g) + (per_feature(old_b) if old_b is not None else 0)
        scale = self.init_scale / sigma
        set_gain(module, scale)
        y = t * per_feature(scale)
        if module.bias is not None:
            module.bias.copy_(-mu * scale)
            y = y + per_feature(module.bias)
        stats = (*_moments(before, axis, self.sync)[:2], *_moments(y, axis, self.sync)[:2])
        self.report.append(LayerInit(name, type(module).__name__, *stats, module=module))
        return y

    def _keep_bias_before_mean_only_bn(self, layer: nn.Module, bn: MeanOnlyBatchNorm) -> None:
        """The batch norm removes the mean: the layer keeps its old bias and only g changes."""
        old_b = self.old[layer][1]
        if old_b is not None and bn.num_features == old_b.numel():
            layer.bias.copy_(old_b)
        self.report[-1].followed_by_mean_only_bn = True


class _Snapshot:
    """Copies of every parameter and buffer, each module's mode and each parameter's requires_grad."""

    def __init__(self, model: nn.Module) -> None:
        self.parameters = [(p, p.detach().clone(), p.requires_grad) for p in model.parameters()]
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.modes = [(m, m.training) for m in model.modules()]

    @torch.no_grad()
    def restore(self, parameters: bool) -> None:
        """Put back buffers, modes and requires_grad, and with ``parameters`` the parameters' values."""
        for p, copy, requires_grad in self.parameters:
            if parameters:
                p.copy_(copy)
            p.requires_grad_(requires_grad)
        for b, copy in self.buffers:
            b.copy_(copy)
        for m, training in self.modes:
            m.training = training


@contextmanager
def _init_pass(model: nn.Module, layers: list[tuple[str, nn.Module]], init: _Initializer) -> Iterator[None]:
    """The hooks, train mode with dropout off, and (distributed) global batch norm, for one forward."""
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(init.track) for m in leaves]
    handles += [m.register_forward_hook(init.watch) for m in leaves]
    for _, module in layers:
        handles += [module.register_forward_pre_hook(init.before), module.register_forward_hook(init.after)]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        with _global_normalization(model, init.names, init.sync):
            yield
    finally:
        for h in handles:
            h.remove()


def _forward(model: nn.Module, x: Any, init: _Initializer) -> None:
    """model(x) (model(*x) for a tuple); an error raised by the model names the layer, and with a
    process group is first announced to the other ranks."""
    try:
        model(*x) if isinstance(x, tuple) else model(x)
    except InitError:
        raise  # already agreed on by every rank
    except Exception as e:
        message = f"data-dependent init failed in {_layer(init.current)}: {e}"
        init.sync.exchange(message)
        if isinstance(e, RuntimeError | ValueError):
            raise type(e)(message) from e
        raise


@torch.no_grad()
def data_dependent_init(
    model: nn.Module, x: Any, init_scale: float = 1.0, process_group: Any = None
) -> InitReport:
    """Initialize every weight-normalized layer of ``model`` from a batch ``x`` (eq. 5–6).

    Args:
        model: any module containing weight-normalized layers (:mod:`wnlib.nn` layers or modules
            wrapped by :func:`wnlib.weight_norm`): Linear, Conv*d, ConvTranspose*d.
        x: a batch, passed as ``model(x)`` (a tuple is unpacked as ``model(*x)``). Use a few hundred
            examples: σ estimated from a handful is noisy.
        init_scale: the standard deviation each pre-activation gets, a positive finite number (the paper
            uses 1; smaller values are common before residual additions).
        process_group: a ``torch.distributed`` process group (or ``True`` for the default group): the
            statistics, including those of batch norm layers in the pass, are those of the global batch,
            so every rank gets the g and b of a single-process init on the concatenated shards. Every rank
            must call it and run the same forward pass.

    Returns:
        An :class:`InitReport`, one :class:`LayerInit` per layer in forward order.

    Raises:
        InitError: non-finite values in ``x`` or in a layer's t, a constant feature, fewer than 2 values
            per feature, or (with a process group) any failure on another rank.

    During the pass, batch norm layers use batch statistics and dropout is off. The call is atomic: on
    any error every parameter and buffer is bit-identical to before; on success only g and the biases
    change. Modes, ``requires_grad`` and buffers (running statistics) are always restored. It holds a
    copy of the model's parameters meanwhile. Calling it twice on the same batch gives the same g and b.

    >>> from wnlib import nn as wnn
    >>> _ = torch.manual_seed(0)
    >>> layer = wnn.Linear(3, 2)
    >>> x = torch.randn(100, 3)
    >>> _ = data_dependent_init(layer, x)
    >>> layer(x).std(0, unbiased=False).tolist()  # doctest: +ELLIPSIS
    [1.0..., 1.0...]
    """
    init_scale = _check_init_scale(init_scale)
    layers = _weight_normed_layers(model)
    sync = _Sync(process_group, layers[0][1].weight_v.device)
    sync.agree(_input_error(x))
    init = _Initializer(model, init_scale, sync)
    snapshot = _Snapshot(model)
    try:
        with _init_pass(model, layers, init):
            _forward(model, x, init)
        missed = [n for n, m in layers if m not in init.old]
        sync.agree(f"layers {missed} are weight-normalized but were not used by model(x)" if missed else None)
    except BaseException:
        snapshot.restore(parameters=True)
        raise
    snapshot.restore(parameters=False)
    return init.report
