"""wnbook.widgets: every frame drawn once, nested Stacks jslinked to the controls."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from wnbook import widgets as ww


def _draw(calls):
    def draw(a, b):
        calls.append((a, b))
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [0, a * b])
        return fig

    return draw


def _frame_shown(box: widgets.VBox) -> widgets.Image:
    view = box.children[1]
    while isinstance(view, widgets.Stack):
        view = view.children[view.selected_index]
    return view


def _links(box: widgets.VBox) -> list:
    return [
        w
        for w in widgets.Widget.widgets.values()
        if isinstance(w, widgets.widgets.widget_link.Link) and w.source[0] in box.children[0].children
    ]


def test_one_frame_per_combination_tagged_with_its_indices():
    calls = []
    a = ww.control("slider", [1, 2, 3], 2, "a")
    b = ww.control("dropdown", [10, 20], 20, "b", labels=["ten", "twenty"])
    box = ww.frame_widget({"a": a, "b": b}, _draw(calls))
    assert sorted(calls) == [(x, y) for x in (1, 2, 3) for y in (10, 20)]
    shown = _frame_shown(box)
    assert shown._dom_classes == ("wn-frame-1-1",)  # a=2 (index 1), b=20 (index 1)
    assert bytes(shown.value[:4]) == b"\x89PNG"
    assert "wn-frames" in box._dom_classes
    assert a._dom_classes == ("wn-control-0",) and b._dom_classes == ("wn-control-1",)
    assert [label for label, _ in b.options] == ["ten", "twenty"]


def test_controls_are_jslinked_to_every_stack_of_their_level():
    a = ww.control("toggle", ["x", "y"], "x", "a")
    b = ww.control("slider", [1, 2, 3], 1, "b")
    box = ww.frame_widget({"a": a, "b": b}, lambda a, b: plt.subplots()[0])
    links = _links(box)
    top = box.children[1]
    assert {(link.source[0].description, link.target[1]) for link in links} == {
        ("a", "selected_index"),
        ("b", "selected_index"),
    }
    assert sum(link.source[0] is a for link in links) == 1 and sum(link.source[0] is b for link in links) == 2
    assert {id(link.target[0]) for link in links if link.source[0] is b} == {id(s) for s in top.children}
    # A move in a kernel: the server-side Stack does not follow (jslink is browser-side), but the
    # frame for every index exists under the stack of that index.
    for i, stack in enumerate(top.children):
        assert [f._dom_classes for f in stack.children] == [(f"wn-frame-{i}-{j}",) for j in range(3)]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ww.control("knob", [1], 1, "k"), "control kind"),
        (lambda: ww.control("slider", [1, 2], 3, "k"), "not among its options"),
        (lambda: ww.control("slider", [1, 2], 1, "k", labels=["one"]), "1 labels for 2 options"),
        (lambda: ww.frame_widget({}, lambda: None), "at least one control"),
        (
            lambda: ww.frame_widget(
                {
                    "a": ww.control("slider", list(range(9)), 0, "a"),
                    "b": ww.control("slider", list(range(8)), 0, "b"),
                },
                lambda a, b: None,
            ),
            "72 frames",
        ),
    ],
)
def test_bad_input_is_refused_before_drawing(make, match):
    with pytest.raises(ValueError, match=match):
        make()
