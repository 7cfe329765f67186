"""Widgets that work without a kernel: every frame drawn at execution time, switched in the browser.

A chapter's widget is a set of controls (sliders, dropdowns, toggle buttons) over a small grid of
values, and one figure per point of the grid. :func:`frame_widget` draws every figure when the cell
runs, stores each as a PNG in an ``ipywidgets.Image``, and nests them in ``ipywidgets.Stack``s, one
level per control. Each control's ``index`` is ``jslink``-ed to the ``selected_index`` of the stacks
of its level, so moving a control switches frames in the browser: in the published HTML, where there
is no kernel (the widget state, frames included, is saved in the notebook), as in a live notebook.
Nothing is recomputed on a move.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import PIL.Image
from matplotlib.figure import Figure

# The controls frame_widget accepts: any of ipywidgets' single-selection widgets.
Selection = widgets.SelectionSlider | widgets.Dropdown | widgets.ToggleButtons

__all__ = ["MAX_FRAMES", "control", "frame_widget", "png_bytes"]

#: The most frames one widget may hold (every frame is a PNG saved in the notebook).
MAX_FRAMES = 64


def png_bytes(fig: Figure, *, dpi: int = 100, colors: int = 64) -> bytes:
    """``fig`` as PNG bytes with a palette of ``colors`` colours; the figure is closed.

    Every frame of a widget is saved in the notebook, so frames are palette PNGs: a line plot has few
    colours, and 64 keep its anti-aliased edges while making the file about 4x smaller than RGBA. At
    the default 100 dpi a figure of the book's width (7 in) is about as wide as the page's column."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    image = PIL.Image.open(buffer).convert("RGB").quantize(colors=colors, dither=PIL.Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()


def control(
    kind: str, options: Sequence[Any], value: Any, description: str, *, labels: Sequence[str] | None = None
) -> Selection:
    """A selection control over ``options`` (``kind``: ``"slider"``, ``"dropdown"`` or ``"toggle"``).

    ``labels`` are the texts shown for the options (default ``str`` of each)."""
    classes = {
        "slider": widgets.SelectionSlider,
        "dropdown": widgets.Dropdown,
        "toggle": widgets.ToggleButtons,
    }
    if kind not in classes:
        raise ValueError(f"control kind must be one of {sorted(classes)}, got {kind!r}")
    if value not in options:
        raise ValueError(
            f"initial value {value!r} of {description!r} is not among its options {list(options)}"
        )
    shown = [str(o) for o in options] if labels is None else list(labels)
    if len(shown) != len(options):
        raise ValueError(f"{description!r}: {len(shown)} labels for {len(options)} options")
    style = {"description_width": "initial"}
    return classes[kind](
        options=list(zip(shown, options, strict=True)), value=value, description=description, style=style
    )


def frame_widget(
    controls: Mapping[str, Selection],
    draw: Callable[..., Figure],
    *,
    dpi: int = 100,
) -> widgets.VBox:
    """The controls above one frame per combination of their options, switched client-side.

    ``controls`` maps each keyword of ``draw`` to its control (see :func:`control`); ``draw(**values)``
    returns the figure for one combination. All ``prod(len(options))`` figures are drawn now.

    Raises:
        ValueError: no control, or more than :data:`MAX_FRAMES` frames.
    """
    if not controls:
        raise ValueError("frame_widget needs at least one control")
    names = list(controls)
    options = [[value for _, value in controls[n].options] for n in names]
    count = 1
    for values in options:
        count *= len(values)
    if count > MAX_FRAMES:
        sizes = " × ".join(str(len(v)) for v in options)
        raise ValueError(f"{sizes} = {count} frames is more than MAX_FRAMES = {MAX_FRAMES}; use fewer values")
    frames = {}
    for combo in itertools.product(*(range(len(v)) for v in options)):
        values = {n: options[level][i] for level, (n, i) in enumerate(zip(names, combo, strict=True))}
        frames[combo] = _frame(png_bytes(draw(**values), dpi=dpi), combo)
    for level, name in enumerate(names):
        controls[name].add_class(f"wn-control-{level}")
    view = _nest(names, controls, frames, ())
    row = widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"})
    box = widgets.VBox([row, view])
    box.add_class("wn-frames")
    return box


def _frame(png: bytes, combo: tuple[int, ...]) -> widgets.Image:
    """One frame, tagged with its option indices (``wn-frame-1-0``) so a browser test can tell which
    frame is shown."""
    image = widgets.Image(value=png, format="png", layout={"max_width": "100%", "height": "auto"})
    image.add_class("wn-frame-" + "-".join(str(i) for i in combo))
    return image


def _nest(
    names: list[str], controls: Mapping[str, Any], frames: dict, prefix: tuple[int, ...]
) -> widgets.Widget:
    """The view below the option indices ``prefix``: a frame, or a Stack of deeper views."""
    level = len(prefix)
    if level == len(names):
        return frames[prefix]
    count = len(controls[names[level]].options)
    children = [_nest(names, controls, frames, (*prefix, i)) for i in range(count)]
    stack = widgets.Stack(children, selected_index=controls[names[level]].index)
    widgets.jslink((controls[names[level]], "index"), (stack, "selected_index"))
    return stack
