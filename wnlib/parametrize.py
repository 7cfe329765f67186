"""Weight norm on any module: ``weight_norm(module)`` and ``remove_weight_norm(module)``.

A parameter ``<name>`` (usually ``weight``) is replaced by two parameters, ``<name>_v`` (the direction,
same shape) and ``<name>_g`` (one scale per slice along ``dim``), and ``module.<name>`` becomes a
property computing w = g·v/‖v‖ (eq. 2) on every access. The module's class is swapped for a subclass
that carries that property, as ``torch.nn.utils.parametrize`` does; plain ``nn.Linear`` and ``nn.Conv*``
modules become the corresponding :mod:`wnlib.nn` layer, which has a faster forward.

Interoperability (the Implementation chapter shows each):

- ``load_state_dict`` accepts the state of the same layer under torch's legacy
  ``torch.nn.utils.weight_norm`` (``weight_g``/``weight_v``, g in keep-dim shape), under
  ``torch.nn.utils.parametrizations.weight_norm`` (``parametrizations.weight.original0/1``), or without
  weight norm at all (``weight``: v = w and g = ‖w‖).
- :func:`to_torch_state_dict` writes a state_dict either of torch's APIs loads.
- ``state_dict()`` records each kept axis in the state's ``_metadata`` (the entry torch keeps for module
  versions, which survives ``torch.save`` and ``torch.load(weights_only=True)``), so a state saved with
  ``dim=1`` refuses to load into a layer built with ``dim=0``. States without the entry (older wnlib
  checkpoints, torch's formats, plain layers, or a state rebuilt as a new dict) load as before.
- Modules stay deep-copyable and picklable; ``torch.compile`` traces the property.

Writing into ``module.<name>`` in place (``nn.init.xavier_uniform_(layer.weight)``,
``layer.weight.data.fill_(0)``) would be lost, since w is computed afresh on every read: outside a
layer's forward the property returns an :class:`EffectiveWeight`, which raises on such writes and names
the remedy, :func:`reinit` (apply an init function to w, then v = w and g = ‖w‖).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from wnlib._defaults import DEFAULT_EPS
from wnlib.functional import _identity_gain, canonical_dim, check_eps, slice_shape
from wnlib.functional import _weight_norm as _unchecked_weight_norm

__all__ = [
    "EffectiveWeight",
    "WeightNormSpec",
    "gain",
    "is_weight_normed",
    "reinit",
    "remove_weight_norm",
    "set_gain",
    "to_torch_state_dict",
    "weight_norm",
    "weight_norm_spec",
    "weight_norm_specs",
]

_DEFAULT_DIM = "default"
_FAST_LAYERS: dict[type[nn.Module], type[nn.Module]] = {}  # torch class -> wnlib.nn class
_DIM_METADATA = "wnlib_weight_norm_dim"  # key in state_dict()._metadata[prefix]: {name: kept axis}
_IN_FORWARD = contextvars.ContextVar("wnlib_in_forward", default=False)  # inside a generated forward
# The instance attribute (in module.__dict__, beside _parameters) that holds {name: WeightNormSpec}. It is
# replaced, never changed in place, so a mapping read from it stays valid. Read it through
# weight_norm_spec / weight_norm_specs (or _specs, inside wnlib), write it through _set_specs.
_SPECS_ATTR = "_weight_norm"
_NO_SPECS: dict[str, Any] = {}


@dataclass(frozen=True)
class WeightNormSpec:
    """How one parameter is normalized: the kept axis (None: whole tensor), the eps of the norm, and
    whether the gain is stored as its logarithm (``log_gain``: parameter ``<name>_s`` with g = eˢ, the
    variant the paper tried in §2, instead of ``<name>_g``)."""

    dim: int | None
    eps: float
    log_gain: bool = False


def _gain_name(name: str, spec: WeightNormSpec) -> str:
    """The parameter holding ``name``'s gain: ``<name>_s`` (log-scale) or ``<name>_g``."""
    return f"{name}_s" if spec.log_gain else f"{name}_g"


def _specs(module: nn.Module) -> dict[str, WeightNormSpec]:
    """The live name -> spec mapping of ``module`` (empty if none); do not change it, see _set_specs."""
    return module.__dict__.get(_SPECS_ATTR, _NO_SPECS)


def _set_specs(module: nn.Module, specs: dict[str, WeightNormSpec]) -> None:
    """Replace ``module``'s name -> spec mapping (a new dict, so earlier reads stay consistent)."""
    module.__dict__[_SPECS_ATTR] = dict(specs)


def _spec(module: nn.Module, name: str) -> WeightNormSpec:
    """The spec of ``module.<name>``, or a clear error when that parameter has no weight norm."""
    spec = _specs(module).get(name)
    if spec is None:
        has = f"; it has weight norm on {sorted(_specs(module))}" if _specs(module) else ""
        raise ValueError(f"{type(module).__name__} has no weight norm on {name!r}{has}")
    return spec


def weight_norm_spec(module: nn.Module, name: str = "weight") -> WeightNormSpec | None:
    """How ``module.<name>`` is weight-normalized (kept axis, eps, log-scale gain), or None if it is not.

    The one public way to read the reparameterization of a parameter; :func:`weight_norm_specs` gives
    all of a module's at once.

    Example:
        >>> import torch
        >>> import wnlib
        >>> layer = wnlib.weight_norm(torch.nn.ConvTranspose1d(2, 3, 4))
        >>> wnlib.weight_norm_spec(layer)
        WeightNormSpec(dim=1, eps=1e-12, log_gain=False)
        >>> print(wnlib.weight_norm_spec(layer, "bias"))
        None
    """
    return _specs(module).get(name)


def gain(module: nn.Module, name: str = "weight") -> Tensor:
    """The gain g of ``module.<name>``: ``<name>_g``, or e^``<name>_s`` for a log-scale gain
    (differentiable; what the forward uses).

    Example:
        >>> import torch
        >>> import wnlib
        >>> from wnlib.parametrize import gain
        >>> layer = wnlib.weight_norm(torch.nn.Linear(3, 2), log_gain=True)
        >>> g = gain(layer)  # e^weight_s
        >>> g.shape, torch.allclose(g, layer.weight_v.norm(dim=1))
        (torch.Size([2]), True)
    """
    return _gain(module.__dict__["_parameters"], name, _spec(module, name))


def _gain(params: dict[str, Any], name: str, spec: WeightNormSpec) -> Tensor:
    """:func:`gain` from the module's parameter dict and spec (the forwards' hot path)."""
    p = params[_gain_name(name, spec)]
    return torch.exp(p) if spec.log_gain else p


def set_gain(module: nn.Module, g: Tensor, name: str = "weight") -> None:
    """Write g (any shape with one value per slice) into ``<name>_g``, or log g into ``<name>_s``."""
    spec = _spec(module, name)
    p = module.__dict__["_parameters"][_gain_name(name, spec)]
    g = g.detach().reshape(p.shape).to(p.dtype)
    with torch.no_grad():
        p.copy_(_log_of_gain(g, f"{name!r} of this {type(module).__name__}") if spec.log_gain else g)


def _log_of_gain(g: Tensor, where: str) -> Tensor:
    if not bool((g > 0).all()):
        raise ValueError(f"{where} has a log-scale gain (g = eˢ), which cannot hold g ≤ 0; got min {g.min()}")
    return torch.log(g)


def _default_dim(module: nn.Module) -> int:
    """The output axis of a module's weight: 1 for ConvTranspose (weights are (in, out, ...)), else 0."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def weight_norm_specs(module: nn.Module) -> dict[str, WeightNormSpec]:
    """The weight-normalized parameters of ``module`` itself (not its children), name -> spec (a copy).

    Example:
        >>> import torch
        >>> import wnlib
        >>> wnlib.weight_norm_specs(wnlib.weight_norm(torch.nn.Linear(3, 2), dim=None))
        {'weight': WeightNormSpec(dim=None, eps=1e-12, log_gain=False)}
    """
    return dict(_specs(module))


def is_weight_normed(module: nn.Module, name: str | None = None) -> bool:
    """Whether ``module`` has weight norm (on ``name``, or on any parameter when name is None).

    Example:
        >>> import torch
        >>> import wnlib
        >>> layer = wnlib.weight_norm(torch.nn.Linear(3, 2))
        >>> wnlib.is_weight_normed(layer), wnlib.is_weight_normed(layer, "bias")
        (True, False)
    """
    specs = _specs(module)
    return bool(specs) if name is None else name in specs


# --------------------------------------------------------------------------------------------------
# The class machinery
# --------------------------------------------------------------------------------------------------


def _compute_weight(module: nn.Module, name: str = "weight") -> Tensor:
    """w = g·v/‖v‖ (eq. 2) from ``<name>_v`` and ``<name>_g``, as a plain tensor (what forwards use)."""
    spec = _spec(module, name)
    params = module.__dict__["_parameters"]
    v, g = params[name + "_v"], _gain(params, name, spec)
    return _unchecked_weight_norm(v, g, spec.dim, spec.eps)  # checked when applied


def _weight_property(name: str) -> property:
    """``module.<name>`` as w = g·v/‖v‖ computed from ``<name>_v`` and ``<name>_g``.

    Before weight norm is applied (while the wrapped class's ``__init__`` runs) it falls back to the
    ordinary parameter, so the layer's own initialization works unchanged. Read in eager mode outside
    the module's forward, w comes as an :class:`EffectiveWeight`, so that an in-place write into it
    raises instead of being lost; inside the forward (and when compiling) it is a plain tensor.
    """

    def fget(self: nn.Module) -> Tensor:
        if name not in _specs(self):
            params = self.__dict__["_parameters"]
            if name in params:
                return params[name]
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        w = _compute_weight(self, name)
        if _plain_wanted(w):
            return w
        return EffectiveWeight.alias(w, f"{name!r} of this {type(self).__name__}", name)

    return property(fget, doc=f"The effective {name}, {name}_g · {name}_v / ‖{name}_v‖ (eq. 2).")


def _plain_wanted(w: Tensor) -> bool:
    """Whether w is read by a forward or a tracer/transform, where it stays a plain tensor."""
    if torch.compiler.is_compiling() or _IN_FORWARD.get() or type(w) is not Tensor:
        return True
    return torch._C._functorch.is_functorch_wrapped_tensor(w)


# Tensor methods that write into their first argument without ending in "_" (``w[0] = 1``, ``w += 1``).
_INPLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add sub mul matmul truediv floordiv mod pow and or xor lshift rshift".split())
) | {"__setitem__"}
_ON_PLAIN = frozenset({"__repr__", "__str__", "__format__", "__reduce_ex__", "__deepcopy__"})


class EffectiveWeight(Tensor):
    """The effective weight w = g·v/‖v‖ as read from ``module.<name>``, a tensor that behaves as a plain
    one (every op on it returns a plain tensor, gradients flow to v and g), except that an in-place write
    into it, or into a view of it or its ``.data``, raises. w is computed afresh on every read, so such a
    write (``nn.init.zeros_(layer.weight)``, ``layer.weight.data.fill_(1)``) would otherwise be lost.

    Example:
        >>> import torch
        >>> import wnlib
        >>> layer = wnlib.weight_norm(torch.nn.Linear(4, 3))
        >>> type(layer.weight).__name__, type(layer.weight * 2).__name__
        ('EffectiveWeight', 'Tensor')
        >>> try:
        ...     torch.nn.init.zeros_(layer.weight)
        ... except RuntimeError as error:
        ...     print(str(error).split(",")[0])
        zero_ would write into 'weight' of this Linear
    """

    _wn_where: str
    _wn_name: str

    @staticmethod
    def alias(w: Tensor, where: str, name: str) -> EffectiveWeight:
        """An :class:`EffectiveWeight` sharing w's storage and autograd history."""
        with torch._C.DisableTorchFunctionSubclass():
            out = w.as_subclass(EffectiveWeight)
        out._wn_where, out._wn_name = where, name
        return out

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor", kwargs.get("input"))
        write = _write_into(cls, func, target, kwargs)
        if write is not None:
            raise RuntimeError(_lost_write_message(write[1], write[0]))
        name = getattr(func, "__name__", "")
        with torch._C.DisableTorchFunctionSubclass():
            if name in _ON_PLAIN and isinstance(target, cls):
                args = (target.as_subclass(Tensor), *args[1:])
            out = func(*args, **kwargs)
            return _guard_aliases(out, target) if isinstance(target, cls) else out


def _write_into(cls: type, func: Any, target: Any, kwargs: dict[str, Any]) -> tuple[str, Any] | None:
    """(the write's name, the EffectiveWeight written into) if ``func`` writes into one, else None."""
    name = getattr(func, "__name__", "")
    out = kwargs.get("out")
    for o in out if isinstance(out, (tuple, list)) else (out,):
        if isinstance(o, cls):
            return f"{name}(out=...)", o
    if not isinstance(target, cls):
        return None
    if name == "__set__":  # a property setter: w.data = ...
        return f".{getattr(func.__self__, '__name__', '?')} = ...", target
    if (name.endswith("_") and not name.endswith("__")) or name in _INPLACE_DUNDERS:
        return name, target
    return None


def _guard_aliases(out: Any, w: EffectiveWeight) -> Any:
    """Outputs that share w's memory (views, ``.data``, ``detach()``) stay guarded; all others are plain."""
    if isinstance(out, (tuple, list)):
        return type(out)(_guard_aliases(o, w) for o in out)
    if not isinstance(out, Tensor):
        return out
    ptr = w.untyped_storage().data_ptr()
    if ptr != 0 and out.layout == torch.strided and out.untyped_storage().data_ptr() == ptr:
        return EffectiveWeight.alias(out, w._wn_where, w._wn_name)
    return out.as_subclass(Tensor) if isinstance(out, EffectiveWeight) else out


def _lost_write_message(w: EffectiveWeight, op: str) -> str:
    n = w._wn_name
    return (
        f"{op} would write into {w._wn_where}, which is computed from {n}_v and {n}_g on every read "
        f"({n} = {n}_g·{n}_v/‖{n}_v‖, eq. 2), so the write would be lost. To initialize {n}, use "
        f"wnlib.reinit(module, init_fn, name={n!r}), e.g. "
        f"model.apply(lambda m: wnlib.reinit(m, torch.nn.init.xavier_uniform_)); or write to {n}_v and "
        f"{n}_g directly"
    )


class _WeightNormMixin:
    """Behaviour shared by every weight-normalized module: state_dict translation (and the kept axes
    recorded in the state's ``_metadata``), clear errors on assignment and on ``torch.jit.script``, a
    repr that shows the normalization, and pickling of generated classes."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _specs(self):
            raise AttributeError(
                f"{name!r} of this {type(self).__name__} is computed from {name}_v and {name}_g; "
                f"assign to those, initialize it with wnlib.reinit(module, init_fn, name={name!r}), or "
                f"call wnlib.remove_weight_norm(module, {name!r}) first"
            )
        super().__setattr__(name, value)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        local = getattr(destination, "_metadata", {}).get(prefix[:-1])
        if local is not None:  # Module.state_dict made it just before calling us
            local[_DIM_METADATA] = {n: s.dim for n, s in _specs(self).items()}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        saved_dims = (args[0] or {}).get(_DIM_METADATA, {}) if args else {}
        for name, spec in _specs(self).items():
            _check_saved_dim(self, state_dict, prefix, name, spec, saved_dims)
            _translate_state(self, state_dict, prefix, name, spec)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def __prepare_scriptable__(self) -> nn.Module:
        """Called by ``torch.jit.script``: refuse with the alternatives (TorchScript cannot compile the
        Python property and spec that weight norm here is made of)."""
        raise RuntimeError(
            f"torch.jit.script does not support wnlib's weight-normalized {type(self).__name__}. "
            "Use torch.compile(model) or torch.export.export(model, args) instead, or fold weight norm "
            "away and script the plain model: torch.jit.script(wnlib.fold_for_inference(model.eval()))"
        )

    def extra_repr(self) -> str:
        base = super().extra_repr()
        norms = ", ".join(
            f"{n}: dim={s.dim}{', log_gain' if s.log_gain else ''}"
            for n, s in _specs(self).items()
        )
        return f"{base}, weight_norm=({norms})" if base else f"weight_norm=({norms})"

    def __reduce_ex__(self, protocol: Any) -> Any:
        cls = type(self)
        if "_wn_plain" not in cls.__dict__:  # a named class (wnlib.nn): pickled by reference
            return super().__reduce_ex__(protocol)
        names = tuple(sorted(_specs(self)))
        return (_new_instance, (cls._wn_plain, names), self.__getstate__())


@functools.cache
def _generated_class(plain: type[nn.Module], names: tuple[str, ...]) -> type[nn.Module]:
    """``WeightNorm<Plain>``: ``plain`` with a weight property for each name (cached, so one per pair)."""
    attrs: dict[str, Any] = {n: _weight_property(n) for n in names}
    attrs.update(_wn_plain=plain, __module__=__name__, __doc__=plain.__doc__)
    attrs["forward"] = _forward_with_plain_weights(plain.forward)
    return type(f"WeightNorm{plain.__name__}", (_WeightNormMixin, plain), attrs)


def _forward_with_plain_weights(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` reading its weight properties as plain tensors (no :class:`EffectiveWeight` cost)."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return forward(self, *args, **kwargs)
        token = _IN_FORWARD.set(True)
        try:
            return forward(self, *args, **kwargs)
        finally:
            _IN_FORWARD.reset(token)

    return wrapper


def _new_instance(plain: type[nn.Module], names: tuple[str, ...]) -> nn.Module:
    """Unpickling hook for generated classes: an empty instance whose state pickle then restores."""
    cls = _generated_class(plain, names)
    return cls.__new__(cls)


def _plain_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The class a module returns to once no parameter is weight-normalized (e.g. nn.Linear)."""
    return cls.__dict__.get("_wn_plain") or cls.__dict__.get("plain_class") or cls


def _register_layer(plain: type[nn.Module], layer: type[nn.Module]) -> None:
    """Make ``weight_norm`` turn exact instances of ``plain`` into ``layer`` (used by wnlib.nn)."""
    _FAST_LAYERS[plain] = layer


def _set_class(module: nn.Module) -> None:
    """Give ``module`` the class matching its weight-normalized parameters."""
    cls = type(module)
    plain = _plain_class(cls)
    names = tuple(sorted(_specs(module)))
    if not names:
        module.__class__ = plain
    elif names == ("weight",) and plain in _FAST_LAYERS:
        module.__class__ = _FAST_LAYERS[plain]
    elif not (
        issubclass(cls, _WeightNormMixin) and all(isinstance(getattr(cls, n, None), property) for n in names)
    ):
        module.__class__ = _generated_class(plain, names)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _check_parameter(module: nn.Module, name: str, what: str) -> Tensor:
    """The floating-point parameter ``name`` of ``module`` that ``what`` (a reparameterization, e.g.
    "weight norm") is about to replace, or a clear error before anything changes: the parameter is
    missing, not floating point, already split into ``name_v``/``name_g`` (by torch's legacy weight
    norm) or parametrized by ``torch.nn.utils.parametrize``. Shared by L2 and L1 weight norm."""
    params, kind = module.__dict__["_parameters"], type(module).__name__
    if any(f"{name}_{k}" in params for k in ("v", "g", "s")):
        raise ValueError(
            f"{kind} already has {name}_v/{name}_g (torch.nn.utils.weight_norm?); remove that first"
        )
    if torch.nn.utils.parametrize.is_parametrized(module, name):
        raise ValueError(
            f"{name!r} of this {kind} is parametrized by torch.nn.utils.parametrize; remove that "
            "first (torch.nn.utils.parametrize.remove_parametrizations)"
        )
    w = params.get(name)
    if w is None:
        raise ValueError(f"{kind} has no parameter {name!r}; its parameters are {list(params)}")
    if not w.is_floating_point():
        raise TypeError(f"{what} needs a floating-point parameter, but {name!r} is {w.dtype}")
    return w


def _apply_weight_norm(
    module: nn.Module, name: str, dim: int | None, eps: float, log_gain: bool = False
) -> None:
    """Replace parameter ``name`` by ``name_v`` = w and ``name_g`` = ‖w‖ (or ``name_s`` = log ‖w‖),
    so w is unchanged."""
    eps = check_eps(eps)
    if not isinstance(log_gain, bool):
        raise TypeError(f"log_gain must be True or False, got {type(log_gain).__name__}")
    params = module.__dict__["_parameters"]
    kind = type(module).__name__
    if name in _specs(module):
        raise ValueError(f"weight norm is already applied to {name!r} of this {kind}")
    w = _check_parameter(module, name, "weight norm")
    dim = canonical_dim(w, dim)
    g = _identity_gain(w.detach(), dim, eps)  # exactly the g for which the op gives back w
    spec = WeightNormSpec(dim, eps, log_gain)
    if log_gain:
        g = _log_of_gain(g, f"{name!r} of this {kind} (a zero slice)")
    del params[name]
    specs = {**_specs(module), name: spec}
    module.register_parameter(f"{name}_v", nn.Parameter(w.detach(), w.requires_grad))
    module.register_parameter(_gain_name(name, spec), nn.Parameter(g, w.requires_grad))
    _set_specs(module, specs)
    _set_class(module)


def weight_norm(
    module: nn.Module,
    name: str = "weight",
    dim: int | Literal["default"] | None = _DEFAULT_DIM,
    eps: float = DEFAULT_EPS,
    log_gain: bool = False,
) -> nn.Module:
    """Apply weight norm, w = g · v / ‖v‖ (eq. 2), to parameter ``name`` of ``module``, in place.

    A drop-in for ``torch.nn.utils.parametrizations.weight_norm``: afterwards the module has
    parameters ``<name>_v`` (initialized to w) and ``<name>_g`` (initialized to ‖w‖ per slice, so the
    module computes exactly what it did before), and ``module.<name>`` is the effective weight.

    Args:
        module: any module with a floating-point parameter ``name``.
        name: the parameter to normalize.
        dim: the kept axis, one g per index along it. By default the output axis: 0 for Linear, Conv
            and most layers, 1 for ConvTranspose (whose weights are (in, out, ...); torch's own
            weight_norm uses 0 there, which normalizes per *input* channel). ``None``: one g for the
            whole tensor.
        eps: lower bound on ‖v‖ (see :func:`wnlib.functional.weight_norm`).
        log_gain: store the gain as s with g = eˢ (parameter ``<name>_s`` instead of ``<name>_g``), the
            log-scale parameterization the paper tried (§2: no gain, slightly slower optimization). The
            gradients are the chain rule through exp, so every mode of the op applies.

    Returns:
        The same module (its class swapped for a weight-normalized subclass).

    Example:
        >>> layer = weight_norm(nn.Linear(20, 40))
        >>> sorted(n for n, _ in layer.named_parameters())
        ['bias', 'weight_g', 'weight_v']
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"weight_norm takes an nn.Module, got {type(module).__name__}")
    _apply_weight_norm(module, name, _default_dim(module) if dim == _DEFAULT_DIM else dim, eps, log_gain)
    return module


def remove_weight_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Fold w = g·v/‖v‖ back into a plain parameter ``name``, for zero-overhead inference.

    The module returns to its plain class (e.g. ``wnlib.nn.Linear`` becomes ``nn.Linear``) once no
    parameter is normalized, and computes the same outputs as before.

    Example:
        >>> import torch
        >>> import wnlib
        >>> _ = torch.manual_seed(0)
        >>> layer, x = wnlib.weight_norm(torch.nn.Linear(4, 3)), torch.randn(2, 4)
        >>> y = layer(x)
        >>> plain = wnlib.remove_weight_norm(layer)
        >>> type(plain).__name__, sorted(n for n, _ in plain.named_parameters())
        ('Linear', ['bias', 'weight'])
        >>> torch.allclose(plain(x), y)
        True
    """
    specs = dict(_specs(module))
    if name not in specs:
        has = f"; it has weight norm on {sorted(specs)}" if specs else ""
        raise ValueError(f"{type(module).__name__} has no weight norm on {name!r} to remove{has}")
    with torch.no_grad():
        w = _compute_weight(module, name).detach().clone()
    requires_grad = module._parameters[f"{name}_v"].requires_grad
    spec = specs.pop(name)
    _set_specs(module, specs)
    del module._parameters[f"{name}_v"], module._parameters[_gain_name(name, spec)]
    _set_class(module)
    module.register_parameter(name, nn.Parameter(w, requires_grad))
    return module


def reinit(module: nn.Module, init_fn: Callable[[Tensor], Any], name: str = "weight") -> nn.Module:
    """Apply ``init_fn`` (e.g. ``torch.nn.init.xavier_uniform_``) to the effective ``module.<name>``.

    For a weight-normalized parameter, ``init_fn`` runs (without grad) on a copy of w, and then
    v = w and g = ‖w‖ per slice, so that w = g·v/‖v‖ (eq. 2) is exactly what ``init_fn`` gave; v and g
    are written in place (optimizers holding them stay valid). A plain parameter ``name`` is passed to
    ``init_fn`` directly; a module with neither is left alone, so the call fits ``model.apply``.
    ``init_fn`` may change its argument in place (as ``torch.nn.init`` does) or return the new w.

    Example:
        >>> model = nn.Sequential(weight_norm(nn.Conv1d(2, 4, 3)), nn.ReLU(), nn.Conv1d(4, 1, 1))
        >>> _ = model.apply(lambda m: reinit(m, lambda w: nn.init.normal_(w, 0.0, 0.01)))
        >>> bool(model[0].weight.std() < 0.02)
        True
    """
    spec = weight_norm_spec(module, name)
    params, where = module.__dict__["_parameters"], f"{name!r} of this {type(module).__name__}"
    if spec is None:
        if isinstance(params.get(name), Tensor):
            with torch.no_grad():
                _apply_init(init_fn, params[name], where)
        return module
    v = params[f"{name}_v"]
    with torch.no_grad():
        w = _apply_init(init_fn, _compute_weight(module, name).clone(), where)
        g = _identity_gain(w, spec.dim, spec.eps)  # checked for log-scale gains before v changes
        if spec.log_gain:
            _log_of_gain(g, where)
        v.copy_(w)
        set_gain(module, g, name)
    return module


def _apply_init(init_fn: Callable[[Tensor], Any], w: Tensor, where: str) -> Tensor:
    """``init_fn(w)``: w itself after an in-place init, or the tensor it returned (same shape)."""
    out = init_fn(w)
    if out is None or out is w:
        return w
    if not isinstance(out, Tensor) or out.shape != w.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"init_fn for {where} must change its argument in place or return a tensor of shape "
            f"{tuple(w.shape)}, but returned {got}"
        )
    w.copy_(out)
    return w


# --------------------------------------------------------------------------------------------------
# State dict interoperability with torch's two weight-norm APIs
# --------------------------------------------------------------------------------------------------


def _torch_g_shape(v: Tensor, dim: int | None) -> tuple[int, ...]:
    """Shape of g in torch's weight-norm state dicts: keep-dim (S, 1, ...) or () for dim=None."""
    return () if dim is None else tuple(slice_shape(v, dim))


def _saved_dim(g: Tensor) -> int | None:
    """The kept axis a keep-dim g was saved with, when its shape says so unambiguously."""
    big = [d for d, n in enumerate(g.shape) if n != 1]
    return big[0] if len(big) == 1 else None


def _check_saved_dim(
    module: nn.Module,
    state: dict[str, Any],
    prefix: str,
    name: str,
    spec: WeightNormSpec,
    saved_dims: dict[str, int | None],
) -> None:
    """Refuse a wnlib state whose recorded kept axis for ``name`` is not this module's."""
    if name not in saved_dims or saved_dims[name] == spec.dim:
        return
    if not any(f"{prefix}{name}_{k}" in state for k in ("v", "g", "s")):
        return  # the entry does not describe these keys (they are in another format or absent)
    saved = saved_dims[name]
    raise ValueError(
        f"{prefix}{name}_v/{name}_g were saved with weight norm over dim={saved}, but this "
        f"{type(module).__name__} normalizes {name!r} over dim={spec.dim}: build this layer with "
        f"dim={saved}"
    )


def _translate_state(
    module: nn.Module, state: dict[str, Any], prefix: str, name: str, spec: WeightNormSpec
) -> None:
    """Rewrite ``state`` in place so that ``<name>_v``/``<name>_g`` (or ``_s``) appear in wnlib's format.

    A log-scale gain ``<name>_s`` and a plain one ``<name>_g`` convert into each other (g = eˢ)."""
    v_key, g_key, s_key = f"{prefix}{name}_v", f"{prefix}{name}_g", f"{prefix}{name}_s"
    if spec.log_gain and s_key in state:
        return
    if not spec.log_gain and s_key in state and g_key not in state:
        state[g_key] = torch.exp(state.pop(s_key))
    g0, v1 = f"{prefix}parametrizations.{name}.original0", f"{prefix}parametrizations.{name}.original1"
    if g0 in state or v1 in state:
        for old, new in ((g0, g_key), (v1, v_key)):
            if old in state:
                state[new] = state.pop(old)
    elif prefix + name in state and v_key not in state and g_key not in state:
        w = state.pop(prefix + name)
        state[v_key] = w
        state[g_key] = _identity_gain(w, spec.dim, spec.eps)
    if g_key not in state:
        return
    _fit_gain_shape(module, state, g_key, name, spec)
    if spec.log_gain:
        state[s_key] = _log_of_gain(state.pop(g_key), f"{name!r} of this {type(module).__name__}")


def _fit_gain_shape(
    module: nn.Module, state: dict[str, Any], g_key: str, name: str, spec: WeightNormSpec
) -> None:
    """Reshape a saved g to this module's gain shape (torch's keep-dim shape is accepted), or raise."""
    g, expected = state[g_key], module._parameters[_gain_name(name, spec)].shape
    if g.shape == expected:
        return
    v = module._parameters[f"{name}_v"]
    if g.numel() == expected.numel() and tuple(g.shape) in (_torch_g_shape(v, spec.dim), (1,) * v.ndim):
        state[g_key] = g.reshape(expected)
        return
    saved = _saved_dim(g) if g.ndim == v.ndim else None
    hint = "" if saved is None else f"; it looks saved with dim={saved}: build this layer with dim={saved}"
    raise ValueError(
        f"{g_key} has shape {tuple(g.shape)}, which does not fit weight norm over dim={spec.dim} of "
        f"{name!r} with shape {tuple(v.shape)} (expected {tuple(expected)} or "
        f"{_torch_g_shape(v, spec.dim)}){hint}"
    )


def to_torch_state_dict(
    module: nn.Module, format: Literal["parametrizations", "legacy"] = "parametrizations"
) -> dict[str, Tensor]:
    """``module.state_dict()`` in the key layout of torch's weight norm, for loading without wnlib.

    ``format="parametrizations"`` gives ``<name>.parametrizations.weight.original0`` (g) and
    ``.original1`` (v), as ``torch.nn.utils.parametrizations.weight_norm`` expects;
    ``format="legacy"`` gives ``weight_g``/``weight_v`` for ``torch.nn.utils.weight_norm``. g is
    written in torch's keep-dim shape. The torch module must be built with the same ``dim`` (for
    ConvTranspose that means ``dim=1``; torch's default there is 0). A module used at several places
    of the model is written under each of its names, as ``state_dict()`` does.

    Example:
        >>> import torch
        >>> import wnlib
        >>> layer = wnlib.weight_norm(torch.nn.Linear(4, 3))
        >>> theirs = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 3))
        >>> theirs.load_state_dict(wnlib.to_torch_state_dict(layer))
        <All keys matched successfully>
        >>> torch.allclose(theirs.weight, layer.weight)
        True
    """
    if format not in ("parametrizations", "legacy"):
        raise ValueError(f"format must be 'parametrizations' or 'legacy', got {format!r}")
    state = module.state_dict()
    for local in getattr(state, "_metadata", {}).values():
        local.pop(_DIM_METADATA, None)  # wnlib's own entry; torch's modules have no use for it
    for prefix, sub in module.named_modules(remove_duplicate=False):  # a shared module: every prefix
        prefix = f"{prefix}." if prefix else ""
        for name, spec in _specs(sub).items():
            v = state.pop(f"{prefix}{name}_v")
            g = state.pop(f"{prefix}{_gain_name(name, spec)}")
            g = (torch.exp(g) if spec.log_gain else g).reshape(_torch_g_shape(v, spec.dim))
            if format == "legacy":
                state[f"{prefix}{name}_g"], state[f"{prefix}{name}_v"] = g, v
            else:
                state[f"{prefix}parametrizations.{name}.original0"] = g
                state[f"{prefix}parametrizations.{name}.original1"] = v
    return state
