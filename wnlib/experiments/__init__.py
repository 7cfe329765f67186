"""The paper's comparison of parameterizations (Salimans & Kingma 2016, §5.1), at CPU scale and in full.

Used by the Experiments chapter and by ``python -m wnlib.experiments`` (see :mod:`.__main__`).

- :mod:`.data`: digits and MNIST-1D offline; MNIST and CIFAR-10 downloaded and checksum-verified; ZCA;
- :mod:`.params`: the six parameterizations behind one string, and their colours
  (:data:`~wnlib.experiments.params.PALETTE`); one variant of them
  (:data:`~wnlib.experiments.params.VARIANTS`: log-scale gain);
- :mod:`.models`: MLP, small convnet, the paper's CIFAR-10 network, under any parameterization;
- :mod:`.schedule`: Adam's learning rate and β1 over training, as in the paper's code;
- :mod:`.training`: one run, with a per-epoch table cached on disk by a hash of its configuration;
- :mod:`.presets`: ``cpu-small``, ``cpu-digits`` and ``paper`` settings and learning rates;
- :mod:`.results`: the parameterizations × seeds grid, summaries and Markdown tables;
- :mod:`.log_gain`: log-scale gain g = eˢ against the plain gain, on the chapter's main runs.

The whole comparison (cached after the first time; minutes of CPU before that)::

    from wnlib import experiments as ex
    results = ex.run_grid("cpu-small", seeds=(0, 1, 2))
    print(ex.markdown_table(ex.summarize(results)))

Example (one configuration of that grid, and the parameterization behind its name):
    >>> from wnlib import experiments as ex
    >>> config = ex.make_config("cpu-small", "weightnorm_init", seed=0)
    >>> config.dataset, config.arch, config.epochs
    ('mnist1d', 'convnet', 20)
    >>> ex.get_parameterization("weightnorm_init").label
    'weight norm + data-dependent init'
"""

from wnlib.experiments.cache import CacheEntryInvalid, NotWritableError, cache_dir
from wnlib.experiments.data import (
    DATASETS,
    INPUT_SHAPES,
    ZCA,
    ChecksumError,
    Dataset,
    DownloadError,
    load_dataset,
)
from wnlib.experiments.models import ARCHITECTURES, build_model, initialize
from wnlib.experiments.params import (
    PALETTE,
    PARAMETERIZATIONS,
    VARIANTS,
    Parameterization,
    get_parameterization,
)
from wnlib.experiments.presets import CPU_LEARNING_RATES, PAPER_LEARNING_RATES, PRESETS, make_config
from wnlib.experiments.results import (
    benchmark_epochs,
    curves,
    epoch_costs,
    lr_sweep,
    markdown_table,
    run_grid,
    summarize,
)
from wnlib.experiments.schedule import AdamSchedule
from wnlib.experiments.training import (
    ConfigError,
    EpochResult,
    RunResult,
    TrainConfig,
    evaluate,
    fit,
    train,
)

__all__ = [
    "ARCHITECTURES",
    "CPU_LEARNING_RATES",
    "DATASETS",
    "INPUT_SHAPES",
    "PALETTE",
    "PAPER_LEARNING_RATES",
    "PARAMETERIZATIONS",
    "PRESETS",
    "VARIANTS",
    "ZCA",
    "AdamSchedule",
    "CacheEntryInvalid",
    "ChecksumError",
    "ConfigError",
    "Dataset",
    "DownloadError",
    "EpochResult",
    "NotWritableError",
    "Parameterization",
    "RunResult",
    "TrainConfig",
    "benchmark_epochs",
    "build_model",
    "cache_dir",
    "curves",
    "epoch_costs",
    "evaluate",
    "fit",
    "get_parameterization",
    "initialize",
    "load_dataset",
    "lr_sweep",
    "make_config",
    "markdown_table",
    "run_grid",
    "summarize",
    "train",
]
