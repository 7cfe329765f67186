"""Weight-normalized layers: ``torch.nn`` layers whose weight is w = g · v / ‖v‖ (eq. 2).

Each layer takes exactly its ``torch.nn`` counterpart's constructor arguments, plus two keyword-only
ones: ``dim`` (the kept axis; default: the output axis, 0, or 1 for ConvTranspose) and ``eps``. It has
parameters ``weight_v`` and ``weight_g`` instead of ``weight``; ``layer.weight`` is the effective weight.
At construction v is the torch layer's usual initial weight and g = ‖v‖, so the layer starts out
computing what the plain layer would (the paper's data-dependent init is :func:`wnlib.data_dependent_init`).

``wnlib.remove_weight_norm(layer)`` turns a layer back into its plain ``torch.nn`` class.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from wnlib import functional
from wnlib.functional import DEFAULT_EPS, slice_norm
from wnlib.mean_only_bn import MeanOnlyBatchNorm
from wnlib.parametrize import (
    _DEFAULT_DIM,
    WeightNormMixin,
    apply_weight_norm,
    default_dim,
    register_layer,
    weight_property,
)

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Linear",
    "MeanOnlyBatchNorm",
    "WeightNormLayer",
]


class WeightNormLayer(WeightNormMixin):
    """Base of the weight-normalized layers: builds the torch layer, then reparameterizes its weight."""

    plain_class: type[nn.Module]
    weight = weight_property("weight")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.plain_class = next(b for b in cls.__mro__[1:] if b.__module__.startswith("torch.nn"))
        register_layer(cls.plain_class, cls)

    def __init__(
        self,
        *args: Any,
        dim: int | Literal["default"] | None = _DEFAULT_DIM,
        eps: float = DEFAULT_EPS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        apply_weight_norm(self, "weight", default_dim(self) if dim == _DEFAULT_DIM else dim, eps)

    def reset_parameters(self) -> None:
        """The torch layer's own initialization applied to v, then g = ‖v‖ (so w = v initially)."""
        spec = self.__dict__.get("_weight_norm", {}).get("weight")
        if spec is None:  # still inside the torch layer's __init__
            super().reset_parameters()
            return
        params = self._parameters
        specs = self.__dict__["_weight_norm"]
        del specs["weight"]  # let the torch initializer see v as the plain weight
        params["weight"] = params["weight_v"]
        try:
            super().reset_parameters()
        finally:
            del params["weight"]
            specs["weight"] = spec
        with torch.no_grad():
            g = slice_norm(params["weight_v"], spec.dim, spec.eps)
            params["weight_g"].copy_(g.reshape(params["weight_g"].shape))


class Linear(WeightNormLayer, nn.Linear):
    """``nn.Linear`` with w = g·v/‖v‖ per output unit: y = x wᵀ + b (eq. 1–2).

    For large layers and batches with no more rows than ``in_features`` the forward never forms w: it
    computes (g/‖v‖) ⊙ (x vᵀ) + b (see :func:`wnlib.functional.linear`).
    """

    def forward(self, input: Tensor) -> Tensor:
        spec = self._weight_norm["weight"]
        if spec.dim != 0:
            return nn.functional.linear(input, self.weight, self.bias)
        params = self._parameters
        return functional.linear(input, params["weight_v"], params["weight_g"], self.bias, spec.eps)


class Conv1d(WeightNormLayer, nn.Conv1d):
    """``nn.Conv1d`` with w = g·v/‖v‖ per output channel (dim 0)."""


class Conv2d(WeightNormLayer, nn.Conv2d):
    """``nn.Conv2d`` with w = g·v/‖v‖ per output channel (dim 0)."""


class Conv3d(WeightNormLayer, nn.Conv3d):
    """``nn.Conv3d`` with w = g·v/‖v‖ per output channel (dim 0)."""


class ConvTranspose1d(WeightNormLayer, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with w = g·v/‖v‖ per output channel (weights are (in, out, k): dim 1)."""


class ConvTranspose2d(WeightNormLayer, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with w = g·v/‖v‖ per output channel (weights are (in, out, kh, kw): dim 1)."""


class ConvTranspose3d(WeightNormLayer, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with w = g·v/‖v‖ per output channel (dim 1)."""
