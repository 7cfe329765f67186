"""L1 weight norm and its zero-centered form: the variants of eq. 2 used by accumulator-aware quantization.

Weight normalization (Salimans & Kingma 2016, eq. 2) writes w = g·v/‖v‖₂. Later papers keep the
reparameterization and change the norm:

- :func:`l1_weight_norm`: w = g·v/‖v‖₁ per slice, so ‖w‖₁ = ``|g|``. A2Q (Colbert et al. 2023) uses it per
  output channel so that a bound on g is a bound on the L1 norm of the quantized weights, and hence on
  the accumulator width (see :mod:`wnlib.a2q`); PSiLON nets (Biswas 2024) use it to make the 1-path-norm
  the product of the layer gains.
- :func:`centered_l1_weight_norm`: w = g·(v − mean(v))/‖v − mean(v)‖₁ per slice, A2Q+'s zero-centering
  (Colbert et al. 2024): every slice of w sums to 0 and has ‖w‖₁ = ``|g|``.
- :func:`l1_weight_norm_module` / :func:`remove_l1_weight_norm`: either variant on any module's
  parameter, with ``<name>_v`` / ``<name>_g`` parameters and a ``<name>`` property, the same shape of
  API as :func:`wnlib.weight_norm`.

Both ops are written as composite torch ops (abs, sum, clamp, mean, mul): there is no hand-written
backward and no data-dependent Python branching, so autograd, create_graph, double backward,
torch.func (grad, vmap, jacrev, jvp), torch.compile(fullgraph=True) and torch.export all differentiate
them like the naive formula, on any memory layout. The derivative of the L1 norm is
d‖v‖₁/dv = sign(v), with PyTorch's subgradient 0 at v_i = 0 (the derivative of ``|x|`` is sign(x)), so

    ∇g = ∇w · v/‖v‖₁,   ∇v = (g/‖v‖₁)·(∇w − (∇w · v/‖v‖₁)·sign(v)) = (g/‖v‖₁)·(∇w − (∇g)·sign(v)),

the L1 analogue of eq. 3–4 (the projection is oblique, along sign(v), instead of along v). The second
derivative of ``|x|`` is 0 almost everywhere: double backward is exact away from v_i = 0.
The Quantization chapter (``book/a2q``) uses these ops.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from wnlib._defaults import DEFAULT_EPS
from wnlib.functional import (
    _accumulation_dtype,
    _check_inputs,
    canonical_dim,
    check_eps,
    slice_shape,
)
from wnlib.parametrize import _check_parameter, _default_dim, is_weight_normed

__all__ = [
    "L1WeightNormSpec",
    "centered_l1_weight_norm",
    "is_l1_weight_normed",
    "l1_slice_norm",
    "l1_weight_norm",
    "l1_weight_norm_module",
    "l1_weight_norm_specs",
    "remove_l1_weight_norm",
    "zero_center",
]

_DEFAULT_DIM = "default"


# --------------------------------------------------------------------------------------------------
# The ops
# --------------------------------------------------------------------------------------------------


def _reduced_axes(v: Tensor, dim: int | None) -> list[int]:
    """The axes one slice spans: all of them for dim=None, all but ``dim`` otherwise."""
    return [d for d in range(v.ndim) if d != dim]


def l1_slice_norm(v: Tensor, dim: int | None, eps: float = DEFAULT_EPS) -> Tensor:
    """max(‖v‖₁, eps) per slice, in keep-dim shape (S along ``dim``, 1 elsewhere), in the accumulation
    dtype (float32 for float16/bfloat16). ``dim`` must already be canonical (see ``canonical_dim``).

    A composite op (abs, sum, clamp_min): its derivative is sign(v) (0 at v_i = 0) where ‖v‖₁ > eps,
    and 0 where the clamp is active, so a zero slice has w = 0 and finite gradients.

    Example:
        >>> import torch
        >>> from wnlib.variants import l1_slice_norm
        >>> l1_slice_norm(torch.tensor([[3.0, -1.0], [0.5, 0.5]]), 0)
        tensor([[4.],
                [1.]])
    """
    acc = _accumulation_dtype(v.dtype)
    return v.to(acc).abs().sum(_reduced_axes(v, dim), keepdim=True).clamp_min(eps)


def zero_center(v: Tensor, dim: int | None) -> Tensor:
    """v − mean(v) per slice (A2Q+'s zero-centering), in the accumulation dtype.

    ``dim`` is the kept axis as a non-negative index (slices are ``v.select(dim, i)``), or ``None`` for
    the whole tensor as one slice.

    Example:
        >>> import torch
        >>> from wnlib.variants import zero_center
        >>> zero_center(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]), 0)
        tensor([[-1.,  0.,  1.],
                [-2., -2.,  4.]])
    """
    acc = _accumulation_dtype(v.dtype)
    v = v.to(acc)
    return v - v.mean(_reduced_axes(v, dim), keepdim=True)


def _checked(v: Tensor, g: Tensor, dim: int | None, eps: object) -> tuple[int | None, float]:
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
    dim = canonical_dim(v, dim)
    _check_inputs(v, g, dim)
    return dim, check_eps(eps)


def _scale_by_l1(u: Tensor, v: Tensor, g: Tensor, dim: int | None, eps: float) -> Tensor:
    """g·u/max(‖u‖₁, eps), with u in the accumulation dtype; the result in v's dtype."""
    shape = slice_shape(v, dim)
    w = u * (g.to(u.dtype).reshape(shape) / l1_slice_norm(u, dim, eps))
    return w.to(v.dtype)


def l1_weight_norm(v: Tensor, g: Tensor, dim: int | None = 0, eps: float = DEFAULT_EPS) -> Tensor:
    """w = g · v / ‖v‖₁ per slice: weight normalization with the L1 norm.

    This is eq. 2 of Salimans & Kingma (2016) with ‖·‖₂ replaced by ‖·‖₁, the form A2Q quantizes
    (Colbert et al. 2023: q = clip(round((g/s)·v/‖v‖₁)) per output channel, so ‖q‖₁ ≤ g/s), and the L1
    weight norm of PSiLON nets (Biswas 2024). Along every slice ‖w‖₁ = ``|g|`` (up to eps).

    Args:
        v: the direction parameter, any shape, floating point.
        g: one scale per slice: shape (S,) or keep-dim (S along ``dim``, 1 elsewhere); a single
            element for ``dim=None``.
        dim: the kept axis, one norm per index along it (0 for Linear/Conv weights); negative values
            count from the end; ``None`` normalizes the whole tensor as one vector.
        eps: lower bound on ‖v‖₁ (the clamp max(‖v‖₁, eps)), so a zero slice gives w = 0.

    Returns:
        w, with v's shape and dtype (computed in float32 for float16/bfloat16 inputs).

    The gradient follows from d‖v‖₁/dv = sign(v) (subgradient 0 at v_i = 0):
    ∇g = ∇w·v/‖v‖₁ and ∇v = (g/‖v‖₁)·(∇w − ∇g·sign(v)).

    Example:
        >>> v = torch.tensor([[3.0, -1.0], [0.5, 0.5]])
        >>> l1_weight_norm(v, torch.tensor([2.0, 1.0]))
        tensor([[ 1.5000, -0.5000],
                [ 0.5000,  0.5000]])
    """
    dim, eps = _checked(v, g, dim, eps)
    return _scale_by_l1(v.to(_accumulation_dtype(v.dtype)), v, g, dim, eps)


def centered_l1_weight_norm(v: Tensor, g: Tensor, dim: int | None = 0, eps: float = DEFAULT_EPS) -> Tensor:
    """w = g · (v − μ) / ‖v − μ‖₁ with μ = mean(v) per slice: A2Q+'s zero-centered L1 weight norm.

    A2Q+ (Colbert et al. 2024) subtracts each output channel's mean before the L1 normalization, so
    every slice of w sums to 0 and has ‖w‖₁ = ``|g|``. For zero-centered weights the accumulator bound
    relaxes from A2Q's (2^(P−1)−1)·2^(𝟙signed−N) to (2^P−2)/(2^N−1) (see :mod:`wnlib.a2q`). The
    arguments are those of :func:`l1_weight_norm`; a slice that is constant has u = v − μ = 0, so
    the eps clamp gives w = 0 there.

    Example:
        >>> v = torch.tensor([[3.0, 1.0, 2.0]])
        >>> centered_l1_weight_norm(v, torch.tensor([4.0]))
        tensor([[ 2., -2.,  0.]])
    """
    dim, eps = _checked(v, g, dim, eps)
    return _scale_by_l1(zero_center(v, dim), v, g, dim, eps)


def _op(centered: bool):
    return centered_l1_weight_norm if centered else l1_weight_norm


# --------------------------------------------------------------------------------------------------
# On modules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class L1WeightNormSpec:
    """How one parameter is L1-normalized: the kept axis, the eps of the norm, and zero-centering."""

    dim: int | None
    eps: float
    centered: bool


# The instance attribute holding {name: L1WeightNormSpec}; replaced, never changed in place.
_L1_SPECS_ATTR = "_l1_weight_norm"


def _l1_specs(module: nn.Module) -> dict[str, L1WeightNormSpec]:
    """The live name -> spec mapping of ``module`` (empty if none); do not change it."""
    return module.__dict__.get(_L1_SPECS_ATTR, {})


def _set_l1_specs(module: nn.Module, specs: dict[str, L1WeightNormSpec]) -> None:
    module.__dict__[_L1_SPECS_ATTR] = dict(specs)


def l1_weight_norm_specs(module: nn.Module) -> dict[str, L1WeightNormSpec]:
    """The L1-weight-normalized parameters of ``module`` itself (not its children), name -> spec."""
    return dict(_l1_specs(module))


def is_l1_weight_normed(module: nn.Module, name: str | None = None) -> bool:
    """Whether ``module`` has L1 weight norm (on ``name``, or on any parameter when name is None)."""
    specs = _l1_specs(module)
    return bool(specs) if name is None else name in specs


def _l1_property(name: str) -> property:
    """``module.<name>`` computed from ``<name>_v`` and ``<name>_g`` by the spec's op."""

    def fget(self: nn.Module) -> Tensor:
        spec = _l1_specs(self).get(name)
        params = self.__dict__["_parameters"]
        if spec is None:
            if name in params:
                return params[name]
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return _op(spec.centered)(params[f"{name}_v"], params[f"{name}_g"], spec.dim, spec.eps)

    return property(fget, doc=f"The effective {name}: {name}_g · {name}_v / ‖{name}_v‖₁ (L1 weight norm).")


class _L1WeightNormMixin:
    """Clear errors on assignment to the computed weight, a repr showing the norm, and pickling."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _l1_specs(self):
            raise AttributeError(
                f"{name!r} of this {type(self).__name__} is computed from {name}_v and {name}_g; "
                f"assign to those, or call wnlib.variants.remove_l1_weight_norm(module, {name!r}) first"
            )
        super().__setattr__(name, value)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        specs = _l1_specs(self).items()
        norms = ", ".join(f"{n}: dim={s.dim}, centered={s.centered}" for n, s in specs)
        return f"{base}, l1_weight_norm=({norms})" if base else f"l1_weight_norm=({norms})"

    def __reduce_ex__(self, protocol: Any) -> Any:
        names = tuple(sorted(_l1_specs(self)))
        return (_new_instance, (type(self)._l1_plain, names), self.__getstate__())


@functools.cache
def _generated_class(plain: type[nn.Module], names: tuple[str, ...]) -> type[nn.Module]:
    """``L1WeightNorm<Plain>``: ``plain`` with one L1 weight property per name (one class per pair)."""
    attrs: dict[str, Any] = {n: _l1_property(n) for n in names}
    attrs.update(_l1_plain=plain, __module__=__name__, __doc__=plain.__doc__)
    return type(f"L1WeightNorm{plain.__name__}", (_L1WeightNormMixin, plain), attrs)


def _new_instance(plain: type[nn.Module], names: tuple[str, ...]) -> nn.Module:
    """Unpickling hook for generated classes: an empty instance whose state pickle then restores."""
    cls = _generated_class(plain, names)
    return cls.__new__(cls)


def _set_class(module: nn.Module) -> None:
    plain = type(module).__dict__.get("_l1_plain", type(module))
    names = tuple(sorted(_l1_specs(module)))
    module.__class__ = _generated_class(plain, names) if names else plain


def _check_can_apply(module: nn.Module, name: str) -> Tensor:
    """The parameter to normalize, or a clear error (before anything changes)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"l1_weight_norm_module takes an nn.Module, got {type(module).__name__}")
    kind = type(module).__name__
    if name in _l1_specs(module):
        raise ValueError(f"L1 weight norm is already applied to {name!r} of this {kind}")
    if is_weight_normed(module):
        raise ValueError(
            f"this {kind} has (L2) weight norm from wnlib.weight_norm; remove it first "
            "(wnlib.remove_weight_norm) to combine it with L1 weight norm"
        )
    return _check_parameter(module, name, "L1 weight norm")


def l1_weight_norm_module(
    module: nn.Module,
    name: str = "weight",
    dim: int | Literal["default"] | None = _DEFAULT_DIM,
    eps: float = DEFAULT_EPS,
    centered: bool = False,
) -> nn.Module:
    """Apply L1 weight norm, w = g·v/‖v‖₁ (or A2Q+'s zero-centered form), to ``module.<name>``, in place.

    Afterwards the module has parameters ``<name>_v`` (initialized to w) and ``<name>_g``
    (initialized to ‖w‖₁ per slice, or ‖w − mean(w)‖₁ when ``centered``), and ``module.<name>`` is a
    property computing :func:`l1_weight_norm` (or :func:`centered_l1_weight_norm`). Without centering
    the module computes exactly what it did before; with it, each slice of the weight loses its mean.

    Args:
        module: any module with a floating-point parameter ``name``.
        name: the parameter to normalize.
        dim: the kept axis, one g per index along it; by default the output axis (0, or 1 for
            ConvTranspose), as in :func:`wnlib.weight_norm`; ``None``: one g for the whole tensor.
        eps: lower bound on the L1 norm.
        centered: subtract each slice's mean first (A2Q+).

    Example:
        >>> layer = l1_weight_norm_module(nn.Linear(20, 40))
        >>> sorted(n for n, _ in layer.named_parameters())
        ['bias', 'weight_g', 'weight_v']
    """
    w = _check_can_apply(module, name)
    dim = canonical_dim(w, _default_dim(module) if dim == _DEFAULT_DIM else dim)
    eps = check_eps(eps)
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be True or False, got {type(centered).__name__} {centered!r}")
    with torch.no_grad():
        u = zero_center(w, dim) if centered else w
        g = l1_slice_norm(u, dim, eps).to(w.dtype)
        g = g.reshape(()) if dim is None else g.reshape(-1)
    params = module.__dict__["_parameters"]
    del params[name]
    specs = dict(_l1_specs(module))
    specs[name] = L1WeightNormSpec(dim, eps, centered)
    module.register_parameter(f"{name}_v", nn.Parameter(w.detach(), w.requires_grad))
    module.register_parameter(f"{name}_g", nn.Parameter(g, w.requires_grad))
    _set_l1_specs(module, specs)
    _set_class(module)
    return module


def remove_l1_weight_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Fold the L1-normalized weight back into a plain parameter ``name`` (same outputs as before).

    Example:
        >>> import torch
        >>> from wnlib.variants import l1_weight_norm_module, remove_l1_weight_norm
        >>> layer = l1_weight_norm_module(torch.nn.Linear(4, 3))
        >>> w = layer.weight.detach().clone()
        >>> plain = remove_l1_weight_norm(layer)
        >>> type(plain).__name__, torch.allclose(plain.weight, w)
        ('Linear', True)
    """
    specs = dict(_l1_specs(module))
    if name not in specs:
        has = f"; it has L1 weight norm on {sorted(specs)}" if specs else ""
        raise ValueError(f"{type(module).__name__} has no L1 weight norm on {name!r} to remove{has}")
    with torch.no_grad():
        w = getattr(module, name).detach().clone()
    requires_grad = module._parameters[f"{name}_v"].requires_grad
    del specs[name]
    _set_l1_specs(module, specs)
    del module._parameters[f"{name}_v"], module._parameters[f"{name}_g"]
    _set_class(module)
    module.register_parameter(name, nn.Parameter(w, requires_grad))
    return module
