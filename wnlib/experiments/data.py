"""The data sets of the experiments, with fixed splits and the paper's preprocessing.

Two need no download and are what the tests and the book's notebooks use:

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes), split 80/20 by a
  fixed permutation and standardized with the training set's mean and standard deviation;
- ``mnist1d``: MNIST-1D (Greydanus 2020), generated offline by ``mnist1d.data.make_dataset`` with the
  package's default arguments (``get_dataset_args()``: 5000 sequences of length 40, seed 42, 80/20 split),
  standardized with the training set's statistics.

Two are downloaded on request into ``<cache>/data`` (see :mod:`wnlib.experiments.cache`) and verified
against SHA-256 checksums stored in this module; a mismatch is an error:

- ``mnist``: the four IDX files, scaled to [0, 1] and standardized;
- ``cifar10``: the python version of CIFAR-10, preprocessed as in the paper's code (Salimans & Kingma
  2016, §5.1: "the only preprocessing is ZCA whitening"): x ← (x − 127.5)/128, then :class:`ZCA`
  fitted on the training set.

Every data set is channel-first: (N, C, L) or (N, C, H, W); labels are int64 class indices.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import random
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wnlib._extras import require
from wnlib.experiments.cache import _ENV_VAR, cache_dir

__all__ = [
    "DATASETS",
    "INPUT_SHAPES",
    "REMOTE_FILES",
    "ZCA",
    "ChecksumError",
    "Dataset",
    "DownloadError",
    "RemoteFile",
    "fetch",
    "load_dataset",
    "standardize",
    "verify",
]

#: The data sets :func:`load_dataset` knows.
DATASETS = ("digits", "mnist1d", "mnist", "cifar10")
_DOWNLOADED = ("mnist", "cifar10")
#: The shape of one example of each data set, channel first (known without loading it).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "digits": (1, 8, 8),
    "mnist1d": (1, 40),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


class ChecksumError(RuntimeError):
    """A downloaded file does not have the SHA-256 (or MD5) it must have."""


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says how to get it by hand."""


# --------------------------------------------------------------------------------------------------
# The data set container
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A classification data set with a fixed train/test split, as float32 and int64 tensors."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, channel first, (C, L) or (C, H, W)."""
        return tuple(self.x_train.shape[1:])

    def validation_split(self, fraction: float = 0.2) -> Dataset:
        """The training set split in two: its last ``fraction`` becomes the test set.

        For choosing hyperparameters without looking at the test set.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        n = len(self.y_train) - round(fraction * len(self.y_train))
        return Dataset(
            f"{self.name}-validation",
            self.x_train[:n],
            self.y_train[:n],
            self.x_train[n:],
            self.y_train[n:],
            self.num_classes,
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.num_classes})"
        )


def _check_name(name: str, valid: Sequence[str], what: str) -> str:
    """``name`` if it is one of ``valid``; otherwise a ValueError that lists the valid names."""
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid {what}s: {', '.join(valid)}")
    return name


def load_dataset(
    name: str, *, split: str = "test", cache: str | os.PathLike[str] | None = None, download: bool = True
) -> Dataset:
    """Load data set ``name`` (one of :data:`~wnlib.experiments.data.DATASETS`).

    Args:
        name: ``digits``, ``mnist1d``, ``mnist`` or ``cifar10``.
        split: ``"test"`` (the fixed train/test split) or ``"validation"`` (the training set split
            80/20, for tuning hyperparameters without touching the test set).
        cache: the cache directory (default: ``$WNLIB_CACHE`` or ``~/.cache/wnlib``); only the
            downloaded data sets use it.
        download: whether ``mnist``/``cifar10`` may be downloaded when missing.
    """
    _check_name(name, DATASETS, "dataset")
    _check_name(split, ("test", "validation"), "split")
    if name in _DOWNLOADED:
        arrays = _LOADERS[name](_data_dir(cache), download)
    else:
        arrays = _LOADERS[name]()
    x_train, y_train, x_test, y_test, num_classes = arrays
    data = Dataset(
        name,
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        num_classes,
    )
    return data.validation_split() if split == "validation" else data


_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets shifted and scaled by the training set's overall mean and standard deviation."""
    mean, std = x_train.mean(), x_train.std()
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Offline data sets
# --------------------------------------------------------------------------------------------------


@functools.cache
def _digits() -> _Arrays:
    load_digits = require("sklearn.datasets", "the digits data set").load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None]  # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    n_train = int(0.8 * len(y))
    train, test = order[:n_train], order[n_train:]
    x_train, x_test = standardize(x[train], x[test])
    return x_train, y[train], x_test, y[test], 10


@functools.cache
def _mnist1d() -> _Arrays:
    mnist1d_data = require("mnist1d.data", "the MNIST-1D data set")
    get_dataset_args, make_dataset = mnist1d_data.get_dataset_args, mnist1d_data.make_dataset

    # make_dataset seeds Python's and NumPy's global generators (args.seed = 42); restore them after.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x_train, x_test = standardize(data["x"][:, None], data["x_test"][:, None])  # (N, 1, 40)
    return x_train, data["y"].astype(np.int64), x_test, data["y_test"].astype(np.int64), 10


# --------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its name in the cache, where to get it, and the checksums it must match.

    ``sha256`` is required. ``md5`` is checked as well where the publisher states one (CIFAR-10's
    site publishes the MD5 of its archive; the SHA-256 values here are the ones torchvision's dataset
    code and others record for the same files).
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str
    md5: str | None = None


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: The files of each downloaded data set, with their mirrors and SHA-256 digests.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": tuple(
        RemoteFile(name, tuple(m + name for m in _MNIST_MIRRORS), sha)
        for name, sha in (
            (
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        )
    ),
    "cifar10": (
        RemoteFile(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            md5="c58f30108f718f92721af3b95e74349a",  # published on https://www.cs.toronto.edu/~kriz/cifar.html
        ),
    ),
}


def _data_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Where downloaded data sets are kept: ``<cache>/data``."""
    return cache_dir(cache) / "data"


def _file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has ``remote``'s SHA-256 (and MD5, where known)."""
    checks = [("sha256", remote.sha256)] + ([("md5", remote.md5)] if remote.md5 else [])
    for algorithm, expected in checks:
        actual = _file_digest(path, algorithm)
        if actual != expected:
            raise ChecksumError(
                f"{path} has {algorithm.upper()} {actual}, but {remote.filename} must have {expected}. "
                f"The file is corrupt or not the expected one: delete it and download it again "
                f"from {remote.urls[0]}"
            )


def _download(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` (via a temporary file, so a broken transfer leaves nothing)."""
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)


def fetch(remote: RemoteFile, directory: Path, download: bool = True) -> Path:
    """The verified local copy of ``remote`` in ``directory``, downloading it first if missing.

    Raises :class:`DownloadError` (saying which URL to fetch by hand and where to put the file) when the
    file is missing and cannot be downloaded, and :class:`ChecksumError` when its checksum is wrong.
    """
    target = directory / remote.filename
    if not target.exists():
        how = (
            f"Download {remote.filename} by hand from {remote.urls[0]} and put it at {target} "
            f"(SHA-256 {remote.sha256}). The cache directory is set by --cache-dir or the cache argument, "
            f"else ${_ENV_VAR}, else ~/.cache/wnlib."
        )
        if not download:
            raise DownloadError(f"{target} is missing and download=False. {how}")
        directory.mkdir(parents=True, exist_ok=True)
        errors = []
        for url in remote.urls:
            try:
                _download(url, target)
                break
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                errors.append(f"{url}: {e}")
        else:
            raise DownloadError(f"could not download {remote.filename} ({'; '.join(errors)}). {how}")
    verify(target, remote)
    return target


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): big-endian magic number, dimensions, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.cache
def _mnist(directory: Path, download: bool) -> _Arrays:
    paths = [fetch(r, directory / "mnist", download) for r in REMOTE_FILES["mnist"]]
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    x_train, x_test = standardize(x_train[:, None] / 255.0, x_test[:, None] / 255.0)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), 10


@functools.cache
def _cifar10(directory: Path, download: bool) -> _Arrays:
    archive = fetch(REMOTE_FILES["cifar10"][0], directory / "cifar10", download)
    batches: dict[str, dict] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name.startswith(("data_batch_", "test_batch")):
                batches[name] = pickle.load(tar.extractfile(member), encoding="latin1")

    def stack(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([batches[n]["data"] for n in names]).reshape(-1, 3, 32, 32)
        y = np.concatenate([batches[n]["labels"] for n in names]).astype(np.int64)
        return (x.astype(np.float32) - 127.5) / 128.0, y

    x_train, y_train = stack([f"data_batch_{i}" for i in range(1, 6)])
    x_test, y_test = stack(["test_batch"])
    zca = ZCA().fit(x_train)
    return zca.apply(x_train), y_train, zca.apply(x_test), y_test, 10


_LOADERS = {"digits": _digits, "mnist1d": _mnist1d, "mnist": _mnist, "cifar10": _cifar10}


# --------------------------------------------------------------------------------------------------
# ZCA whitening
# --------------------------------------------------------------------------------------------------


class ZCA:
    """ZCA whitening: x ↦ (x − m) U diag(1/√(λ + ε)) Uᵀ, the paper's only CIFAR-10 preprocessing (§5.1).

    With the training set's covariance Σ = U diag(λ) Uᵀ, the whitened data has covariance
    Σ (Σ + εI)⁻¹ ≈ I, and among all whitening transforms ZCA is the one that stays closest to the input
    (it is symmetric), so whitened images still look like images, with edges emphasized. ``ε`` (the
    paper's code uses 1e-5) keeps directions of near-zero variance from being blown up.

    Example (whitened training data has covariance ≈ I):
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> mix = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.5]])
        >>> x_train = rng.normal(size=(2000, 3)) @ mix  # correlated features
        >>> x_white = ZCA().fit(x_train).apply(x_train)
        >>> bool(np.allclose(np.cov(x_white, rowvar=False, bias=True), np.eye(3), atol=1e-3))
        True
    """

    def __init__(self, regularization: float = 1e-5) -> None:
        self.regularization = regularization
        self.mean: np.ndarray | None = None
        self.matrix: np.ndarray | None = None
        self.inverse: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> ZCA:
        """Estimate the mean and the whitening matrix from ``x`` of shape (N, ...) (N examples)."""
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.mean = flat.mean(axis=0)
        centered = flat - self.mean
        sigma = centered.T @ centered / len(flat)
        eigenvalues, u = np.linalg.eigh(sigma)  # Σ is symmetric: eigh is its SVD
        eigenvalues = np.clip(eigenvalues, 0.0, None) + self.regularization
        self.matrix = (u / np.sqrt(eigenvalues)) @ u.T
        self.inverse = (u * np.sqrt(eigenvalues)) @ u.T
        return self

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Whiten ``x`` (same trailing shape as the data fitted); returns float32 of x's shape."""
        if self.matrix is None or self.mean is None:
            raise RuntimeError("ZCA.apply called before ZCA.fit")
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if flat.shape[1] != self.mean.shape[0]:
            raise ValueError(f"ZCA was fitted on {self.mean.shape[0]} features, got {flat.shape[1]}")
        return ((flat - self.mean) @ self.matrix).astype(np.float32).reshape(np.shape(x))

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply` (for showing whitened images next to the originals)."""
        if self.inverse is None or self.mean is None:
            raise RuntimeError("ZCA.invert called before ZCA.fit")
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return (flat @ self.inverse + self.mean).astype(np.float32).reshape(np.shape(x))
