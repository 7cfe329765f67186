"""One look for every figure in the book: colours per parameterization, sizes, and axis helpers.

Call :func:`use_book_style` once at the top of a chapter; :func:`figure` makes a figure at the book's
text width.
"""

from __future__ import annotations

__all__ = ["ACCENT", "LABELS", "PALETTE", "RC", "WIDTH", "book_style", "figure", "use_book_style"]

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib as mpl
import matplotlib.pyplot as plt

from wnlib.experiments.params import PALETTE as PARAMETERIZATION_COLORS
from wnlib.experiments.params import PARAMETERIZATIONS

# The same colour and name for a parameterization in every chapter: the library's own
# (:data:`wnlib.experiments.PALETTE`, Okabe–Ito, colour-blind safe), so the book has one palette.
PALETTE: dict[str, str] = dict(PARAMETERIZATION_COLORS)
LABELS: dict[str, str] = {name: p.label for name, p in PARAMETERIZATIONS.items()}
ACCENT = "#CC79A7"  # for a highlighted quantity that is not a parameterization (e.g. w, the gradient)
# Inches. With 11 pt text a figure this wide still reads at phone width (a 358 px column shows 11 pt
# at about 8 px); figures are stored at twice their display resolution (see use_book_style).
WIDTH = 7.0
RC = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 11,
    "axes.titlesize": 11.5,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "figure.constrained_layout.use": True,
    "svg.hashsalt": "wnlib",  # deterministic SVG ids, should a figure be saved as SVG
}


def use_book_style() -> None:
    """Apply the book's matplotlib settings globally (call once at the top of a chapter).

    In IPython the inline backend also stores figures as PNG at twice their display size
    ("retina"), so they stay sharp on a phone or a zoomed page."""
    mpl.rcParams.update(RC)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # no IPython: plain matplotlib, nothing inline to configure
        return
    set_matplotlib_formats("retina")


@contextmanager
def book_style() -> Iterator[None]:
    """The book's matplotlib settings, only inside the ``with`` block."""
    with mpl.rc_context(RC):
        yield


def figure(ncols: int = 1, nrows: int = 1, height: float = 3.0, **kw) -> tuple[plt.Figure, object]:
    """A figure at the book's width with ``nrows × ncols`` axes."""
    with book_style():
        return plt.subplots(nrows, ncols, figsize=(WIDTH, height * nrows), **kw)
