"""The networks of the experiments, each buildable under any of the six parameterizations (or a variant).

- ``mlp``: dense layers with leaky ReLU, for any input (flattened);
- ``convnet``: a small convnet, two blocks of two 3-wide convolutions and a max-pool, then a dense
  layer; 1-D convolutions for sequences (MNIST-1D), 2-D for images (digits, MNIST);
- ``paper_cnn``: the CIFAR-10 network of Salimans & Kingma (2016, §5.1), the ConvPool-CNN-C variant
  of their code: Gaussian input noise (σ = 0.15, training only), 3 × conv96 3×3, 2×2 max-pool,
  dropout 0.5, 3 × conv192 3×3, max-pool, dropout 0.5, conv192 3×3 "valid", two 1×1 conv192, global
  average pool, dense 10; leaky ReLU (slope 0.1) throughout. ``width`` multiplies every channel count
  (96, 192), so ``width=1/6`` is a CPU-sized version of the same network.

Every model is a flat ``nn.Sequential``, so the data-dependent initialization
(:func:`wnlib.data_dependent_init`) meets the layers in forward order and sees which are followed by a
mean-only batch norm. As in the paper's code, the normalizer of the parameterization (batch norm or
mean-only batch norm) follows every weight layer, the output layer included, and replaces that layer's
bias. Initial weights are torch's defaults (the paper's code draws v from N(0, 0.05²) for the
normalized layers; with weight norm only the direction of v matters).

:func:`initialize` applies the parameterization's initialization: data-dependent init (§3) and, for
``normal``, folding weight norm into plain weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

import wnlib
import wnlib.nn as wnn
from wnlib.experiments.data import _check_name
from wnlib.experiments.params import Parameterization, get_parameterization

__all__ = [
    "ARCHITECTURES",
    "LEAKY_SLOPE",
    "MIN_POSITIONS",
    "GaussianNoise",
    "GlobalAveragePool",
    "LayerFactory",
    "build_model",
    "convnet",
    "initialize",
    "mlp",
    "paper_cnn",
]

#: The networks :func:`build_model` builds.
ARCHITECTURES = ("mlp", "convnet", "paper_cnn")
#: The negative slope of the leaky ReLUs (the paper's ``nn.lrelu``).
LEAKY_SLOPE = 0.1


class GaussianNoise(nn.Module):
    """Adds N(0, σ²) noise to the input in training mode; the identity in eval mode (§5.1: σ = 0.15)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class GlobalAveragePool(nn.Module):
    """Mean over all positions: ``(N, C, *)`` -> (N, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(2)


class LayerFactory:
    """Makes weight layers (with their normalizer) under one parameterization."""

    def __init__(self, param: Parameterization) -> None:
        self.param = param

    def _normalized(self, layer: nn.Module, features: int, ndim: int) -> list[nn.Module]:
        kind = self.param.normalizer
        if kind is None:
            return [layer]
        if kind == "mean_only":
            return [layer, wnn.MeanOnlyBatchNorm(features)]
        batchnorm = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[ndim]
        return [layer, batchnorm(features)]

    def _options(self) -> dict[str, bool]:
        """A weight layer's keyword arguments: no bias before a normalizer; under weight norm, whether
        the gain is stored as its logarithm (g = eˢ)."""
        options = {"bias": self.param.normalizer is None}
        if self.param.weight_norm:
            options["log_gain"] = self.param.log_gain
        return options

    def dense(self, in_features: int, out_features: int) -> list[nn.Module]:
        """A dense layer y = w·x + b (eq. 1) and its normalizer, if any."""
        cls = wnn.Linear if self.param.weight_norm else nn.Linear
        layer = cls(in_features, out_features, **self._options())
        return self._normalized(layer, out_features, 0)

    def conv(
        self, ndim: int, in_channels: int, out_channels: int, kernel: int, padding: int
    ) -> list[nn.Module]:
        """A ``ndim``-D convolution (one g per output channel under weight norm) and its normalizer."""
        if ndim not in (1, 2, 3):
            raise ValueError(f"convolutions are 1-, 2- or 3-D, got ndim={ndim}")
        plain = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 1]
        normed = (wnn.Conv1d, wnn.Conv2d, wnn.Conv3d)[ndim - 1]
        cls = normed if self.param.weight_norm else plain
        layer = cls(in_channels, out_channels, kernel, padding=padding, **self._options())
        return self._normalized(layer, out_channels, ndim)


#: The fewest positions per spatial axis each convolutional network needs (two 2× poolings, and for
#: ``paper_cnn`` a 3-wide "valid" convolution after them).
MIN_POSITIONS = {"convnet": 4, "paper_cnn": 12}


def _check_input_shape(arch: str, input_shape: Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` (one example, channel first) as a tuple if network ``arch`` can take it; else a
    ValueError saying what it needs.

    Example (the digits' 8×8 images are too small for ``paper_cnn``, which raises a ValueError):
        >>> _check_input_shape("paper_cnn", (3, 32, 32))
        (3, 32, 32)
    """
    _check_name(arch, ARCHITECTURES, "architecture")
    shape = tuple(int(n) for n in input_shape)
    if arch not in MIN_POSITIONS:
        return shape
    if not 2 <= len(shape) <= 4:
        raise ValueError(
            f"architecture {arch} takes (C, L), (C, H, W) or (C, D, H, W) inputs, got shape {shape}"
        )
    need = MIN_POSITIONS[arch]
    if min(shape[1:]) < need:
        smaller = " or ".join(repr(a) for a in ARCHITECTURES if MIN_POSITIONS.get(a, 0) <= min(shape[1:]))
        raise ValueError(
            f"architecture {arch} needs at least {need} positions per spatial axis, got inputs of shape "
            f"{shape}; use arch {smaller} for inputs this small"
        )
    return shape


def _activation() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE)


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    param: str | Parameterization = "weightnorm",
    *,
    width: float = 1.0,
    hidden: Sequence[int] = (256, 256),
) -> nn.Sequential:
    """Flatten, dense layers of ``hidden`` units (times ``width``) with leaky ReLU, a dense output."""
    make = LayerFactory(get_parameterization(param))
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for h in hidden:
        h = _channels(h, width)
        layers += [*make.dense(features, h), _activation()]
        features = h
    layers += make.dense(features, num_classes)
    return nn.Sequential(*layers)


def convnet(
    input_shape: Sequence[int],
    num_classes: int,
    param: str | Parameterization = "weightnorm",
    *,
    width: float = 1.0,
    channels: int = 32,
) -> nn.Sequential:
    """conv c, conv c, max-pool 2, conv 2c, conv 2c, max-pool 2, flatten, dense (c = ``channels``·``width``).

    The convolutions are 3 wide with padding 1 and 1-D or 2-D according to ``input_shape`` ((C, L) or
    (C, H, W)); leaky ReLU after each.
    """
    _check_input_shape("convnet", input_shape)
    make = LayerFactory(get_parameterization(param))
    ndim = len(input_shape) - 1
    c_in, spatial = input_shape[0], list(input_shape[1:])
    c = _channels(channels, width)
    layers: list[nn.Module] = []
    pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[ndim - 1]
    for c_out in (c, 2 * c):
        for _ in range(2):
            layers += [*make.conv(ndim, c_in, c_out, 3, 1), _activation()]
            c_in = c_out
        layers.append(pool(2))
        spatial = [s // 2 for s in spatial]
    features = c_in * math.prod(spatial)
    layers += [nn.Flatten(), *make.dense(features, num_classes)]
    return nn.Sequential(*layers)


def paper_cnn(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    param: str | Parameterization = "weightnorm",
    *,
    width: float = 1.0,
    noise_sigma: float = 0.15,
    dropout: float = 0.5,
) -> nn.Sequential:
    """The paper's CIFAR-10 network (§5.1; ConvPool-CNN-C as modified in the paper's code).

    With ``width`` = 1: conv96 ×3, pool, dropout, conv192 ×3, pool, dropout, conv192 (valid), 1×1 conv192
    ×2, global average pool, dense. Works for 1-D inputs too (e.g. MNIST-1D), given at least 12
    positions.
    """
    _check_input_shape("paper_cnn", input_shape)
    make = LayerFactory(get_parameterization(param))
    ndim = len(input_shape) - 1
    pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[ndim - 1]
    c1, c2 = _channels(96, width), _channels(192, width)
    c_in = input_shape[0]
    layers: list[nn.Module] = [GaussianNoise(noise_sigma)]
    for c_out in (c1, c2):
        for _ in range(3):
            layers += [*make.conv(ndim, c_in, c_out, 3, 1), _activation()]
            c_in = c_out
        layers += [pool(2), nn.Dropout(dropout)]
    layers += [*make.conv(ndim, c2, c2, 3, 0), _activation()]
    for _ in range(2):  # the paper's NIN layers: dense over channels at every position
        layers += [*make.conv(ndim, c2, c2, 1, 0), _activation()]
    layers += [GlobalAveragePool(), *make.dense(c2, num_classes)]
    return nn.Sequential(*layers)


_BUILDERS = {"mlp": mlp, "convnet": convnet, "paper_cnn": paper_cnn}


def build_model(
    arch: str,
    input_shape: Sequence[int],
    num_classes: int,
    param: str | Parameterization = "weightnorm",
    *,
    width: float = 1.0,
    **kwargs: Any,
) -> nn.Sequential:
    """Network ``arch`` (one of :data:`~wnlib.experiments.models.ARCHITECTURES`) under parameterization
    ``param``, not yet initialized from data: call :func:`initialize` next."""
    _check_name(arch, ARCHITECTURES, "architecture")
    return _BUILDERS[arch](tuple(input_shape), num_classes, param, width=width, **kwargs)


@torch.no_grad()
def initialize(
    model: nn.Module,
    param: str | Parameterization,
    x: Tensor,
    *,
    init_scale: float = 1.0,
    process_group: dist.ProcessGroup | None = None,
) -> Any:
    """Apply ``param``'s initialization to ``model`` (built by :func:`build_model` under ``param``).

    With ``data_init``: :func:`wnlib.data_dependent_init` on the batch ``x`` (the paper's code uses 500
    training examples). It passes the batch in training mode with dropout off;
    :class:`~wnlib.experiments.models.GaussianNoise` follows the model's mode (training, as
    :func:`~wnlib.experiments.training.fit` calls it). The
    paper's code initialized with noise and dropout both on. With a ``process_group`` the statistics are
    all-reduced, so every
    rank initializes identically from its own shard of the batch. With ``fold`` (``normal``): weight
    norm is then removed from every layer, leaving plain weights w = g·v/‖v‖.

    Returns the report of the data-dependent init, or None.
    """
    param = get_parameterization(param)
    report = None
    if param.data_init:
        report = wnlib.data_dependent_init(model, x, init_scale=init_scale, process_group=process_group)
    if param.fold:
        for module in model.modules():
            for name in list(wnlib.weight_norm_specs(module)):
                wnlib.remove_weight_norm(module, name)
    return report
