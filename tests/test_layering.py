"""The import graph of wnlib: layered, acyclic, and free of the book.

Every ``.py`` file of the package is parsed (nothing is imported), and every import in it becomes an
edge, including imports inside functions and ``importlib.import_module("wnlib...")`` with a literal
name: an import moved into a function to dodge a cycle is still a cycle here. The test fails on
(a) a cycle, (b) an import of a module in a higher layer than the importer's, (c) an import of the
book's code (``wnbook``, ``book``, or the old chapter package ``wnlib.viz``).
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "wnlib"

# The layers, lowest first. A module may import modules of its own layer or of lower ones, never of a
# higher one; within a layer, the cycle check keeps the order. Patterns are fnmatch patterns; every
# module of wnlib must match exactly one layer, so a new module has to be placed here.
LAYERS: list[tuple[str, ...]] = [
    ("wnlib._defaults", "wnlib._extras", "wnlib._threads"),  # constants, optional deps, thread count
    ("wnlib.reference",),  # the NumPy oracle of eq. 2-4
    ("wnlib.kernels.triton_wn",),  # the Triton kernels themselves
    ("wnlib.kernels",),  # their lazy front, the GPU backend of the op
    ("wnlib.functional",),  # the op w = g·v/‖v‖ and its backward
    ("wnlib.parametrize",),  # weight norm on any module
    ("wnlib.mean_only_bn", "wnlib.variants"),  # mean-only BN and folding; L1 weight norm
    ("wnlib.nn", "wnlib.a2q"),  # the layers
    ("wnlib.init",),  # data-dependent initialization
    ("wnlib",),  # the package's public front
    ("wnlib.experiments.cache",),
    ("wnlib.experiments.data",),
    ("wnlib.experiments.params", "wnlib.experiments.schedule", "wnlib.experiments.tables"),
    ("wnlib.experiments.models",),
    ("wnlib.experiments.training",),
    ("wnlib.experiments.presets",),
    ("wnlib.experiments.results",),
    ("wnlib.experiments.vae", "wnlib.experiments.dqn", "wnlib.experiments.log_gain"),
    ("wnlib.experiments", "wnlib.experiments.__main__"),  # the experiments' front and CLI
    ("wnlib.bench", "wnlib.bench_gpu", "wnlib.kernels.compile_check"),  # tools, at the top
]

# Code of the book (its package wnbook, in book/), which the library must never import; wnlib.viz was
# the chapters' code before it moved there.
BOOK = ("wnbook", "wnbook.*", "book", "book.*", "wnlib.viz", "wnlib.viz.*")

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_book(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in BOOK)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every name ``module`` imports, anywhere in it. ``from a import b`` gives ``a.b``, which
    :func:`resolve` maps to the module ``a.b`` if there is one, else to ``a``: importing a submodule
    through its package is an import of the submodule."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def resolve(name: str, modules: Iterable[str]) -> str | None:
    """The wnlib module an imported name refers to: itself, or its longest prefix that is a module
    (``wnlib.functional.weight_norm`` -> ``wnlib.functional``); None outside wnlib."""
    known = set(modules)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def parse_package(root: Path = ROOT) -> tuple[Graph, dict[str, set[str]]]:
    """The import graph between wnlib's modules, and every module's full set of imported names."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py")) if not is_book(module_name(p, root))}
    imports = {}
    for m, p in files.items():
        imports[m] = imported_names(ast.parse(p.read_text(), str(p)), m, p.name == "__init__.py")
    graph: Graph = {m: set() for m in files}
    for m, names in imports.items():
        for name in names:
            target = resolve(name, files)
            if target is not None and target != m:
                graph[m].add(target)
    return graph, imports


def layer_of(module: str, layers: list[tuple[str, ...]] = LAYERS) -> int:
    matches = [i for i, layer in enumerate(layers) if any(fnmatch.fnmatchcase(module, p) for p in layer)]
    if len(matches) != 1:
        raise LookupError(f"{module} matches {len(matches)} layers of LAYERS (it must match exactly one)")
    return matches[0]


def upward_imports(graph: Graph, layers: list[tuple[str, ...]] = LAYERS) -> list[str]:
    """Every edge that imports a module of a higher layer, as "a (layer i) imports b (layer j)"."""
    found = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a, layers), layer_of(b, layers)
            if lb > la:
                found.append(f"{a} (layer {la}) imports {b} (layer {lb})")
    return found


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# The package as it is
# --------------------------------------------------------------------------------------------------

GRAPH, IMPORTS = parse_package()


def test_the_graph_is_the_package():
    assert {"wnlib", "wnlib.functional", "wnlib.experiments.training", "wnlib.kernels"} <= set(GRAPH)
    assert "wnlib.functional" in GRAPH["wnlib.parametrize"]
    assert "wnlib.kernels" in GRAPH["wnlib.functional"]  # an import inside a function counts
    assert "wnlib.kernels.triton_wn" in GRAPH["wnlib.kernels"]  # so does importlib.import_module


def test_every_module_is_in_exactly_one_layer():
    for module in GRAPH:
        layer_of(module)


def test_no_cycles():
    assert cycles(GRAPH) == []


def test_no_import_against_the_layers():
    assert upward_imports(GRAPH) == []


def test_the_library_does_not_import_the_book():
    offenders = {m: sorted(n for n in names if is_book(n)) for m, names in IMPORTS.items()}
    assert {m: n for m, n in offenders.items() if n} == {}


# --------------------------------------------------------------------------------------------------
# The checker itself: it catches what it is for
# --------------------------------------------------------------------------------------------------


def test_checker_finds_cycles_and_upward_imports_in_a_synthetic_graph():
    layers = [("low",), ("mid", "mid2"), ("high",)]
    graph = {"low": {"mid"}, "mid": {"mid2"}, "mid2": {"mid"}, "high": {"low"}}
    assert cycles(graph) == [["mid", "mid2"]]
    assert upward_imports(graph, layers) == ["low (layer 0) imports mid (layer 1)"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    with pytest.raises(LookupError, match="matches 0 layers"):
        layer_of("elsewhere", layers)


def test_checker_would_catch_the_old_cycles():
    """The cycles this layering replaced: training imported results' markdown_table inside a method,
    and results imported training (at the top and inside functions), with presets in between."""
    old_training = "def to_markdown(self):\n    from wnlib.experiments.results import markdown_table\n"
    graph = {m: set(e) for m, e in GRAPH.items()}
    for name in imported_names(ast.parse(old_training), "wnlib.experiments.training", False):
        graph["wnlib.experiments.training"].add(resolve(name, graph))
    old_cycle = ["wnlib.experiments.presets", "wnlib.experiments.results", "wnlib.experiments.training"]
    assert old_cycle in cycles(graph)
    assert "wnlib.experiments.training (layer 14) imports wnlib.experiments.results (layer 16)" in (
        upward_imports(graph)
    )


def test_relative_imports_and_book_imports_are_seen():
    tree = ast.parse("from . import cache\nfrom .data import load_dataset\nimport wnbook.figures\n")
    names = imported_names(tree, "wnlib.experiments.training", False)
    assert names == {"wnlib.experiments.cache", "wnlib.experiments.data.load_dataset", "wnbook.figures"}
    assert resolve("wnlib.experiments.data.load_dataset", GRAPH) == "wnlib.experiments.data"
    assert resolve("wnlib.use_backend", GRAPH) == "wnlib" and resolve("numpy", GRAPH) is None
    assert [n for n in names if is_book(n)] == ["wnbook.figures"]
