"""Mean-only batch normalization (Salimans & Kingma 2016, §4), and folding it away for inference.

Weight norm fixes the scale of each unit's pre-activation t = w·x but not its mean. Mean-only batch
norm subtracts the minibatch mean and adds a learned bias (eq. 7),

    y = t − μ[t] + b,

without dividing by the minibatch standard deviation. Its backward centres the gradient (eq. 8),

    ∇t L = ∇y L − μ[∇y L],

so it adds less noise than full batch norm: the mean of a minibatch is approximately Gaussian, while the
standard-deviation estimate of full batch norm gives noise the paper calls highly kurtotic. The
Mean-only batch norm chapter measures both.

:func:`fold_mean_only_bn` merges a weight-normalized layer and the mean-only batch norm after it into one
plain layer with w = g·v/‖v‖ and b' = b − running_mean + β, for zero-overhead inference.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from wnlib.parametrize import is_weight_normed, remove_weight_norm, weight_norm_specs

__all__ = ["MeanOnlyBatchNorm", "fold_for_inference", "fold_mean_only_bn"]


class MeanOnlyBatchNorm(nn.Module):
    """y = x − μ[x] + b per feature (eq. 7); the feature axis is 1, as in ``torch.nn.BatchNorm*``.

    Args:
        num_features: C in inputs of shape (N, C) or ``(N, C, *)``.
        momentum: weight of the current batch in the running mean,
            ``running_mean = (1 − momentum)·running_mean + momentum·μ`` (torch's convention); ``None``
            keeps a cumulative average instead.

    In training the minibatch mean over N and all positions is subtracted and the running mean updated;
    in eval mode the running mean is subtracted. The state_dict has ``bias``, ``running_mean`` and
    ``num_batches_tracked``, like ``BatchNorm`` without its weight and variance.

    Example (in training the output has each feature's minibatch mean removed, and x's scale):
        >>> import torch
        >>> from wnlib.nn import MeanOnlyBatchNorm
        >>> _ = torch.manual_seed(0)
        >>> bn, x = MeanOnlyBatchNorm(3), 5 + 2 * torch.randn(64, 3)
        >>> y = bn(x)  # the bias b is 0 at first
        >>> bool(y.mean(0).abs().max() < 1e-5), torch.allclose(y.std(0), x.std(0))
        (True, True)
        >>> torch.allclose(bn.running_mean, 0.1 * x.mean(0))  # momentum 0.1 from 0 towards μ
        True
    """

    def __init__(
        self,
        num_features: int,
        momentum: float | None = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.num_features = num_features
        self.momentum = momentum
        kw = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.zeros_(self.bias)

    def _feature_shape(self, x: Tensor) -> list[int]:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"MeanOnlyBatchNorm({self.num_features}) expects input of shape (N, {self.num_features}) "
                f"or (N, {self.num_features}, *), got {tuple(x.shape)}"
            )
        return [1, self.num_features] + [1] * (x.ndim - 2)

    def forward(self, x: Tensor) -> Tensor:
        shape = self._feature_shape(x)
        if not self.training:
            return x - (self.running_mean - self.bias).view(shape)
        reduce = [0, *range(2, x.ndim)]
        if x.numel() // self.num_features < 2:
            raise ValueError(
                "MeanOnlyBatchNorm needs more than 1 value per feature in training, "
                f"got input of shape {tuple(x.shape)}"
            )
        mu = x.mean(reduce)
        self._update_running_mean(mu.detach())
        return x - mu.view(shape) + self.bias.view(shape)

    @torch.no_grad()
    def _update_running_mean(self, mu: Tensor) -> None:
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mu.to(self.running_mean.dtype), m)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"


def fold_mean_only_bn(layer: nn.Module, bn: MeanOnlyBatchNorm) -> nn.Module:
    """Merge ``layer`` (weight-normalized or plain, with output features on axis 1) and the mean-only
    batch norm after it into ``layer`` itself, as a plain layer for inference.

    In eval mode the pair computes w·x + b − running_mean + β, so the folded layer has weight
    w = g·v/‖v‖ (weight norm removed) and bias b − running_mean + β. ``layer`` is changed in place and
    returned; use it in place of the pair. Everything is checked before anything changes: the feature
    counts must match and ``bn`` must be in eval mode (in training it subtracts each batch's own mean,
    which no fixed bias reproduces).

    Example:
        >>> import torch
        >>> import wnlib
        >>> from wnlib.nn import Linear, MeanOnlyBatchNorm
        >>> _ = torch.manual_seed(0)
        >>> layer, bn, x = Linear(4, 3), MeanOnlyBatchNorm(3), torch.randn(16, 4)
        >>> _ = bn(layer(x))  # training: the running mean moves
        >>> y = bn.eval()(layer(x))
        >>> folded = wnlib.fold_mean_only_bn(layer, bn)
        >>> type(folded).__name__, torch.allclose(folded(x), y, atol=1e-6)
        ('Linear', True)
    """
    _check_foldable(layer, bn)
    for name in ("weight", "bias"):
        if is_weight_normed(layer, name):
            remove_weight_norm(layer, name)
    weight = layer.weight
    with torch.no_grad():
        shift = (bn.bias - bn.running_mean).to(weight.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(shift.clone())
        else:
            layer.bias.add_(shift)
    return layer


def _check_foldable(layer: nn.Module, bn: nn.Module, where: str = "") -> None:
    """Raise unless :func:`fold_mean_only_bn` can fold ``layer`` and ``bn`` exactly (changes nothing)."""
    kind = type(layer).__name__
    if not isinstance(bn, MeanOnlyBatchNorm):
        raise TypeError(f"fold_mean_only_bn folds a MeanOnlyBatchNorm, got {type(bn).__name__}")
    if not (is_weight_normed(layer, "weight") or isinstance(layer._parameters.get("weight"), nn.Parameter)):
        raise TypeError(f"cannot fold into {kind}{where}: it has no weight parameter")
    out_features = getattr(layer, "out_features", None) or getattr(layer, "out_channels", None)
    if out_features != bn.num_features:
        raise ValueError(f"{kind}{where} has {out_features} outputs but the batch norm has {bn.num_features}")
    if bn.training:
        raise RuntimeError(
            f"the MeanOnlyBatchNorm after {kind}{where} is in training mode, where it subtracts each "
            "batch's own mean, which a folded layer cannot do: call model.eval() (or bn.eval()) first"
        )


def fold_for_inference(model: nn.Module) -> nn.Module:
    """Remove every trace of weight norm and mean-only batch norm from ``model``, in place.

    Inside every ``nn.Sequential``, a layer directly followed by
    :class:`~wnlib.mean_only_bn.MeanOnlyBatchNorm` is folded with it (:func:`fold_mean_only_bn`) and the
    batch norm replaced by ``nn.Identity``; every other
    weight-normalized parameter is folded by :func:`wnlib.remove_weight_norm`. Mean-only batch norms
    anywhere else (after an activation, a LayerNorm, a BatchNorm, or outside a Sequential) are left in
    place; in eval mode they subtract a constant.

    The folded model computes what ``model`` computes in eval mode, so every module must be in eval mode
    first (``fold_for_inference(model.eval())``); a module in training mode raises, as does a pair
    that cannot be folded, before anything is changed.

    Example:
        >>> import torch
        >>> import wnlib
        >>> import wnlib.nn as wnn
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(
        ...     wnn.Linear(4, 8), wnn.MeanOnlyBatchNorm(8), torch.nn.ReLU(), wnn.Linear(8, 2)
        ... )
        >>> x = torch.randn(32, 4)
        >>> _ = model(x)  # training updates the running mean
        >>> y = model.eval()(x)
        >>> folded = wnlib.fold_for_inference(model)
        >>> [type(m).__name__ for m in folded], torch.allclose(folded(x), y, atol=1e-6)
        (['Linear', 'Identity', 'ReLU', 'Linear'], True)
    """
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(
            f"fold_for_inference needs the model in eval mode, but {len(training)} module(s) are in "
            f"training mode ({', '.join(training[:3])}{', ...' if len(training) > 3 else ''}), where "
            "mean-only batch norm uses each batch's own mean and the folded model would compute something "
            "else: call model.eval() first"
        )
    pairs = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for first, second in itertools.pairwise(list(seq._modules)):
            layer, bn = seq._modules[first], seq._modules[second]
            if isinstance(bn, MeanOnlyBatchNorm) and _has_weight(layer):
                _check_foldable(layer, bn, f" ({'.'.join(filter(None, (seq_name, first)))})")
                pairs.append((seq, second, layer, bn))
    for seq, second, layer, bn in pairs:
        fold_mean_only_bn(layer, bn)
        seq._modules[second] = nn.Identity()
    for module in model.modules():
        for name in weight_norm_specs(module):
            remove_weight_norm(module, name)
    return model


def _has_weight(module: nn.Module) -> bool:
    """Whether ``module`` is a layer whose output is affine in its input with a per-output-channel bias
    (Linear, Conv, ConvTranspose), so that a following mean-only batch norm folds into its bias. A
    PReLU, LayerNorm or BatchNorm also has a ``weight``, but not that form: the batch norm after it stays."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
