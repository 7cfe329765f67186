"""The convolutional VAE of Salimans & Kingma (2016, §5.2): normal parameterization vs weight norm.

Used by the chapter ``book/vae.ipynb`` and by ``python -m wnlib.experiments.vae --preset vae-small``.

The paper trains a convolutional VAE with ResNet blocks and an inverse autoregressive flow (IAF)
posterior on MNIST and CIFAR-10, with Adamax (α = 0.002) and an exponential moving average of the
parameters, and reports (figures only) that weight norm gives a training objective of lower variance
and a better optimum: on MNIST a test bound of about −85.3 nats against −85.8 at epoch 300. This module
is a CPU-sized version of that experiment, with these differences, each stated where it is made:

- the posterior is a diagonal Gaussian q(z|x) = N(μ(x), diag σ(x)²), not IAF (at 8×8 pixels and a few
  latent units a flow has little to add; the comparison is between parameterizations, not posteriors);
- the likelihood is Bernoulli on binarized pixels, so the bound is in nats; the training images are
  binarized *dynamically* (each pixel a fresh Bernoulli draw with its grey level as probability, at
  every step), the test images *statically* (one draw, the same for every run and epoch);
- the data set of ``vae-small`` is scikit-learn's bundled 8×8 digits (1,437 training, 360 test images,
  the split of :mod:`wnlib.experiments.data`); ``vae-paper`` uses MNIST 28×28 (downloaded and
  checksum-verified by :mod:`wnlib.experiments.data`, dynamically binarized: the paper used the
  statically binarized MNIST of the IAF paper, so its numbers are not directly comparable);
- no parameter averaging: the test bound is that of the current parameters.

Both parameterizations use the same data-dependent initialization (§3, eq. 5–6) on
``init_batch_size`` training images, the same way as the classification runs of
:mod:`wnlib.experiments.models`: the network is built with weight-normalized layers
(:mod:`wnlib.nn`), :func:`wnlib.data_dependent_init` sets g and b, and for ``normal`` the weight norm is
then folded into plain weights w = g·v/‖v‖ that Adamax updates directly (the paper's code instead keeps
a frozen g in front of a trained w′; see :mod:`wnlib.experiments.params`). The two therefore start from
the same function and differ only in what the optimizer moves.

Each epoch records the mean training objective (the negative ELBO, nats per image), its variance over
the minibatches of the epoch, and the test ELBO (nats per image, averaged over ``test_samples`` draws of
z per image); the last epoch also records the importance-weighted bound with ``iw_samples`` draws
(Burda et al. 2016), a tighter lower bound on log p(x). Runs are cached on disk exactly like the
classification runs (:mod:`wnlib.experiments.cache`); the chapter's are committed in
``book/wnbook/data/experiments`` (read back by the book package ``wnbook``).

Example:
    >>> from wnlib.experiments import vae
    >>> config = vae.make_vae_config(
    ...     "vae-small", "weightnorm_init", seed=0, epochs=1, max_batches=2, test_samples=1, iw_samples=0
    ... )
    >>> result = vae.fit_vae(config, device="cpu", threads=1)[1]
    >>> len(result.epochs), result.epochs[0].test_elbo < 0
    (1, True)
"""

from __future__ import annotations

import argparse
import functools
import math
import numbers
import statistics
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import wnlib
import wnlib.nn as wnn
from wnlib._extras import require
from wnlib._threads import torch_threads
from wnlib.experiments import cache as _cache
from wnlib.experiments.data import ChecksumError, DownloadError, _check_name
from wnlib.experiments.models import initialize
from wnlib.experiments.tables import markdown_table
from wnlib.experiments.training import _check_device, _epochs_from_list, _resolve_device, _seed_everything

__all__ = [
    "TEST_BINARIZATION_SEED",
    "VAE_DATASETS",
    "VAE_PARAMS",
    "VAE_PRESETS",
    "ConvVAE",
    "ResBlock",
    "VAEConfig",
    "VAEEpoch",
    "VAERunResult",
    "bernoulli_log_likelihood",
    "build_vae",
    "cached_vae_result",
    "fit_vae",
    "gaussian_kl",
    "gaussian_log_density",
    "importance_weighted_bound",
    "late_variance",
    "load_vae_data",
    "log_weights",
    "main",
    "make_vae_config",
    "mean_elbo",
    "mean_iw_bound",
    "parse_args",
    "run_table",
    "run_vae_grid",
    "summarize_vae",
    "train_vae",
    "vae_cache_key",
]

#: The two parameterizations of §5.2, both with the data-dependent init (names as in
#: :mod:`wnlib.experiments.params`, so colours and labels match the other chapters).
VAE_PARAMS = ("normal", "weightnorm_init")
#: The data sets the VAE trains on (binarized).
VAE_DATASETS = ("digits", "mnist")
#: The seed of the one static binarization of each test set (the same for every run).
TEST_BINARIZATION_SEED = 1234

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEConfig:
    """Everything that determines a VAE run's result (the device aside); see :func:`make_vae_config`.

    Attributes:
        dataset: ``digits`` (8×8, bundled) or ``mnist`` (28×28, downloaded).
        param: ``normal`` or ``weightnorm_init`` (both with the data-dependent init).
        channels: channels of the first stage; each of the two stages doubles them.
        blocks: residual blocks per stage, in the encoder and in the decoder.
        latent: dimension of z.
        epochs: passes over the training set.
        batch_size: minibatch size (the last incomplete one is dropped).
        lr: Adamax's α (the paper's 0.002).
        beta1: Adamax's β1 (Kingma & Ba's default; PAPER.md gives none for §5.2).
        beta2: Adamax's β2 (Kingma & Ba's default).
        init_batch_size: the data-dependent init's batch (paper's code: 500).
        init_scale: the data-dependent init's target scale.
        test_samples: draws of z per test image in each epoch's test ELBO.
        iw_samples: draws of z per test image in the final importance-weighted bound (0: none).
        seed: seeds the weights, the data order, the binarization and the noise.
        max_batches: stop each epoch after this many minibatches (for quick tests); None: all.
    """

    dataset: str = "digits"
    param: str = "weightnorm_init"
    channels: int = 16
    blocks: int = 1
    latent: int = 8
    epochs: int = 40
    batch_size: int = 100
    lr: float = 0.002
    beta1: float = 0.9
    beta2: float = 0.999
    init_batch_size: int = 500
    init_scale: float = 1.0
    test_samples: int = 10
    iw_samples: int = 100
    seed: int = 0
    max_batches: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.dataset, VAE_DATASETS, "VAE dataset")
        _check_name(self.param, VAE_PARAMS, "VAE parameterization")
        _check_config_numbers(self)


def _check_config_numbers(config: VAEConfig) -> None:
    """Every numeric field of the right kind and range, else a ValueError naming it."""

    def is_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    positive = ["channels", "blocks", "latent", "epochs", "batch_size", "init_batch_size", "test_samples"]
    checks = {n: getattr(config, n) for n in positive}
    if config.max_batches is not None:
        checks["max_batches"] = config.max_batches
    for name, value in checks.items():
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not is_int(config.iw_samples) or config.iw_samples < 0:
        raise ValueError(f"iw_samples must be a non-negative integer, got {config.iw_samples!r}")
    if not is_int(config.seed):
        raise ValueError(f"seed must be an integer, got {config.seed!r}")
    for name in ("lr", "init_scale"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    for name in ("beta1", "beta2"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


#: The presets. ``vae-small`` is what the chapter runs on CPU; ``vae-paper`` the paper's scale (GPU).
VAE_PRESETS: dict[str, dict[str, Any]] = {
    "vae-small": {"config": {}, "seeds": (0, 1, 2, 3, 4), "threads": 1},
    "vae-paper": {
        "config": {
            "dataset": "mnist",
            "channels": 64,
            "blocks": 2,
            "latent": 32,
            "epochs": 300,
            "test_samples": 1,
            "iw_samples": 1000,
        },
        "seeds": (0, 1, 2),
        "threads": None,
    },
}


def make_vae_config(
    preset: str = "vae-small", param: str = "weightnorm_init", seed: int = 0, **overrides: Any
) -> VAEConfig:
    """The :class:`VAEConfig` of ``preset`` for ``param`` and ``seed``, with ``overrides`` (field names)."""
    _check_name(preset, tuple(VAE_PRESETS), "VAE preset")
    known = {f.name for f in fields(VAEConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown VAE config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    return VAEConfig(**{**VAE_PRESETS[preset]["config"], "param": param, "seed": seed, **overrides})


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@functools.cache
def _grey_levels(name: str, cache: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) grey levels in [0, 1], shape (N, 1, H, W), float32."""
    if name == "digits":
        load_digits = require("sklearn.datasets", "the digits data set").load_digits

        images = load_digits().images[:, None] / 16.0  # values 0..16
        order = np.random.default_rng(0).permutation(len(images))  # the split of experiments.data
        n_train = int(0.8 * len(images))
        return images[order[:n_train]].astype(np.float32), images[order[n_train:]].astype(np.float32)
    from wnlib.experiments.data import REMOTE_FILES, _data_dir, _read_idx, fetch

    directory = _data_dir(cache) / "mnist"
    train, _, test, _ = (_read_idx(fetch(r, directory)) for r in REMOTE_FILES["mnist"])
    return (train[:, None] / 255.0).astype(np.float32), (test[:, None] / 255.0).astype(np.float32)


def load_vae_data(name: str, cache: str | None = None) -> tuple[Tensor, Tensor]:
    """(training grey levels in [0, 1], the statically binarized test set) of ``name``.

    Example:
        >>> train, test = load_vae_data("digits")
        >>> tuple(train.shape), tuple(test.shape), sorted(test.unique().tolist())
        ((1437, 1, 8, 8), (360, 1, 8, 8), [0.0, 1.0])
    """
    _check_name(name, VAE_DATASETS, "VAE dataset")
    train, test = _grey_levels(name, None if cache is None else str(cache))
    test = torch.from_numpy(test)
    binary = torch.bernoulli(test, generator=torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
    return torch.from_numpy(train), binary


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """x + conv(elu(conv(elu(x)))): a pre-activation residual block, 3×3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = wnn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = wnn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


def _stage(blocks: int, channels: int) -> list[nn.Module]:
    return [ResBlock(channels) for _ in range(blocks)]


class ConvVAE(nn.Module):
    """A convolutional VAE: two stages of residual blocks, each halving (encoder) or doubling (decoder)
    the resolution, a diagonal Gaussian posterior and a Bernoulli likelihood.

    Encoder: conv 3×3 → [res-blocks, conv 3×3 stride 2] × 2 → dense → (μ, log σ), each of size
    ``latent``. Decoder, mirrored: dense → [res-blocks, transposed conv 4×4 stride 2] × 2 → conv 3×3 →
    one logit per pixel. Built from :mod:`wnlib.nn` layers; the ``normal`` parameterization folds them
    into plain ones after the data-dependent init (:func:`build_vae`). ``forward(x)`` is the ELBO of
    each image of a binary batch ``x`` (one draw of z), so :func:`wnlib.data_dependent_init` can
    initialize encoder and decoder in one pass.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int, blocks: int, latent: int) -> None:
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise ValueError(f"image sides must be multiples of 4 (two halvings), got {h}×{w}")
        c1, c2, c3 = channels, 2 * channels, 4 * channels
        self.latent, self.hidden = latent, (c3, h // 4, w // 4)
        self.encoder = nn.Sequential(
            wnn.Conv2d(c, c1, 3, padding=1), *_stage(blocks, c1), wnn.Conv2d(c1, c2, 3, stride=2, padding=1),
            *_stage(blocks, c2), wnn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ELU(), nn.Flatten(),
        )  # fmt: skip
        self.posterior = wnn.Linear(c3 * (h // 4) * (w // 4), 2 * latent)
        self.expand = wnn.Linear(latent, c3 * (h // 4) * (w // 4))
        self.decoder = nn.Sequential(
            *_stage(blocks, c3), wnn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1),
            *_stage(blocks, c2), wnn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ELU(), wnn.Conv2d(c1, c, 3, padding=1),
        )  # fmt: skip

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ) of q(z|x), each (N, latent)."""
        mu, log_sigma = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, log_sigma

    def decode(self, z: Tensor) -> Tensor:
        """The Bernoulli logits of p(x|z), shape (N, C, H, W)."""
        return self.decoder(self.expand(z).view(-1, *self.hidden))

    def elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The ELBO of each image (N,): E_q[log p(x|z)] − KL(q(z|x) ‖ N(0, I)), one draw of z
        (reparameterized, z = μ + σ·ε), the KL in closed form (:func:`gaussian_kl`)."""
        mu, log_sigma = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + log_sigma.exp() * eps
        return bernoulli_log_likelihood(self.decode(z), x) - gaussian_kl(mu, log_sigma)

    def forward(self, x: Tensor) -> Tensor:
        return self.elbo(x)


def gaussian_kl(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row: ½ Σ (μ² + σ² − 1 − 2 log σ), in nats.

    Example:
        >>> gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3))
        tensor([0.])
    """
    return 0.5 * (mu.square() + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum(1)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits) of each binary image, summed over its pixels (nats), shape (N,)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_log_density(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(z; μ, diag σ²), summed over the last axis."""
    return (-0.5 * ((z - mu) / log_sigma.exp()).square() - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_weights(model: ConvVAE, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """log p(x, z_i) − log q(z_i | x) for k draws z_i ~ q(z|x) per image: shape (k, N)."""
    mu, log_sigma = model.encode(x)
    eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + log_sigma.exp() * eps  # (k, N, latent)
    logits = model.decode(z.flatten(0, 1))
    log_px = bernoulli_log_likelihood(logits, x.repeat(k, 1, 1, 1)).view(k, -1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    return log_px + log_pz - gaussian_log_density(z, mu, log_sigma)


def importance_weighted_bound(
    model: ConvVAE, x: Tensor, k: int, generator: torch.Generator | None = None
) -> Tensor:
    """log (1/k) Σ_i p(x, z_i)/q(z_i|x) per image (N,): the k-sample bound of Burda et al. (2016),
    ≤ log p(x) in expectation, growing towards it with k; k = 1 is an unbiased estimate of the ELBO."""
    return torch.logsumexp(log_weights(model, x, k, generator), 0) - math.log(k)


def build_vae(config: VAEConfig, shape: tuple[int, int, int], x_init: Tensor) -> ConvVAE:
    """The VAE of ``config``, initialized: torch's default weights (seeded), then the data-dependent
    init (§3) on the binary batch ``x_init``; for ``normal`` weight norm is then folded into plain
    weights (:func:`wnlib.experiments.models.initialize`)."""
    model = ConvVAE(shape, config.channels, config.blocks, config.latent)
    model.to(x_init.device)
    initialize(model, config.param, x_init, init_scale=config.init_scale)
    return model


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEEpoch:
    """One epoch of a VAE run. ``train_loss``: mean negative ELBO over its minibatches (nats per image);
    ``train_var``: the sample variance of those minibatch values; ``test_elbo``: nats per test image."""

    epoch: int
    train_loss: float
    train_var: float
    test_elbo: float
    seconds: float
    eval_seconds: float


@dataclass
class VAERunResult:
    """A finished VAE run: its configuration, one :class:`VAEEpoch` per epoch, the final
    importance-weighted test bound (NaN when ``iw_samples`` is 0 or the run diverged) and where it ran.
    ``cached`` (not stored) says whether it was read from the cache."""

    config: VAEConfig
    epochs: list[VAEEpoch]
    test_iw_bound: float
    device: str
    wnlib_version: str
    init_seconds: float
    cached: bool = field(default=False, compare=False)

    @property
    def diverged(self) -> bool:
        """Whether the training objective became non-finite (training stopped in that epoch)."""
        return any(not math.isfinite(e.train_loss) for e in self.epochs)

    @property
    def final_test_elbo(self) -> float:
        return self.epochs[-1].test_elbo

    @property
    def train_seconds(self) -> float:
        """Wall time of the run's training passes, initialization and evaluation included."""
        return self.init_seconds + sum(e.seconds + e.eval_seconds for e in self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """The run as a JSON-ready dict (what the cache stores; :meth:`from_dict` reads it back)."""
        d = asdict(self)
        d.pop("cached")
        d["diverged"] = self.diverged
        return d

    @classmethod
    def from_dict(cls, d: Any, cached: bool = False) -> VAERunResult:
        """The run :meth:`to_dict` gave (``null`` numbers as NaN); a ValueError says what is malformed."""
        if not isinstance(d, dict):
            raise ValueError(f"a run is a JSON object, got {type(d).__name__}")
        missing = [
            k
            for k in ("config", "epochs", "test_iw_bound", "device", "wnlib_version", "init_seconds")
            if k not in d
        ]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        if not isinstance(d["config"], dict):
            raise ValueError("field config is not an object")
        try:
            config = VAEConfig(**d["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid config ({e})") from None
        epochs = _epochs_from_list(d["epochs"], VAEEpoch)
        iw = math.nan if d["test_iw_bound"] is None else d["test_iw_bound"]
        for name, value in (("test_iw_bound", iw), ("init_seconds", d["init_seconds"])):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"field {name} is {value!r}, not a number")
        for name in ("device", "wnlib_version"):
            if not isinstance(d[name], str):
                raise ValueError(f"field {name} is {d[name]!r}, not a string")
        result = cls(config, epochs, float(iw), d["device"], d["wnlib_version"], d["init_seconds"], cached)
        if len(epochs) != config.epochs and not result.diverged:
            raise ValueError(f"{len(epochs)} epochs of {config.epochs}, and the run did not diverge")
        return result


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def mean_elbo(model: ConvVAE, x: Tensor, samples: int, seed: int, batch_size: int = 500) -> float:
    """The mean ELBO per test image (nats), each image's averaged over ``samples`` draws of z from a
    generator seeded with ``seed`` (so the evaluation noise does not touch the training's)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        total += sum(model.elbo(xb, generator).sum().item() for _ in range(samples)) / samples
    return total / len(x)


@torch.no_grad()
def mean_iw_bound(model: ConvVAE, x: Tensor, k: int, seed: int, draws_per_chunk: int = 5000) -> float:
    """The mean k-sample importance-weighted bound per test image (nats), computed on chunks of
    max(1, ``draws_per_chunk`` // k) images, so that memory stays bounded for large k."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    chunk = max(1, draws_per_chunk // k)
    total = sum(importance_weighted_bound(model, x[i : i + chunk], k, generator).sum().item()
                for i in range(0, len(x), chunk))  # fmt: skip
    return total / len(x)


def _train_epoch(
    model: ConvVAE, optimizer: torch.optim.Optimizer, x_train: Tensor, config: VAEConfig, gen: torch.Generator
) -> list[float]:
    """One pass over the training set in a fresh random order; returns each minibatch's objective."""
    order = torch.randperm(len(x_train), generator=gen, device=gen.device)  # a CUDA generator on GPU
    steps = len(x_train) // config.batch_size
    if config.max_batches is not None:
        steps = min(steps, config.max_batches)
    losses = []
    for b in range(steps):
        probs = x_train[order[b * config.batch_size : (b + 1) * config.batch_size]]
        xb = torch.bernoulli(probs, generator=gen)  # dynamic binarization
        loss = -model.elbo(xb, gen).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _check_batch_sizes(config: VAEConfig, n_train: int) -> None:
    for name in ("batch_size", "init_batch_size"):
        if getattr(config, name) > n_train:
            raise ValueError(
                f"{name} {getattr(config, name)} is larger than the {n_train} training images of "
                f"{config.dataset}; use at most {n_train}"
            )


def fit_vae(
    config: VAEConfig,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    threads: int | None = None,
) -> tuple[ConvVAE, VAERunResult]:
    """Train ``config`` now (no result cache): (the trained model, its :class:`VAERunResult`)."""
    device = _check_device(device)
    with torch_threads(threads):
        return _fit_vae(config, device, cache_dir)


def _fit_vae(config: VAEConfig, device: torch.device, cache_dir: str | None) -> tuple[ConvVAE, VAERunResult]:
    x_train, x_test = (t.to(device) for t in load_vae_data(config.dataset, cache_dir))
    _check_batch_sizes(config, len(x_train))
    _seed_everything(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    t0 = time.perf_counter()
    init_idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(config.seed))
    x_init = torch.bernoulli(x_train[init_idx[: config.init_batch_size].to(device)], generator=gen)
    model = build_vae(config, tuple(x_train.shape[1:]), x_init).train()
    init_seconds = time.perf_counter() - t0
    optimizer = torch.optim.Adamax(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    epochs: list[VAEEpoch] = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        losses = _train_epoch(model, optimizer, x_train, config, gen)
        t1 = time.perf_counter()
        model.eval()
        elbo = mean_elbo(model, x_test, config.test_samples, seed=config.seed * 1_000 + epoch)
        model.train()
        mean = statistics.fmean(losses)
        var = statistics.variance(losses) if len(losses) > 1 else 0.0
        epochs.append(VAEEpoch(epoch, mean, var, elbo, t1 - t0, time.perf_counter() - t1))
        if not math.isfinite(mean):
            break
    iw = math.nan
    if config.iw_samples and math.isfinite(epochs[-1].train_loss):
        iw = mean_iw_bound(model.eval(), x_test, config.iw_samples, seed=config.seed)
    return model, VAERunResult(config, epochs, iw, device.type, wnlib.__version__, init_seconds)


def vae_cache_key(config: VAEConfig, device: torch.device) -> str:
    """The hash a VAE run is cached under: configuration, device type, wnlib and cache format versions."""
    return _cache._config_key(
        {
            "vae": asdict(config),
            "device": device.type,
            "wnlib": wnlib.__version__,
            "results_version": _cache._RESULTS_VERSION,
        }
    )


def cached_vae_result(
    config: VAEConfig, *, device: str | torch.device | None = None, cache_dir: str | None = None
) -> VAERunResult | None:
    """The stored run of ``config`` on ``device``'s type, or None. An entry that does not validate (not
    a complete run, or another configuration, device type or wnlib version than its key's) is a miss,
    reported by a :class:`~wnlib.experiments.cache.CacheEntryInvalid` warning."""
    resolved = _resolve_device(device)
    key = vae_cache_key(config, resolved)
    stored, problem = _cache._read_result(key, cache_dir)
    if stored is not None:
        try:
            result = VAERunResult.from_dict(stored, cached=True)
            if stored["config"] != asdict(config):
                raise ValueError("its stored config differs from its key's")
            if (result.device, result.wnlib_version) != (resolved.type, wnlib.__version__):
                raise ValueError(f"it ran on {result.device} with wnlib {result.wnlib_version}")
        except ValueError as e:
            problem = f"is not a valid VAE run ({' '.join(str(e).split())})"
        else:
            return result
    if problem is not None:
        path = _cache.result_path(key, cache_dir)
        message = f"cache entry {path} {problem}: treated as a miss, to be retrained and replaced"
        warnings.warn(message, _cache.CacheEntryInvalid, stacklevel=2)
    return None


def train_vae(
    config: VAEConfig,
    *,
    device: str | torch.device | None = None,
    use_cache: bool = True,
    cache_dir: str | None = None,
    threads: int | None = None,
) -> VAERunResult:
    """The run of ``config``: from the cache if stored (and valid), else trained by :func:`fit_vae` and
    stored. ``use_cache=False`` trains anyway (and stores the new result)."""
    resolved = _resolve_device(device)
    if use_cache and (stored := cached_vae_result(config, device=resolved, cache_dir=cache_dir)) is not None:
        return stored
    _, result = fit_vae(config, device=resolved, cache_dir=cache_dir, threads=threads)
    _cache.save_result(vae_cache_key(config, resolved), result.to_dict(), cache_dir)
    return result


def run_vae_grid(
    preset: str = "vae-small",
    params: Iterable[str] = VAE_PARAMS,
    seeds: Iterable[int] | None = None,
    *,
    device: str | None = None,
    use_cache: bool = True,
    cache_dir: str | None = None,
    threads: int | str | None = "preset",
    **overrides: Any,
) -> list[VAERunResult]:
    """Every parameterization × seed of ``preset`` (default seeds: the preset's), seed by seed."""
    if seeds is None:
        seeds = VAE_PRESETS[_check_name(preset, tuple(VAE_PRESETS), "VAE preset")]["seeds"]
    if threads == "preset":
        threads = VAE_PRESETS[preset]["threads"]
    configs = [make_vae_config(preset, p, s, **overrides) for s in seeds for p in params]
    kwargs = {"device": device, "use_cache": use_cache, "cache_dir": cache_dir, "threads": threads}
    return [train_vae(c, **kwargs) for c in configs]


# --------------------------------------------------------------------------------------------------
# Tables and the command line
# --------------------------------------------------------------------------------------------------


def late_variance(result: VAERunResult) -> float:
    """The mean, over the second half of the epochs, of the variance of the minibatch objective.

    Early in training an epoch's minibatch values fall steeply, so their variance measures the trend
    of the epoch; in the second half the trend within an epoch is small and the variance is the noise
    of the objective from one minibatch to the next.
    """
    late = result.epochs[len(result.epochs) // 2 :]
    return statistics.fmean(e.train_var for e in late)


def summarize_vae(results: Iterable[VAERunResult]) -> list[dict[str, Any]]:
    """One row per parameterization, over its runs that did not diverge: final test ELBO (mean, sample
    std), final importance-weighted bound (mean), :func:`late_variance` (mean over seeds); and the
    number of runs and of diverged runs. Statistics over no run are NaN."""
    results = list(results)
    rows = []
    for param in VAE_PARAMS:
        runs = [r for r in results if r.config.param == param]
        if not runs:
            continue
        ok = [r for r in runs if not r.diverged]

        def mean(values: Iterable[float]) -> float:
            values = list(values)
            return statistics.fmean(values) if values else math.nan

        final = [r.final_test_elbo for r in ok]
        rows.append(
            {
                "param": param,
                "seeds": len(runs),
                "diverged": len(runs) - len(ok),
                "test_elbo_mean": mean(final),
                "test_elbo_std": statistics.stdev(final) if len(final) > 1 else math.nan,
                "test_iw_bound_mean": mean(r.test_iw_bound for r in ok),
                "late_variance_mean": mean(late_variance(r) for r in ok),
            }
        )
    return rows


def run_table(result: VAERunResult) -> str:
    """A run's per-epoch table in Markdown."""
    rows = [
        {
            "epoch": e.epoch,
            "train −ELBO": e.train_loss,
            "minibatch var": e.train_var,
            "test ELBO": e.test_elbo,
        }
        for e in result.epochs
    ]
    return markdown_table(rows)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``prog: error: ...``) and exit status 2 (as in
    :mod:`wnlib.experiments.__main__`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The VAE command line's arguments (``sys.argv[1:]`` if ``argv`` is None); a bad one exits with
    status 2."""
    p = _Parser(
        prog="python -m wnlib.experiments.vae",
        description="Train the convolutional VAE of Salimans & Kingma (2016, §5.2), normal vs weight norm.",
    )
    p.add_argument(
        "--preset", default="vae-small", help=f"one of: {', '.join(VAE_PRESETS)} (default vae-small)"
    )
    p.add_argument("--param", nargs="+", default=["all"], help=f"{', '.join(VAE_PARAMS)} or 'all' (default)")
    p.add_argument("--seeds", nargs="+", type=int, help="default: the preset's seeds")
    p.add_argument("--epochs", type=_positive_int, help="override the preset's number of epochs")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--cache-dir", help="cache directory (default $WNLIB_CACHE or ~/.cache/wnlib)")
    p.add_argument("--no-cache", action="store_true", help="train even if a result is cached (and store it)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: the preset's)")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE")
    return p.parse_args(argv)


def _prepare(args: argparse.Namespace) -> tuple[list[VAEConfig], torch.device, int | None]:
    """(the configurations, the device, the threads), every argument checked (ValueError otherwise)."""
    _check_name(args.preset, tuple(VAE_PRESETS), "VAE preset")
    params = list(VAE_PARAMS) if args.param == ["all"] else args.param
    for p in params:
        _check_name(p, VAE_PARAMS, "VAE parameterization")
    seeds = args.seeds if args.seeds is not None else VAE_PRESETS[args.preset]["seeds"]
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    configs = [make_vae_config(args.preset, p, s, **overrides) for s in seeds for p in params]
    device = _check_device(args.device)
    what = "--cache-dir" if args.cache_dir else f"the cache directory (${_cache._ENV_VAR} or ~/.cache/wnlib)"
    _cache._check_writable(_cache.cache_dir(args.cache_dir) / "results", what)
    if args.json:
        if Path(args.json).is_dir():
            raise ValueError(f"--json: {args.json} is a directory; pass a file name")
        _cache._check_writable(Path(args.json).expanduser().parent, "--json")
    threads = args.threads if args.threads is not None else VAE_PRESETS[args.preset]["threads"]
    return configs, device, threads


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: train (or read back) the runs, print each table and a summary. Returns the
    exit status: 0, 2 for a bad argument (one line on stderr), 1 when a data set cannot be fetched."""
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        configs, device, threads = _prepare(args)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    results = []
    try:
        for config in configs:
            kwargs = {"device": device, "use_cache": not args.no_cache, "cache_dir": args.cache_dir}
            result = train_vae(config, threads=threads, **kwargs)
            results.append(result)
            note = " (cached)" if result.cached else ""
            print(f"\n## {config.param}, seed {config.seed}{note}\n\n{run_table(result)}")
    except (DownloadError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print("\n## Summary (nats per test image)\n")
    print(markdown_table(summarize_vae(results)))
    if args.json:
        Path(args.json).expanduser().write_text(_cache.dumps([r.to_dict() for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
