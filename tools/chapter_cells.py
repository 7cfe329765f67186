"""The two cells every chapter starts with, written from one template: `python tools/chapter_cells.py`.

1. **Setup** (the first code cell): on Colab, Binder or any environment without the book's package,
   it installs wnlib and wnbook from the repository named in ``_config.yml`` (``repository.url``,
   ``repository.branch``: the one place the address is set); where they are importable it does nothing.
2. **How to see the checks** (a note right after the chapter's title): every claim of the page is
   asserted by a cell collapsed behind the theme's toggle.

``tests/book/test_book_chapters.py`` fails when a chapter's cells differ from what this script writes,
so after changing the repository address run the script and commit the notebooks (their outputs are
unchanged: the setup cell prints nothing where the packages are installed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETUP_TAG = "chapter-setup"
NOTE_TAG = "checks-note"

SETUP = '''\
# Setup: installs wnlib and the book's package (wnbook) where they are missing, e.g. on Colab.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("wnbook") is None:
    REPO = "git+{url}@{branch}"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           f"wnlib[experiments] @ {{REPO}}", f"wnbook @ {{REPO}}#subdirectory=book"])'''

NOTE = """\
```{admonition} Every claim on this page is checked
:class: tip
The cells that assert the page's claims run with it, here and in the book's tests, and fail if a claim
stops holding. In the web page they are collapsed: press **Show code cell content** (or
**Show code cell source**) below a paragraph to open the check behind it. In a notebook they are
ordinary cells.
```"""


def repository() -> tuple[str, str]:
    """``repository.url`` and ``repository.branch`` of ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"], config["repository"].get("branch", "main")


def setup_source() -> str:
    url, branch = repository()
    return SETUP.format(url=url, branch=branch)


def chapters() -> list[Path]:
    """The chapter notebooks of ``_toc.yml``, in order."""
    toc = (ROOT / "_toc.yml").read_text()
    names = [line.split("file:")[1].strip() for line in toc.splitlines() if "file: book/" in line]
    return [ROOT / f"{n}.ipynb" for n in names if (ROOT / f"{n}.ipynb").exists()]


def _cell(kind: str, source: str, tags: list[str]) -> dict:
    # The cell's id (nbformat 4.5) is its tag: unique, and the same in every chapter.
    cell = {"cell_type": kind, "id": tags[0], "metadata": {"tags": tags}, "source": source.splitlines(True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _tagged(nb: dict, tag: str) -> int | None:
    hits = [i for i, c in enumerate(nb["cells"]) if tag in c.get("metadata", {}).get("tags", [])]
    if len(hits) > 1:
        raise ValueError(f"{len(hits)} cells tagged {tag!r}; expected at most one")
    return hits[0] if hits else None


def sync(path: Path) -> bool:
    """Write the note (after the first cell, the title) and the setup cell (before the first code
    cell) into the notebook at ``path``; True if it changed."""
    nb = json.loads(path.read_text())
    before = json.dumps(nb)
    for tag, kind, source, extra in (
        (NOTE_TAG, "markdown", NOTE, []),
        (SETUP_TAG, "code", setup_source(), ["hide-cell"]),
    ):
        at = _tagged(nb, tag)
        if at is None:
            cell = _cell(kind, source, [tag, *extra])
            if kind == "markdown":
                nb["cells"].insert(1, cell)
            else:
                first_code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
                nb["cells"].insert(first_code, cell)
        else:
            nb["cells"][at]["source"] = source.splitlines(True)
    if json.dumps(nb) == before:
        return False
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main() -> int:
    for path in chapters():
        print(f"{path.relative_to(ROOT)}: {'updated' if sync(path) else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
