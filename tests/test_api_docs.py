"""The book's API reference (book/api/) covers every public name of wnlib: checked from the sources.

Each page is one ``automodule``, and autodoc (configured in _config.yml) documents a module's
``__all__``, or without one the public names it defines, but only those it finds documentation for:
a function or class without a docstring, or a constant without a docstring or ``#:`` comment, is left
out without a warning. This test makes that loss visible without building the book: every public
module has a page, and every public name has what autodoc needs to give it an entry (a re-exported
constant, which autodoc cannot document under the package's name, must be documented where it is
defined).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from sphinx.pycode import ModuleAnalyzer

import wnlib

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "book" / "api"
# Modules that are not library API (none since the chapters' helpers moved to the book's wnbook).
NOT_API: tuple[str, ...] = ()
DIRECTIVE = re.compile(r"^\.\. (auto\w+|py:\w+):: (\S+)((?:\n   :.*)*)", re.M)


def _public_modules() -> list[str]:
    names = ["wnlib"]
    for info in pkgutil.walk_packages(wnlib.__path__, "wnlib."):
        parts = info.name.split(".")[1:]
        if any(p.startswith("_") and p != "__main__" for p in parts) or info.name.startswith(NOT_API):
            continue
        names.append(info.name)
    return names


def _directives() -> dict[str, list[tuple[str, str]]]:
    """Documented name -> [(directive, options text)] over every page of book/api/."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in sorted(API.glob("*.md")):
        for directive, name, options in DIRECTIVE.findall(page.read_text()):
            found.setdefault(name, []).append((directive, options))
    return found


def _defined_names(module: ModuleType) -> list[str]:
    """Public names a module without __all__ defines at top level (what autodoc would document)."""
    tree = ast.parse(inspect.getsource(module))
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    return list(names) if names is not None else _defined_names(module)


def _attr_docs(modname: str) -> set[str]:
    """Module-level names with a docstring or ``#:`` comment, as autodoc's analyzer reads them."""
    return {name for scope, name in ModuleAnalyzer.for_module(modname).find_attr_docs() if scope == ""}


def _own_docstring(obj: object) -> str | None:
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__")
    return getattr(obj, "__doc__", None)


MODULES = _public_modules()


def test_config_documents_members():
    """automodule documents members (the pages rely on it) and does not inherit torch's docstrings."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]
    assert "sphinx.ext.autodoc" in config["extra_extensions"]
    assert "sphinx.ext.napoleon" in config["extra_extensions"]
    assert config["config"]["autodoc_default_options"]["members"] is True
    toc = (ROOT / "_toc.yml").read_text()
    for page in API.glob("*.md"):
        assert f"file: book/api/{page.stem}\n" in toc, f"{page.name} is not in _toc.yml"


def test_every_public_module_has_a_page():
    directives = _directives()
    for modname in MODULES:
        assert any(
            d == "automodule" and ":exclude-members:" not in o and ":no-members:" not in o
            for d, o in directives.get(modname, [])
        ), f"{modname} has no `.. automodule:: {modname}` (with all its members) in book/api/"
    documented = {n for n, uses in directives.items() if any(d == "automodule" for d, _ in uses)}
    assert documented <= set(MODULES), f"pages for modules that are not public: {documented - set(MODULES)}"


@pytest.mark.parametrize("modname", MODULES)
def test_every_public_name_gets_an_entry(modname):
    module = importlib.import_module(modname)
    directives = _directives()
    missing = []
    for name in _public_names(module):
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            assert obj.__name__ in MODULES, f"{modname}.{name}: module {obj.__name__} has no page"
        elif inspect.isclass(obj) or inspect.isroutine(obj):
            if not (_own_docstring(obj) or "").strip():
                missing.append(f"{name} (no docstring)")
        else:
            # Data: documented on the page of a module that defines it with a docstring or `#:`, or
            # described by hand on a page (`.. py:data:: wnlib.NAME`; `autodata` of a re-exported
            # constant would show its type's docstring, e.g. float's, so it does not count).
            homes = [m for m in MODULES if name in _attr_docs(m)]
            homes = [m for m in homes if getattr(importlib.import_module(m), name, None) is obj]
            by_hand = "py:data" in [d for d, _ in directives.get(f"{modname}.{name}", [])]
            if not homes and not by_hand:
                missing.append(f"{name} (constant without a docstring or #: comment where it is defined)")
    assert not missing, f"{modname}: autodoc would leave out " + ", ".join(missing)


def test_top_level_api_has_its_own_entries():
    """wnlib.weight_norm and wnlib.data_dependent_init are documented under those names."""
    assert "automodule" in [d for d, _ in _directives()["wnlib"]]
    for name in ("weight_norm", "data_dependent_init"):
        assert name in wnlib.__all__
        assert _own_docstring(getattr(wnlib, name))


def test_hand_written_constant_entries_state_the_real_value():
    """A ``.. py:data::`` written by hand (a re-exported constant autodoc cannot document) gives the
    constant's actual value."""
    import importlib

    entries = re.compile(r"^\.\. py:data:: (\S+)\n   :value: (\S+)", re.M)
    found = 0
    for page in sorted(API.glob("*.md")):
        for target, value in entries.findall(page.read_text()):
            module, name = target.rsplit(".", 1)
            assert repr(getattr(importlib.import_module(module), name)) == value, (page.name, target)
            found += 1
    assert found >= 3  # wnlib, wnlib.functional and wnlib.reference re-export DEFAULT_EPS
