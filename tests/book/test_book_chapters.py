"""Every chapter: the setup cell and the checks note written by tools/chapter_cells.py, and one tag
convention (checks collapsed behind the theme's toggle, never removed from the page)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("chapter_cells", ROOT / "tools" / "chapter_cells.py")
cells = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cells)

CHAPTERS = cells.chapters()
HIDDEN = {"hide-cell", "hide-input"}
ASSERT = re.compile(r"^\s*assert\b", re.M)


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_every_chapter_of_the_toc_is_covered():
    assert len(CHAPTERS) >= 10 and all(p.suffix == ".ipynb" for p in CHAPTERS)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_setup_cell_installs_from_the_configured_repository(path):
    nb = _nb(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert cells.SETUP_TAG in _tags(first), "the first code cell must be the setup cell"
    assert "".join(first["source"]) == cells.setup_source(), "run: python tools/chapter_cells.py"
    url, branch = cells.repository()
    assert f"git+{url}@{branch}" in "".join(first["source"])
    assert all(not o.get("text") for o in first.get("outputs", [])), "installed here: it prints nothing"
    assert sum(cells.SETUP_TAG in _tags(c) for c in nb["cells"]) == 1


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_checks_note_follows_the_title(path):
    nb = _nb(path)
    assert "".join(nb["cells"][0]["source"]).startswith("# ")
    assert "".join(nb["cells"][1]["source"]) == cells.NOTE and cells.NOTE_TAG in _tags(nb["cells"][1])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_checks_are_collapsed_not_removed(path):
    nb = _nb(path)
    removed = [i for i, c in enumerate(nb["cells"]) if any(t.startswith("remove-") for t in _tags(c))]
    assert not removed, f"cells {removed} are removed from the page: tag them hide-cell or hide-input"
    open_checks = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and ASSERT.search("".join(c["source"])) and not HIDDEN & set(_tags(c))
    ]
    assert not open_checks, f"assert cells {open_checks} need hide-cell (no output) or hide-input"


def test_the_note_names_the_toggle_labels_myst_nb_uses():
    # myst-nb's defaults: "Show code cell {type}" with type "content" (hide-cell) or "source"
    # (hide-input); _config.yml does not override them.
    assert "code_prompt_show" not in (ROOT / "_config.yml").read_text()
    assert "Show code cell content" in cells.NOTE and "Show code cell source" in cells.NOTE
