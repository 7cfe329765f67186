"""Two adjustments to autodoc for the API reference (book/api/), each for a case it gets wrong here.

- Private base classes: ``wnlib.nn.Conv2d`` derives from ``wnlib.nn._Conv``, which is not documented
  (it is not public), so "Bases: wnlib.nn._Conv" would be a dangling reference. A private base is shown
  as the bases it stands for (here ``wnlib.nn.WeightNormLayer`` and ``torch.nn.Conv2d``).
- Type aliases in signatures: ``mode: Mode`` is a reference of the class role to ``wnlib.a2q.Mode``,
  which autodoc documents as data (``Mode = Literal[...]``), and Python's domain does not let the class
  role find data. The reference is resolved to that entry when it exists; otherwise it stays unresolved
  (and fails the nitpicky build).
- Postponed annotations of a class's ``__init__``: under ``from __future__ import annotations`` autodoc
  resolves a function's string annotations but leaves a class's constructor arguments as written
  (``param: Parameterization``, ``net: nn.Module``), which then either matches two entries (the class is
  documented in its module and in the package that re-exports it) or none. Each such string is
  evaluated in the namespace of the module that defines the class, as Python would, and written out
  in full (``wnlib.experiments.params.Parameterization``, ``torch.nn.Module``); one that does not
  evaluate is left as it is.
"""

from __future__ import annotations

import sys

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.nodes import make_refnode
from sphinx.util.typing import stringify_annotation


def _public_bases(bases: tuple[type, ...]) -> list[type]:
    out: list[type] = []
    for base in bases:
        if base.__name__.startswith("_") and base.__module__.split(".")[0] == "wnlib":
            out.extend(b for b in _public_bases(base.__bases__) if b not in out)
        elif base not in out:
            out.append(base)
    return out


def _process_bases(app: Sphinx, name: str, obj: type, options: dict, bases: list[type]) -> None:
    bases[:] = _public_bases(tuple(bases))


def _alias_as_class(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py" or node.get("reftype") != "class":
        return None
    target = node["reftarget"]
    objects = env.get_domain("py").objects
    module = node.get("py:module")
    for name in (target, f"{module}.{target}" if module else None):
        entry = objects.get(name) if name else None
        if entry is not None and entry.objtype in ("data", "type"):
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)
    return None


def _resolve_constructor_annotations(
    app: Sphinx, what: str, name: str, obj: object, options: dict, signature: str, return_annotation: str
) -> None:
    if what not in ("class", "exception"):
        return
    annotations = app.env.temp_data.get("annotations", {}).get(name)
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if not annotations or module is None:
        return
    mode = "smart" if app.config.autodoc_typehints_format == "short" else "fully-qualified-except-typing"
    for arg, text in annotations.items():
        try:
            value = eval(text, vars(module))  # our own annotations, in their own module's namespace
        except Exception:
            continue
        annotations[arg] = stringify_annotation(value, mode)


def setup(app: Sphinx) -> dict:
    app.connect("autodoc-process-bases", _process_bases)
    # After sphinx.ext.autodoc.typehints has recorded the annotations (priority 500).
    app.connect("autodoc-process-signature", _resolve_constructor_annotations, priority=600)
    app.connect("missing-reference", _alias_as_class)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
