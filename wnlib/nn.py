"""Weight-normalized layers: ``torch.nn`` layers whose weight is w = g · v / ‖v‖ (eq. 2).

Each layer takes exactly its ``torch.nn`` counterpart's constructor arguments, plus three keyword-only
ones: ``dim`` (the kept axis; default: the output axis, 0, or 1 for ConvTranspose), ``eps`` and
``log_gain`` (store s with g = eˢ, the paper's log-scale variant). It has parameters ``weight_v`` and
``weight_g`` (or ``weight_s``) instead of ``weight``; ``layer.weight`` is the effective weight.
At construction v is the torch layer's usual initial weight and g = ‖v‖, so the layer starts out
computing what the plain layer would (the paper's data-dependent init is :func:`wnlib.data_dependent_init`).

``wnlib.remove_weight_norm(layer)`` turns a layer back into its plain ``torch.nn`` class. The forwards
compute w directly (``wnlib.parametrize._compute_weight``), not through the ``weight`` property, so they
never pay for its guard against lost in-place writes (see :func:`wnlib.reinit`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from wnlib import functional
from wnlib._defaults import DEFAULT_EPS
from wnlib.functional import _identity_gain, check_eps
from wnlib.mean_only_bn import MeanOnlyBatchNorm
from wnlib.parametrize import (
    _DEFAULT_DIM,
    _apply_weight_norm,
    _compute_weight,
    _default_dim,
    _gain,
    _register_layer,
    _set_specs,
    _specs,
    _weight_property,
    _WeightNormMixin,
    set_gain,
    weight_norm_spec,
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


class WeightNormLayer(_WeightNormMixin):
    """Base of the weight-normalized layers: builds the torch layer, then reparameterizes its weight."""

    plain_class: type[nn.Module]
    weight = _weight_property("weight")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        plain = next((b for b in cls.__mro__[1:] if b.__module__.startswith("torch.nn")), None)
        if plain is not None:  # not for the shared bases _Conv and _ConvTranspose
            cls.plain_class = plain
            _register_layer(plain, cls)

    def __init__(
        self,
        *args: Any,
        dim: int | Literal["default"] | None = _DEFAULT_DIM,
        eps: float = DEFAULT_EPS,
        log_gain: bool = False,
        **kwargs: Any,
    ) -> None:
        eps = check_eps(eps)  # before building the torch layer
        if not isinstance(log_gain, bool):
            raise TypeError(f"log_gain must be True or False, got {type(log_gain).__name__}")
        super().__init__(*args, **kwargs)
        dim = _default_dim(self) if dim == _DEFAULT_DIM else dim
        _apply_weight_norm(self, "weight", dim, eps, log_gain)

    def reset_parameters(self) -> None:
        """The torch layer's own initialization applied to v, then g = ‖v‖ (so w = v initially)."""
        spec = weight_norm_spec(self)
        if spec is None:  # still inside the torch layer's __init__
            super().reset_parameters()
            return
        params, specs = self._parameters, _specs(self)
        _set_specs(self, {n: s for n, s in specs.items() if n != "weight"})  # the torch initializer
        params["weight"] = params["weight_v"]  # sees v as the plain weight
        try:
            super().reset_parameters()
        finally:
            del params["weight"]
            _set_specs(self, specs)
        with torch.no_grad():
            set_gain(self, _identity_gain(params["weight_v"], spec.dim, spec.eps))


class Linear(WeightNormLayer, nn.Linear):
    """``nn.Linear`` with w = g·v/‖v‖ per output unit: y = x wᵀ + b (eq. 1–2).

    For large layers and batches with no more rows than ``in_features`` the forward never forms w: it
    computes (g/‖v‖) ⊙ (x vᵀ) + b (see :func:`wnlib.functional.linear`).

    Example:
        >>> import torch
        >>> import wnlib.nn as wnn
        >>> _ = torch.manual_seed(0)
        >>> layer = wnn.Linear(20, 40)
        >>> sorted(n for n, _ in layer.named_parameters()), tuple(layer.weight_g.shape)
        (['bias', 'weight_g', 'weight_v'], (40,))
        >>> layer(torch.randn(8, 20)).shape
        torch.Size([8, 40])
        >>> torch.allclose(layer.weight.norm(dim=1), layer.weight_g)  # ‖w‖ = g per output unit
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        spec, params = weight_norm_spec(self), self._parameters
        if spec.dim != 0:
            return nn.functional.linear(input, _compute_weight(self), params["bias"])
        v = params["weight_v"]
        functional._check_linear_input(input, v)  # v, g and eps were checked when the layer was built
        return functional._linear(input, v, _gain(params, "weight", spec), params["bias"], spec.eps)


class _Conv(WeightNormLayer):
    """The forward of ``nn.Conv*d``, with w computed directly."""

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, _compute_weight(self), self._parameters["bias"])


_CONV_TRANSPOSE = {
    1: nn.functional.conv_transpose1d,
    2: nn.functional.conv_transpose2d,
    3: nn.functional.conv_transpose3d,
}


class _ConvTranspose(WeightNormLayer):
    """The forward of ``nn.ConvTranspose*d`` (same arguments and checks), with w computed directly."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        n = len(self.kernel_size)
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, n, self.dilation
        )
        return _CONV_TRANSPOSE[n](
            input, _compute_weight(self), self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation,
        )  # fmt: skip


class Conv1d(_Conv, nn.Conv1d):
    """``nn.Conv1d`` with w = g·v/‖v‖ per output channel (dim 0)."""


class Conv2d(_Conv, nn.Conv2d):
    """``nn.Conv2d`` with w = g·v/‖v‖ per output channel (dim 0).

    Example:
        >>> import torch
        >>> import wnlib.nn as wnn
        >>> conv = wnn.Conv2d(3, 8, 3, padding=1)
        >>> conv(torch.randn(2, 3, 5, 5)).shape, tuple(conv.weight_g.shape)
        (torch.Size([2, 8, 5, 5]), (8,))
    """


class Conv3d(_Conv, nn.Conv3d):
    """``nn.Conv3d`` with w = g·v/‖v‖ per output channel (dim 0)."""


class ConvTranspose1d(_ConvTranspose, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with w = g·v/‖v‖ per output channel (weights are (in, out, k): dim 1)."""


class ConvTranspose2d(_ConvTranspose, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with w = g·v/‖v‖ per output channel (weights are (in, out, kh, kw): dim 1).

    Example:
        >>> import torch
        >>> import wnlib
        >>> import wnlib.nn as wnn
        >>> up = wnn.ConvTranspose2d(8, 3, 2, stride=2)
        >>> up(torch.randn(1, 8, 4, 4)).shape, wnlib.weight_norm_spec(up).dim, tuple(up.weight_g.shape)
        (torch.Size([1, 3, 8, 8]), 1, (3,))
    """


class ConvTranspose3d(_ConvTranspose, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with w = g·v/‖v‖ per output channel (dim 1)."""
