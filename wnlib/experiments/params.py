"""The six parameterizations the experiments compare, behind one string switch, and their colours.

The paper's CIFAR-10 comparison (Salimans & Kingma 2016, §5.1, Table 1, Figure 2) trains the same network
with different parameterizations of its layers. Here each is a :class:`Parameterization`, looked up by
name with :func:`get_parameterization`:

=======================  ==================================================================================
``normal``               plain layers, w trained directly, from the data-dependent init (§3, eq. 5–6)
``weightnorm``           w = g·v/‖v‖ (eq. 2), torch's default init of v and g = ‖v‖
``weightnorm_init``      weight norm + data-dependent init (§3)
``batchnorm``            plain layers + ``torch.nn.BatchNorm`` (Ioffe & Szegedy 2015)
``meanonly_bn``          plain layers + mean-only batch norm (§4, eq. 7)
``weightnorm_meanonly``  weight norm + mean-only batch norm + data-dependent init (the paper's best model)
=======================  ==================================================================================

One more, not among the six (not in :data:`PARAMETERIZATIONS`, so no grid, table or ``--param all``
includes it; it is in :data:`VARIANTS`):

==============================  =============================================================================
``weightnorm_init_log_gain``    ``weightnorm_init`` with the gain stored as its logarithm, g = eˢ (the
                                variant of §2 the paper tried and found no better, and slightly slower to
                                optimize); the data-dependent init sets s = log g
==============================  =============================================================================

A variant takes the learning rate of the parameterization it varies (``Parameterization.variant_of``)
from a preset's table, so that the comparison changes one thing at a time.

How ``normal`` differs from the paper's code: there, a "no norm" layer computes w = g ⊙ w', with g set
by the data-dependent init and then frozen, and Adam updates w'. Here the model is built with weight norm,
initialized by :func:`wnlib.data_dependent_init`, and then :func:`wnlib.remove_weight_norm` folds
g·v/‖v‖ into a plain weight w that Adam updates directly. Both start from the same function; they differ
in the optimizer's geometry: Adam's per-coordinate step on w' moves w by about lr·g per coordinate,
while here it moves w by about lr. (Under plain SGD the two would also differ, by g² in the step.)

:data:`PALETTE` gives each parameterization one colour (Okabe–Ito, colour-blind safe) for every figure
in the book (the book's package ``wnbook.style`` takes its palette and labels from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wnlib.experiments.data import _check_name

__all__ = [
    "PALETTE",
    "PARAMETERIZATIONS",
    "VARIANTS",
    "Normalizer",
    "Parameterization",
    "get_parameterization",
]

#: The normalization layer after each weight layer, batch norm, mean-only batch norm or none.
Normalizer = Literal["batch", "mean_only"] | None


@dataclass(frozen=True)
class Parameterization:
    """How every weight layer of a model is parameterized and initialized.

    Attributes:
        name: the switch's value, e.g. ``"weightnorm_init"``.
        label: a short label for legends and tables.
        weight_norm: build the layers as :mod:`wnlib.nn` layers, w = g·v/‖v‖ (eq. 2).
        normalizer: ``"batch"`` (``torch.nn.BatchNorm``), ``"mean_only"`` (mean-only batch norm, eq. 7)
            or None, placed after each weight layer (whose own bias is then dropped: the normalizer
            has one).
        data_init: run the data-dependent initialization (§3, eq. 5–6) on a batch of training data.
        fold: after initializing, fold weight norm back into plain weights (the ``normal``
            parameterization).
        color: the colour of this parameterization in every figure.
        log_gain: under weight norm, store each gain as s with g = eˢ (parameters ``weight_s``; see
            :func:`wnlib.weight_norm`).
        variant_of: for a variant (:data:`~wnlib.experiments.params.VARIANTS`), the parameterization
            of the six it changes in one respect, whose learning rate it takes; None for the six
            themselves.
    """

    name: str
    label: str
    weight_norm: bool
    normalizer: Normalizer
    data_init: bool
    fold: bool
    color: str
    log_gain: bool = False
    variant_of: str | None = None


#: The six parameterizations, by name.
PARAMETERIZATIONS: dict[str, Parameterization] = {
    p.name: p
    for p in (
        Parameterization("normal", "normal parameterization", True, None, True, True, "#000000"),
        Parameterization("weightnorm", "weight norm", True, None, False, False, "#0072B2"),
        Parameterization(
            "weightnorm_init", "weight norm + data-dependent init", True, None, True, False, "#56B4E9"
        ),
        Parameterization("batchnorm", "batch norm", False, "batch", False, False, "#D55E00"),
        Parameterization("meanonly_bn", "mean-only batch norm", False, "mean_only", False, False, "#E69F00"),
        Parameterization(
            "weightnorm_meanonly", "weight norm + mean-only BN", True, "mean_only", True, False, "#009E73"
        ),
    )
}

#: name -> colour, the same in every chapter's figures.
PALETTE: dict[str, str] = {name: p.color for name, p in PARAMETERIZATIONS.items()}

#: Parameterizations outside the six of the comparison, each a one-respect variant of one of them.
VARIANTS: dict[str, Parameterization] = {
    p.name: p
    for p in (
        Parameterization(
            "weightnorm_init_log_gain",
            "weight norm (log-scale g) + data-dependent init",
            True,
            None,
            True,
            False,
            "#CC79A7",
            log_gain=True,
            variant_of="weightnorm_init",
        ),
    )
}


def get_parameterization(name: str | Parameterization) -> Parameterization:
    """The :class:`Parameterization` called ``name`` (one of the six, or of
    :data:`~wnlib.experiments.params.VARIANTS`); a ValueError listing the valid names otherwise."""
    if isinstance(name, Parameterization):
        return name
    known = PARAMETERIZATIONS | VARIANTS
    return known[_check_name(name, tuple(known), "parameterization")]
