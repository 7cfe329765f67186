"""Named experiment settings: the CPU-sized ones the book runs and the paper's full-scale CIFAR-10 run.

:func:`make_config` turns a preset, a parameterization and a seed into a complete
:class:`~wnlib.experiments.training.TrainConfig`, taking the learning rate from the preset's table unless
one is given.

Learning rates. The paper (Salimans & Kingma 2016, §5.1) searched Adam's rate over
{0.0003, 0.001, 0.003, 0.01} for each model of its CIFAR-10 comparison and reports the best: 0.003 for
weight norm, batch norm and mean-only batch norm, 0.0003 for the normal parameterization.
:data:`PAPER_LEARNING_RATES` uses exactly these. Two of the six parameterizations here are not named
in that sentence and take the weight-norm rate, 0.003: ``weightnorm_meanonly`` (weight norm with
mean-only batch norm, the paper's best model; in the paper's code its mean-only batch norm layer is a
weight-norm layer) and ``weightnorm`` (weight norm with torch's default initialization instead of the
data-dependent one, which has no row in Table 1). (The paper's code, ``lasagne/train.py`` in
openai/weightnorm, takes the rate on the command line, default 0.001.) Pass ``lr=`` (or ``--lr``) to
use another.

The CPU presets' rates (:data:`CPU_LEARNING_RATES`) were chosen by a small sweep with the ``cpu-small``
preset (MNIST-1D, 20 epochs) over {0.001, 0.003, 0.01, 0.03, 0.1} per parameterization, one seed
(seed 100, not one of the reported seeds), on a validation split of MNIST-1D's training set (the test set
was not used), keeping the rate with the lowest final validation error (ties: the smaller rate);
:func:`~wnlib.experiments.results.lr_sweep` reruns it. Final validation errors (%):

=====================  =====  =====  =====  =====  =====
learning rate          0.001  0.003  0.01   0.03   0.1
=====================  =====  =====  =====  =====  =====
normal                  7.25   5.12   9.62   45.6   53.8
weightnorm              17.5   7.75   3.00   4.62   51.5
weightnorm_init         4.62   2.75   8.00   13.5   31.1
batchnorm               2.75   1.38   1.38   1.62   2.38
meanonly_bn             8.50   4.88   2.75   61.0   77.1
weightnorm_meanonly     4.88   3.62   2.38   3.88   14.1
=====================  =====  =====  =====  =====  =====

One seed on 800 validation examples: differences of a point or two are within noise. ``cpu-digits``
uses the same rates without a sweep of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from wnlib.experiments.data import _check_name
from wnlib.experiments.params import get_parameterization
from wnlib.experiments.training import TrainConfig

__all__ = [
    "CPU_LEARNING_RATES",
    "PAPER_LEARNING_RATES",
    "PRESETS",
    "make_config",
]

#: The best rates of the paper's search (§5.1; see the module docstring), 0.0003 for the normal
#: parameterization, 0.003 for every other (weight norm + mean-only BN takes the weight-norm rate).
PAPER_LEARNING_RATES: dict[str, float] = {
    "normal": 0.0003,
    "weightnorm": 0.003,
    "weightnorm_init": 0.003,
    "batchnorm": 0.003,
    "meanonly_bn": 0.003,
    "weightnorm_meanonly": 0.003,
}

#: Chosen by :func:`~wnlib.experiments.results.lr_sweep` on a validation split of MNIST-1D (see the module
#: docstring).
CPU_LEARNING_RATES: dict[str, float] = {
    "normal": 0.003,
    "weightnorm": 0.01,
    "weightnorm_init": 0.003,
    "batchnorm": 0.003,
    "meanonly_bn": 0.01,
    "weightnorm_meanonly": 0.01,
}

#: The presets, by name. Each holds the TrainConfig (less param, seed and lr), its learning-rate table,
#: and the torch CPU thread count it runs best with (small networks: 1 thread beats 2 busy cores; None:
#: torch's default).
PRESETS: dict[str, dict[str, Any]] = {
    # MNIST-1D, small 1-D convnet: the book's main comparison (six parameterizations × 3 seeds in minutes).
    "cpu-small": {
        "config": TrainConfig(dataset="mnist1d", arch="convnet", epochs=20, batch_size=100),
        "learning_rates": CPU_LEARNING_RATES,
        "threads": 1,
    },
    # scikit-learn's digits, small 2-D convnet.
    "cpu-digits": {
        "config": TrainConfig(dataset="digits", arch="convnet", epochs=20, batch_size=100),
        "learning_rates": CPU_LEARNING_RATES,
        "threads": 1,
    },
    # The paper's run (§5.1): CIFAR-10 with ZCA, the full network, 200 epochs, batch 100, decay after 100,
    # the paper's best learning rate per parameterization.
    "paper": {
        "config": TrainConfig(
            dataset="cifar10",
            arch="paper_cnn",
            epochs=200,
            batch_size=100,
            decay_start=0.5,
            init_batch_size=500,
        ),
        "learning_rates": PAPER_LEARNING_RATES,
        "threads": None,
    },
}


def make_config(
    preset: str = "cpu-small", param: str = "weightnorm", seed: int = 0, **overrides: Any
) -> TrainConfig:
    """The complete configuration of one run: ``preset``'s settings, ``param``, ``seed``, and any
    field of :class:`~wnlib.experiments.training.TrainConfig` overridden by keyword (``lr=None`` means the
    preset's rate).

    Example:
        >>> make_config("cpu-small", "weightnorm_init", seed=1, epochs=3).lr
        0.003
        >>> make_config("paper", "normal").lr    # the paper's best rate for it (§5.1)
        0.0003
        >>> make_config("cpu-small", "weightnorm_init_log_gain").lr    # weightnorm_init's rate
        0.003
    """
    _check_name(preset, tuple(PRESETS), "preset")
    spec = get_parameterization(param)
    entry = PRESETS[preset]
    lr = overrides.pop("lr", None)
    if lr is None:  # a variant (wnlib.experiments.params.VARIANTS) takes the rate of the one it varies
        lr = entry["learning_rates"][spec.variant_of or spec.name]
    return replace(entry["config"], param=spec.name, seed=seed, lr=lr, **overrides)


def _preset_threads(preset: str) -> int | None:
    """The CPU thread count ``preset`` runs with (see :data:`PRESETS`)."""
    return PRESETS[_check_name(preset, tuple(PRESETS), "preset")]["threads"]
