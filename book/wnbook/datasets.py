"""The book's one loader of scikit-learn's 8×8 digits (1,797 images, 10 classes).

:func:`digits` returns the library's data set (:func:`wnlib.experiments.load_dataset`): a fixed 80/20
split, standardized with the training set's mean and standard deviation, as the Initialization
chapter and the experiments use it. ``digits(whole=True)`` is the Theory chapter's variant: all 1,797
images as one training set, standardized by their own overall mean and standard deviation (with the
library's :func:`wnlib.experiments.data.standardize`). Theory studies optimization, not
generalization: it trains on every image, reports the loss on every image and compares batch norm with
weight norm over the whole set, so it has no test set whose statistics should be kept out.

:func:`raw_digits` gives the unprocessed pixels (0–16) in scikit-learn's order, for chapters that need
another representation (the 4-bit integer codes of the Quantization chapter, pixels in [0, 1] with
one-hot targets in the After chapter); every use of the digits goes through this module.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from wnlib.experiments.data import Dataset, load_dataset, standardize

__all__ = ["digit_rows", "digits", "raw_digits"]


@functools.cache
def _bunch() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits in scikit-learn's order: pixels (1797, 64) float64 in 0–16, labels (1797,) int.

    Fresh copies on every call, so a caller may modify them.
    """
    x, y = _bunch()
    return x.copy(), y.copy()


@functools.cache
def digits(whole: bool = False) -> Dataset:
    """The digits as a :class:`wnlib.experiments.data.Dataset` of (N, 1, 8, 8) float32 images.

    ``whole=False``: the library's fixed split (1,437 training and 360 test images, shuffled once) and
    standardization by the training set's statistics. ``whole=True``: every image, in scikit-learn's
    order, as the training set (the test set is empty), standardized by the overall mean and standard
    deviation of all of them (see the module docstring for why the Theory chapter uses it).
    """
    if not whole:
        return load_dataset("digits")
    x, y = raw_digits()
    x, _ = standardize(x, x)
    images = torch.tensor(x).reshape(-1, 1, 8, 8)  # a copy in torch's own (aligned) memory
    labels = torch.tensor(y.astype(np.int64))
    return Dataset("digits-whole", images, labels, images[:0], labels[:0], 10)


def digit_rows(whole: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images of :func:`digits` as (N, 64) rows, and their labels."""
    data = digits(whole)
    return data.x_train.flatten(1), data.y_train
