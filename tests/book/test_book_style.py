"""The book has one palette: the library's colours and names of the parameterizations."""

from __future__ import annotations

from wnbook import style
from wnlib import experiments as ex


def test_palette_and_labels_match_the_library():
    assert style.PALETTE == ex.PALETTE
    assert style.LABELS == {p: ex.PARAMETERIZATIONS[p].label for p in ex.PARAMETERIZATIONS}
