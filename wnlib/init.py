"""Data-dependent initialization of weight-normalized networks (Salimans & Kingma 2016, §3).

For each weight-normalized layer, in forward order, with the layers before it already initialized, the
pre-activation of each output feature on a batch of data is first computed with unit scale and no bias,

    t = v·x / ‖v‖,

and then g and b are set so that the layer's output y = g·t + b has zero mean and standard deviation
``init_scale`` over the batch (eq. 5–6):

    g ← init_scale / σ[t],        b ← −μ[t] · init_scale / σ[t].

Statistics run over the batch and, for convolutions, over all spatial positions. A layer followed
directly by :class:`~wnlib.mean_only_bn.MeanOnlyBatchNorm` keeps its bias: the batch norm removes the
mean, so only g ← init_scale/σ is set, as in the paper's code. With a ``process_group`` the sums
(count, Σt, Σt²) are all-reduced, so every rank computes the same g and b, equal to a single-process
initialization on the concatenated batches. The Initialization chapter shows what this does to the
activations of a deep network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from wnlib.mean_only_bn import MeanOnlyBatchNorm
from wnlib.parametrize import is_weight_normed, weight_norm_specs


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


def output_axis(module: nn.Module) -> int:
    """Axis of the output features: last for Linear, 1 (channels) for convolutions."""
    return -1 if isinstance(module, nn.Linear) else 1


def _check_initializable(name: str, module: nn.Module) -> None:
    spec = weight_norm_specs(module)["weight"]
    if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
        expected = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
        if spec.dim != expected:
            raise ValueError(
                f"data-dependent init needs one g per output feature, i.e. weight norm over dim={expected} "
                f"for {type(module).__name__}; layer {name!r} has dim={spec.dim}"
            )
        if isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups != 1:
            raise ValueError(f"layer {name!r}: data-dependent init of grouped ConvTranspose is not supported")
        return
    raise TypeError(
        f"layer {name!r} ({type(module).__name__}) is weight-normalized, but data-dependent init only knows "
        "the output features of Linear, Conv and ConvTranspose layers"
    )


def _moments(t: Tensor, axis: int, process_group: Any) -> tuple[Tensor, Tensor, int]:
    """Per-feature mean and (population) standard deviation of t, all-reduced across ranks if asked."""
    t = t.movedim(axis, -1).reshape(-1, t.shape[axis]).double()
    count = torch.full((t.shape[1],), float(t.shape[0]), dtype=torch.float64, device=t.device)
    sums = torch.stack([count, t.sum(0), (t * t).sum(0)])  # (n, Σt, Σt²) per feature
    if process_group is not None:
        dist.all_reduce(sums, group=None if process_group is True else process_group)
    n = sums[0, 0].item()
    mean = sums[1] / n
    var = (sums[2] / n - mean * mean).clamp_min(0.0)
    return mean, var.sqrt(), int(n)


def _stats(y: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    y = y.movedim(axis, -1).reshape(-1, y.shape[axis]).double()
    return y.mean(0), y.std(0, unbiased=False)


class InitError(ValueError):
    """A batch that cannot initialize a layer (too few values, a constant feature)."""


class _Initializer:
    """Forward hooks that initialize each weight-normalized layer as the batch passes through it."""

    def __init__(self, model: nn.Module, init_scale: float, process_group: Any) -> None:
        self.init_scale = init_scale
        self.process_group = process_group
        self.names = {m: n for n, m in model.named_modules()}
        self.report = InitReport()
        self.old: dict[nn.Module, tuple[Tensor, Tensor | None]] = {}  # g and b before init
        self.last_leaf: nn.Module | None = None
        self.current = ""

    def track(self, module: nn.Module, args: tuple) -> None:
        """Pre-hook on every leaf module: remember what ran last (for mean-only BN and error messages)."""
        self.current = self.names[module]
        if isinstance(module, MeanOnlyBatchNorm) and self.report and self.report[-1].module is self.last_leaf:
            self._keep_bias_before_mean_only_bn(self.last_leaf, module)
        self.last_leaf = module

    def before(self, module: nn.Module, args: tuple) -> None:
        """Pre-hook on a weight-normalized layer: unit scale and zero bias, so that its output is t."""
        if module in self.old:
            return
        bias = module.bias.detach().clone() if module.bias is not None else None
        self.old[module] = (module.weight_g.detach().clone(), bias)
        module.weight_g.fill_(1.0)
        if module.bias is not None:
            module.bias.zero_()

    def after(self, module: nn.Module, args: tuple, t: Tensor) -> Tensor | None:
        """Hook on a weight-normalized layer: set g and b from the statistics of t (eq. 5–6)."""
        if any(r.module is module for r in self.report):
            return None  # a shared layer, called again: already initialized
        name, axis = self.names[module], output_axis(module)
        mu, sigma, count = _moments(t, axis, self.process_group)
        if count < 2:
            raise InitError(
                f"layer {name!r}: data-dependent init needs at least 2 values per feature, got a batch "
                f"giving {count}; use a larger batch"
            )
        if bool((sigma == 0).any()):
            dead = torch.nonzero(sigma == 0).flatten().tolist()[:10]
            raise InitError(
                f"layer {name!r}: feature(s) {dead} are constant over the init batch (σ = 0), so g = "
                "init_scale/σ is undefined; use a larger or more varied batch"
            )
        shape = [1] * t.ndim
        shape[axis] = -1

        def per_feature(x: Tensor) -> Tensor:
            return x.reshape(shape).to(t.dtype)

        old_g, old_b = self.old[module]
        before = t * per_feature(old_g) + (per_feature(old_b) if old_b is not None else 0)
        scale = self.init_scale / sigma
        module.weight_g.copy_(scale.reshape(module.weight_g.shape))
        y = t * per_feature(scale)
        if module.bias is not None:
            module.bias.copy_(-mu * scale)
            y = y + per_feature(module.bias)
        stats = (*_stats(before, axis), *_stats(y, axis))
        self.report.append(LayerInit(name, type(module).__name__, *stats, module=module))
        return y

    def _keep_bias_before_mean_only_bn(self, layer: nn.Module, bn: MeanOnlyBatchNorm) -> None:
        """The batch norm removes the mean: the layer keeps its old bias and only g changes."""
        old_b = self.old[layer][1]
        if old_b is not None and bn.num_features == old_b.numel():
            layer.bias.copy_(old_b)
        self.report[-1].followed_by_mean_only_bn = True


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
        init_scale: the standard deviation each pre-activation gets (the paper uses 1; smaller values
            are common before residual additions).
        process_group: a ``torch.distributed`` process group (or ``True`` for the default group): the
            statistics are summed over all ranks, so every rank gets identical g and b.

    Returns:
        An :class:`InitReport`, one :class:`LayerInit` per layer in forward order.

    During the pass, batch norm layers use batch statistics and dropout is off; running statistics,
    gradients and the train/eval mode of every module are restored afterwards, so only g and b change.
    Calling it twice on the same batch gives the same g and b.
    """
    if init_scale <= 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    layers = [(n, m) for n, m in model.named_modules() if is_weight_normed(m, "weight")]
    if not layers:
        raise ValueError(
            "model has no weight-normalized layer: use wnlib.nn layers or wrap layers with wnlib.weight_norm"
        )
    for name, module in layers:
        _check_initializable(name, module)
    init = _Initializer(model, init_scale, process_group)
    modes = {m: m.training for m in model.modules()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    handles = [m.register_forward_pre_hook(init.track) for m in model.modules() if not list(m.children())]
    for _, module in layers:
        handles.append(module.register_forward_pre_hook(init.before))
        handles.append(module.register_forward_hook(init.after))
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        model(*x) if isinstance(x, tuple) else model(x)
    except InitError:
        raise
    except (RuntimeError, ValueError) as e:
        raise type(e)(f"data-dependent init failed in layer {init.current!r}: {e}") from e
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
    missed = [n for n, m in layers if m not in init.old]
    if missed:
        raise ValueError(f"layers {missed} are weight-normalized but were not used by model(x)")
    return init.report
