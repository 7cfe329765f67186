"""Training one configuration: Adam with the paper's schedule, a per-epoch result table, a disk cache.

:func:`train` is what the Experiments chapter and the CLI call: it returns a :class:`RunResult` (one
:class:`EpochResult` per epoch: train loss and error, test loss and error, wall time) and stores it on
disk under a hash of the configuration (:mod:`wnlib.experiments.cache`), so calling it again with the
same configuration returns the stored result without training. :func:`fit` trains without the cache and
also returns the model.

The procedure follows the paper's CIFAR-10 code (Salimans & Kingma 2016, §5.1): each epoch visits the
training set once in a new random order in minibatches (the last incomplete one dropped); before the
first step the parameterization's initialization runs on ``init_batch_size`` training examples (§3);
Adam follows :class:`~wnlib.experiments.schedule.AdamSchedule`; the test error is measured after each
epoch in eval mode.

Under ``torchrun`` (a ``torch.distributed`` process group is initialized) training is data-parallel:
each rank takes its share of every minibatch (``batch_size`` is the global size) from a
``DistributedSampler``, gradients are averaged by ``DistributedDataParallel``, and the data-dependent
init all-reduces its statistics so every rank starts from the same parameters.
"""

from __future__ import annotations

import math
import numbers
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

import wnlib
from wnlib._extras import require
from wnlib._threads import torch_threads
from wnlib.experiments import cache as _cache
from wnlib.experiments.data import _DOWNLOADED, DATASETS, INPUT_SHAPES, _check_name, load_dataset
from wnlib.experiments.models import ARCHITECTURES, _check_input_shape, build_model, initialize
from wnlib.experiments.params import get_parameterization
from wnlib.experiments.schedule import AdamSchedule
from wnlib.experiments.tables import markdown_table

__all__ = [
    "ConfigError",
    "EpochResult",
    "RunResult",
    "TrainConfig",
    "cache_key",
    "cached_result",
    "evaluate",
    "fit",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result (the device aside). Build one with
    :func:`wnlib.experiments.make_config`.

    Attributes:
        dataset: ``digits``, ``mnist1d``, ``mnist`` or ``cifar10``.
        arch: ``mlp``, ``convnet`` or ``paper_cnn``.
        param: the parameterization (see :mod:`wnlib.experiments.params`).
        width: channel/unit multiplier of the network.
        epochs: passes over the training set.
        batch_size: minibatch size (global: split across ranks under torchrun).
        lr: Adam's learning rate before the decay.
        decay_start: fraction of training after which the rate decays linearly to 0 and β1 drops.
        beta1: Adam's β1 before the decay.
        beta1_decay: Adam's β1 during the decay.
        beta2: Adam's β2.
        init_batch_size: training examples used by the data-dependent initialization (paper: 500).
        init_scale: the data-dependent init's target scale of each pre-activation (paper: 1).
        seed: seeds Python, NumPy and torch (model init, data order, noise and dropout).
        split: ``"test"``, or ``"validation"`` to evaluate on a held-out 20% of the training set.
        max_batches: stop each epoch after this many minibatches (for quick tests); None: all.

    Every field is checked when the configuration is made (a ValueError says which and why), including
    that ``arch`` can take ``dataset``'s inputs; that ``batch_size`` fits the training split is checked
    when the data is loaded, before training (:class:`ConfigError`).
    """

    dataset: str = "mnist1d"
    arch: str = "convnet"
    param: str = "weightnorm"
    width: float = 1.0
    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.003
    decay_start: float = 0.5
    beta1: float = 0.9
    beta1_decay: float = 0.5
    beta2: float = 0.999
    init_batch_size: int = 500
    init_scale: float = 1.0
    seed: int = 0
    split: str = "test"
    max_batches: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.dataset, DATASETS, "dataset")
        _check_name(self.arch, ARCHITECTURES, "architecture")
        _check_name(self.split, ("test", "validation"), "split")
        get_parameterization(self.param)
        try:
            _check_input_shape(self.arch, INPUT_SHAPES[self.dataset])
        except ValueError as e:
            raise ValueError(f"dataset {self.dataset}: {e}") from None
        _check_fields(self)


_POSITIVE_INTS = ("epochs", "batch_size", "init_batch_size")
_POSITIVE_FLOATS = ("width", "lr", "init_scale")


def _check_fields(config: TrainConfig) -> None:
    """Each numeric field of ``config`` of the right kind and range, else a ValueError naming it."""

    def is_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    def is_real(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    ints = {n: getattr(config, n) for n in _POSITIVE_INTS}
    if config.max_batches is not None:
        ints["max_batches"] = config.max_batches
    for name, value in ints.items():
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in _POSITIVE_FLOATS:
        value = getattr(config, name)
        if not is_real(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not (is_real(config.decay_start) and 0 <= config.decay_start <= 1):
        raise ValueError(f"decay_start must be a number in [0, 1], got {config.decay_start!r}")
    for name in ("beta1", "beta1_decay", "beta2"):
        value = getattr(config, name)
        if not (is_real(value) and 0 <= value < 1):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if not is_int(config.seed):
        raise ValueError(f"seed must be an integer, got {config.seed!r}")


class ConfigError(ValueError):
    """A configuration that cannot run on its data (found once the data is loaded, before training)."""


@dataclass(frozen=True)
class EpochResult:
    """One row of a run's table. Errors are fractions in [0, 1]; ``seconds`` is the wall time of the
    epoch's training pass (the evaluation's is ``eval_seconds``)."""

    epoch: int
    train_loss: float
    train_error: float
    test_loss: float
    test_error: float
    lr: float
    beta1: float
    seconds: float
    eval_seconds: float


@dataclass
class RunResult:
    """A finished run: its configuration, one :class:`EpochResult` per epoch, and where it ran.

    ``cached`` says whether this object was read from the cache rather than trained now; it is not
    stored. A run whose training loss became non-finite stops at that epoch and is :attr:`diverged`;
    it is stored with that marker and with ``null`` for its non-finite numbers, which read back as NaN.
    """

    config: TrainConfig
    epochs: list[EpochResult]
    device: str
    world_size: int
    wnlib_version: str
    init_seconds: float
    cached: bool = field(default=False, compare=False)

    @property
    def final_test_error(self) -> float:
        return self.epochs[-1].test_error

    @property
    def diverged(self) -> bool:
        """Whether the training loss became non-finite (NaN or inf); training stopped in that epoch."""
        return any(not math.isfinite(e.train_loss) for e in self.epochs)

    @property
    def seconds_per_epoch(self) -> float:
        """Median training time per epoch (robust to the first epoch's warm-up and to noise)."""
        return float(np.median([e.seconds for e in self.epochs]))

    def rows(self) -> list[dict[str, Any]]:
        """The per-epoch table as a list of dicts."""
        return [asdict(e) for e in self.epochs]

    def to_markdown(self) -> str:
        """The per-epoch table in Markdown (errors in %)."""
        rows = [
            {
                "epoch": e.epoch,
                "train loss": e.train_loss,
                "train error %": 100 * e.train_error,
                "test error %": 100 * e.test_error,
                "lr": e.lr,
                "s/epoch": e.seconds,
            }
            for e in self.epochs
        ]
        return markdown_table(rows)

    def to_dict(self) -> dict[str, Any]:
        """The run as a dict (what the cache stores), with its ``diverged`` marker."""
        d = asdict(self)
        d.pop("cached")
        d["diverged"] = self.diverged
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> RunResult:
        """The run :meth:`to_dict` gave (``null`` numbers read as NaN); a ValueError says what is missing
        or malformed, so a damaged cache entry is never taken for a result."""
        if not isinstance(d, dict):
            raise ValueError(f"a run is a JSON object, got {type(d).__name__}")
        missing = [k for k in ("config", "epochs", *_RUN_FIELDS) if k not in d]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        if not isinstance(d["config"], dict):
            raise ValueError("field config is not an object")
        known = {f.name for f in fields(TrainConfig)}
        try:
            config = TrainConfig(**{k: v for k, v in d["config"].items() if k in known})
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid config ({e})") from None
        epochs = _epochs_from_list(d["epochs"])
        for name, kinds in _RUN_FIELDS.items():
            if not isinstance(d[name], kinds) or isinstance(d[name], bool):
                raise ValueError(f"field {name} is {d[name]!r}, not a {kinds[0].__name__}")
        info = [d[name] for name in _RUN_FIELDS]
        result = cls(config, epochs, *info, cached)
        if len(epochs) != config.epochs and not result.diverged:
            raise ValueError(f"{len(epochs)} epochs of {config.epochs}, and the run did not diverge")
        if d.get("diverged", result.diverged) is not result.diverged:
            raise ValueError(f"marked diverged={d['diverged']!r} but its losses say {result.diverged}")
        return result


_RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "device": (str,),
    "world_size": (int,),
    "wnlib_version": (str,),
    "init_seconds": (float, int),
}


def _epochs_from_list(rows: Any, row_type: type = EpochResult) -> list:
    """The per-epoch table of a stored run as ``row_type`` dataclasses (:class:`EpochResult`, or the VAE's
    epochs): a non-empty list of complete rows numbered 1, 2, ...; ``null`` (a non-finite number) reads
    as NaN."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("no epochs: a run has at least one")
    names = [f.name for f in fields(row_type)]
    epochs = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != set(names):
            raise ValueError(f"epoch row {i + 1} does not have exactly the fields {', '.join(names)}")
        values = {k: math.nan if row[k] is None else row[k] for k in names}
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values.values()):
            raise ValueError(f"epoch row {i + 1} holds a value that is not a number")
        if values["epoch"] != i + 1:
            raise ValueError(f"epoch row {i + 1} is numbered {values['epoch']}")
        epochs.append(row_type(**values))
    return epochs


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device; None or ``"auto"``: CUDA when available, else CPU. Under torchrun
    with CUDA, the rank's local GPU."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and dist.is_available() and dist.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _check_device(device: str | torch.device | None = None) -> torch.device:
    """:func:`_resolve_device`, and a ValueError when it names a CUDA device this machine does not have
    (reading cached results needs no device, training does)."""
    device = _resolve_device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available here (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); use device 'cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {str(device)!r}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}"
            )
    return device


def _check_batch_size(config: TrainConfig, n_train: int, world: int) -> None:
    """A :class:`ConfigError` unless ``config.batch_size`` splits evenly over ``world`` ranks and at
    least one full minibatch fits in the ``n_train`` training examples."""
    if config.batch_size % world:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {world} ranks")
    if config.batch_size > n_train:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the training split of {config.dataset} "
            f"({config.split} split: {n_train} training examples); use a batch size of at most {n_train}"
        )


def _distributed(process_group: dist.ProcessGroup | None) -> tuple[dist.ProcessGroup | None, int, int]:
    """(group, rank, world size): the given group, else the default one when initialized."""
    if process_group is None and dist.is_available() and dist.is_initialized():
        process_group = dist.group.WORLD
    if process_group is None:
        return None, 0, 1
    return process_group, dist.get_rank(process_group), dist.get_world_size(process_group)


def cache_key(config: TrainConfig, device: torch.device, world_size: int) -> str:
    """The hash a run is cached under: its configuration, the device type, the number of ranks, the
    wnlib version and the cache format version."""
    return _cache._config_key(
        {
            "config": asdict(config),
            "device": device.type,
            "world_size": world_size,
            "wnlib": wnlib.__version__,
            "results_version": _cache._RESULTS_VERSION,
        }
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, error rate) of ``model`` in eval mode; restores the previous mode."""
    was_training = model.training
    model.eval()
    loss, wrong = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        wrong += (logits.argmax(1) != target).sum().item()
    model.train(was_training)
    return loss / len(y), wrong / len(y)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress(total: int, quiet: bool, desc: str) -> Any:
    tqdm = require("tqdm.auto", "the progress bar").tqdm

    return tqdm(total=total, disable=quiet, desc=desc, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def fit(
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    quiet: bool = False,
    process_group: dist.ProcessGroup | None = None,
    cache_dir: str | None = None,
    threads: int | None = None,
) -> tuple[nn.Module, RunResult]:
    """Train ``config`` now (no result cache) and return (the trained model, its :class:`RunResult`).

    Args:
        config: the run.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        quiet: no progress bar.
        process_group: for data-parallel training; by default the initialized default group, if any.
        cache_dir: where downloaded data sets are kept (see :mod:`wnlib.experiments.cache`).
        threads: torch's CPU threads during the run (None: unchanged).
    """
    with torch_threads(threads):
        return _fit(config, _check_device(device), quiet, process_group, cache_dir)


def _fit(
    config: TrainConfig,
    device: torch.device,
    quiet: bool,
    process_group: dist.ProcessGroup | None,
    cache_dir: str | None,
) -> tuple[nn.Module, RunResult]:
    group, rank, world = _distributed(process_group)
    if group is not None and config.dataset in _DOWNLOADED and rank != 0:
        dist.barrier(group)  # let rank 0 download first
    data = load_dataset(config.dataset, split=config.split, cache=cache_dir)
    if group is not None and config.dataset in _DOWNLOADED and rank == 0:
        dist.barrier(group)
    _check_batch_size(config, len(data.y_train), world)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)

    _seed_everything(config.seed)
    model = build_model(config.arch, data.input_shape, data.num_classes, config.param, width=config.width)
    model.to(device).train()

    # The parameterization's initialization (§3) on the first init_batch_size examples of a seeded
    # permutation of the training set; under torchrun each rank takes every world-th of them.
    t0 = time.perf_counter()
    order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(config.seed))
    init_idx = order[: config.init_batch_size][rank::world].to(device)
    initialize(model, config.param, x_train[init_idx], init_scale=config.init_scale, process_group=group)
    _sync(device)
    init_seconds = time.perf_counter() - t0
    torch.manual_seed(config.seed * 1_000_003 + rank)  # distinct noise and dropout per rank

    net: nn.Module = model
    if group is not None:
        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, process_group=group)

    sampler = DistributedSampler(
        range(len(y_train)), num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    local_batch = config.batch_size // world
    steps = len(sampler) // local_batch
    if config.max_batches is not None:
        steps = min(steps, config.max_batches)
    if steps < 1:
        raise ConfigError(
            f"the training set ({len(y_train)} examples) has no full batch of {config.batch_size}"
        )
    schedule = AdamSchedule(
        config.lr, config.epochs * steps, config.decay_start, config.beta1, config.beta1_decay
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))

    epochs: list[EpochResult] = []
    bar = _progress(config.epochs, quiet or rank != 0, f"{config.param} seed {config.seed}")
    step = 0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        idx = torch.tensor(list(sampler), device=device)
        totals = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, wrong
        _sync(device)
        t0 = time.perf_counter()
        for b in range(steps):
            batch = idx[b * local_batch : (b + 1) * local_batch]
            xb, yb = x_train[batch], y_train[batch]
            schedule.apply(optimizer, step)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                totals[0] += loss.detach() * len(yb)
                totals[1] += (logits.argmax(1) != yb).sum()
        _sync(device)
        seconds = time.perf_counter() - t0
        if group is not None:
            dist.all_reduce(totals, group=group)
            for buf in model.buffers():  # BN running statistics: rank 0's, so all ranks evaluate alike
                dist.broadcast(buf, dist.get_global_rank(group, 0), group=group)
        t1 = time.perf_counter()
        test_loss, test_error = evaluate(model, x_test, y_test)
        eval_seconds = time.perf_counter() - t1
        loss_sum, wrong = totals.tolist()
        count = steps * config.batch_size
        last = max(step - 1, 0)
        epochs.append(
            EpochResult(
                epoch=epoch + 1,
                train_loss=loss_sum / count,
                train_error=wrong / count,
                test_loss=test_loss,
                test_error=test_error,
                lr=schedule.lr_at(last),
                beta1=schedule.beta1_at(last),
                seconds=seconds,
                eval_seconds=eval_seconds,
            )
        )
        if not math.isfinite(loss_sum):
            bar.close()
            break  # diverged: the table ends here, with its non-finite loss
        bar.set_postfix(loss=f"{loss_sum / count:.3f}", test_err=f"{100 * test_error:.1f}%")
        bar.update()
    bar.close()
    result = RunResult(config, epochs, device.type, world, wnlib.__version__, init_seconds)
    return model, result


def cached_result(
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    world_size: int = 1,
) -> RunResult | None:
    """The stored :class:`RunResult` of ``config`` on ``device``'s type, or None if it was never run.

    An entry that does not validate (unreadable, not a complete run, no epochs, or a stored
    configuration, device type or number of ranks other than the key's) is a miss too, reported by a
    :class:`~wnlib.experiments.cache.CacheEntryInvalid` warning; :func:`train` then retrains and
    replaces it.
    """
    resolved = _resolve_device(device)
    key = cache_key(config, resolved, world_size)
    stored, problem = _cache._read_result(key, cache_dir)
    if stored is not None:
        try:
            result = RunResult.from_dict(stored, cached=True)
            _check_entry(result, stored, config, resolved, world_size)
        except ValueError as e:
            problem = f"is not a valid run ({' '.join(str(e).split())})"
        else:
            return result
    if problem is not None:
        path = _cache.result_path(key, cache_dir)
        message = f"cache entry {path} {problem}: treated as a miss, to be retrained and replaced"
        warnings.warn(message, _cache.CacheEntryInvalid, stacklevel=2)
    return None


def _check_entry(
    result: RunResult, stored: dict[str, Any], config: TrainConfig, device: torch.device, world: int
) -> None:
    """A ValueError unless the stored run is the one its key stands for."""
    if stored["config"] != asdict(config):
        diff = sorted(k for k in asdict(config) if stored["config"].get(k, object()) != getattr(config, k))
        raise ValueError(f"its stored config differs from its key's in {', '.join(diff) or 'extra fields'}")
    if (result.device, result.world_size) != (device.type, world):
        raise ValueError(
            f"it ran on {result.device} × {result.world_size}, its key is for {device.type} × {world}"
        )
    if result.wnlib_version != wnlib.__version__:
        raise ValueError(f"it ran with wnlib {result.wnlib_version}, its key is for {wnlib.__version__}")


def train(
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    quiet: bool = False,
    use_cache: bool = True,
    cache_dir: str | None = None,
    process_group: dist.ProcessGroup | None = None,
    threads: int | None = None,
) -> RunResult:
    """The :class:`RunResult` of ``config``: from the cache when this configuration has been run (on the
    same device type and number of ranks, with the same wnlib version), otherwise trained by
    :func:`fit` and then stored (by rank 0).

    Args:
        config: the run (see :func:`wnlib.experiments.make_config`).
        device: default CUDA when available, else CPU.
        quiet: no progress bar.
        use_cache: False trains even when a result is stored (and stores the new one).
        cache_dir: the cache directory (default ``$WNLIB_CACHE`` or ``~/.cache/wnlib``).
        process_group: for data-parallel training (default: the initialized default group, if any).
        threads: torch's CPU threads while training (None: unchanged; the CPU presets use 1).
    """
    resolved = _resolve_device(device)
    group, rank, world = _distributed(process_group)
    if use_cache:
        stored = cached_result(config, device=resolved, cache_dir=cache_dir, world_size=world)
        if stored is not None:
            return stored
    _, result = fit(
        config, device=resolved, quiet=quiet, process_group=group, cache_dir=cache_dir, threads=threads
    )
    if rank == 0:
        _cache.save_result(cache_key(config, resolved, world), result.to_dict(), cache_dir)
    return result
