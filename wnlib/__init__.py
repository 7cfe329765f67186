"""wnlib: weight normalization (Salimans & Kingma, 2016) for PyTorch, verified against a NumPy reference.

The reparameterization w = g · v / ‖v‖ (eq. 2) as

- :mod:`wnlib.reference`: NumPy forward and the analytic gradients of eq. 3–4 (the test oracle);
- :func:`wnlib.functional.weight_norm`: the PyTorch op with the paper's backward (Triton kernels on GPU);
- :func:`weight_norm` / :func:`remove_weight_norm`: weight norm on any module, a drop-in for
  ``torch.nn.utils.parametrizations.weight_norm``; :func:`weight_norm_spec` says how a parameter is
  normalized;
- :mod:`wnlib.nn`: weight-normalized ``Linear``, ``Conv*d`` and ``ConvTranspose*d`` layers, and
  ``MeanOnlyBatchNorm`` (§4);
- :func:`data_dependent_init`: the paper's initialization (§3), consistent across processes;
- :func:`reinit`: an init function (``torch.nn.init.*``) applied to the effective weight w;
- :func:`fold_for_inference`: weight norm and mean-only batch norm folded into plain layers.
"""

from wnlib import functional, nn, reference
from wnlib._defaults import DEFAULT_EPS
from wnlib.functional import use_backend
from wnlib.init import InitError, InitReport, LayerInit, data_dependent_init
from wnlib.mean_only_bn import fold_for_inference, fold_mean_only_bn
from wnlib.parametrize import (
    is_weight_normed,
    reinit,
    remove_weight_norm,
    to_torch_state_dict,
    weight_norm,
    weight_norm_spec,
    weight_norm_specs,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EPS",
    "InitError",
    "InitReport",
    "LayerInit",
    "data_dependent_init",
    "fold_for_inference",
    "fold_mean_only_bn",
    "functional",
    "is_weight_normed",
    "nn",
    "reference",
    "reinit",
    "remove_weight_norm",
    "to_torch_state_dict",
    "use_backend",
    "weight_norm",
    "weight_norm_spec",
    "weight_norm_specs",
]
