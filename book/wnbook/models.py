"""The small networks the chapters train and measure, all built from :mod:`wnlib.nn` layers.

- :func:`digits_mlp`: the 64–hidden–10 ReLU MLP of the Theory chapter, weight-normalized or plain;
- :func:`deep_mlp` and :func:`small_convnet`: the deep weight-normalized networks of the Initialization
  chapter (§3 of Salimans & Kingma 2016), with :func:`set_fixed_scale`, a data-free choice of g, and
  :func:`weight_normed_layers`.
"""

from __future__ import annotations

import torch
from torch import nn

import wnlib
from wnlib import nn as wnn

__all__ = [
    "DEPTH",
    "HIDDEN",
    "deep_mlp",
    "digits_mlp",
    "set_fixed_scale",
    "small_convnet",
    "weight_normed_layers",
]

DEPTH = 30  # layers of the deep network the Initialization chapter follows
HIDDEN = 100  # units per hidden layer of that network
PARAMETERIZATIONS = ("weightnorm", "normal")


def digits_mlp(parameterization: str, hidden: int = 64) -> nn.Sequential:
    """64 → ``hidden`` → 10 with a ReLU: :class:`wnlib.nn.Linear` layers for ``"weightnorm"``, torch's
    ``nn.Linear`` for ``"normal"`` (the same initial weights: v = w)."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    layer = wnlib.nn.Linear if parameterization == "weightnorm" else nn.Linear
    return nn.Sequential(layer(64, hidden), nn.ReLU(), layer(hidden, 10))


def deep_mlp(
    depth: int = DEPTH,
    width: int = HIDDEN,
    in_features: int = 64,
    out_features: int | None = None,
    seed: int = 0,
) -> nn.Sequential:
    """``depth`` weight-normalized Linear layers of ``width`` units with ReLU between them.

    The last layer's output is a pre-activation (no ReLU after it); with ``out_features`` one more
    layer maps to that many outputs (a classifier). Weights start as torch's default for
    ``nn.Linear`` (v uniform in ±1/√fan_in) with g = ‖v‖, so w = v (see :mod:`wnlib.nn`). The first
    ``k`` layers do not depend on ``depth``: the same seed draws them in the same order.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        n = in_features
        for i in range(depth):
            if i:
                layers.append(nn.ReLU())
            layers.append(wnn.Linear(n, width))
            n = width
        if out_features is not None:
            layers += [nn.ReLU(), wnn.Linear(n, out_features)]
    return nn.Sequential(*layers)


def small_convnet(channels: int = 16, depth: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """A weight-normalized convnet for 8×8 digits: ``depth`` 3×3 convolutions (padding 1) with ReLU,
    then a Linear classifier on the flattened feature map."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        c = 1
        for _ in range(depth):
            layers += [wnn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
            c = channels
        layers += [nn.Flatten(), wnn.Linear(channels * 64, num_classes)]
    return nn.Sequential(*layers)


def weight_normed_layers(model: nn.Module) -> list[nn.Module]:
    """The weight-normalized layers of ``model``, in registration order."""
    return [m for m in model.modules() if wnlib.is_weight_normed(m, "weight")]


@torch.no_grad()
def set_fixed_scale(model: nn.Module, g: float) -> nn.Module:
    """A data-free choice of scale: every unit of every weight-normalized layer gets ‖w‖ = g, and b = 0."""
    for layer in weight_normed_layers(model):
        layer.weight_g.fill_(g)
        if layer.bias is not None:
            layer.bias.zero_()
    return model

