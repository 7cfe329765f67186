"""One look for every figure in the book: colours per parameterization, sizes, and axis helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib as mpl
import matplotlib.pyplot as plt

# The same colour for a parameterization in every chapter (colour-blind safe, Okabe–Ito).
PALETTE: dict[str, str] = {
    "normal": "#000000",
    "weightnorm": "#0072B2",
    "weightnorm_init": "#56B4E9",
    "batchnorm": "#D55E00",
    "meanonly_bn": "#E69F00",
    "weightnorm_meanonly": "#009E73",
}
LABELS: dict[str, str] = {
    "normal": "normal parameterization",
    "weightnorm": "weight norm",
    "weightnorm_init": "weight norm + data-dependent init",
    "batchnorm": "batch norm",
    "meanonly_bn": "mean-only batch norm",
    "weightnorm_meanonly": "weight norm + mean-only BN",
}
ACCENT = "#CC79A7"  # for a highlighted quantity that is not a parameterization (e.g. w, the gradient)
WIDTH = 7.5  # inches: the book's text width at the default zoom
RC = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "figure.constrained_layout.use": True,
    "svg.hashsalt": "wnlib",  # deterministic SVG ids, should a figure be saved as SVG
}


def use_book_style() -> None:
    """Apply the book's matplotlib settings globally (call once at the top of a chapter)."""
    mpl.rcParams.update(RC)


@contextmanager
def book_style() -> Iterator[None]:
    """The book's matplotlib settings, only inside the ``with`` block."""
    with mpl.rc_context(RC):
        yield


def figure(ncols: int = 1, nrows: int = 1, height: float = 3.0, **kw) -> tuple[plt.Figure, object]:
    """A figure at the book's width with ``nrows × ncols`` axes."""
    with book_style():
        return plt.subplots(nrows, ncols, figsize=(WIDTH, height * nrows), **kw)
