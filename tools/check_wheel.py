"""Check the built wnlib distributions the way a user meets them: ``pip install wnlib``.

Usage (after ``python -m build``, which writes the sdist and the wheel built from it into ``dist/``)::

    python tools/check_wheel.py dist            # contents, metadata, then imports in a fresh venv
    python tools/check_wheel.py --imports-only  # only the import walk, in the running interpreter

The full check:

1. **Contents.** The wheel holds only ``wnlib/**.py`` (and ``py.typed``) plus its ``.dist-info``: no
   chapters, tests, cached runs or figure helpers. The sdist has ``pyproject.toml`` and no ``book/``.
2. **Metadata.** The only unconditional dependencies are torch and numpy; everything else sits behind
   an extra (``wnlib[gpu]``, ``wnlib[experiments]``).
3. **Imports.** A new virtual environment gets ``torch==2.13.0`` (``--torch``), numpy and the wheel,
   nothing else, and imports every module of the installed package from an empty directory. A module
   may fail only with an ImportError that names one of the declared extras; ``python -m`` entry points
   (``__main__.py``) run with ``--help`` under the same rule. Afterwards none of matplotlib, ipywidgets
   or IPython may be imported.

``--imports-only`` runs step 3 in the current interpreter, whatever is installed there: in the full
development environment it shows that no wnlib module imports matplotlib even where it could.
``--skip PACKAGE`` leaves a subpackage out of every step and says so in the report.
Exit status 0 when everything holds, 1 otherwise (each problem is printed on its own line).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "wnlib"
RUNTIME_DEPENDENCIES = {"torch", "numpy"}
FORBIDDEN_IMPORTS = ("matplotlib", "ipywidgets", "IPython")
# Path components that belong to the book or the tests, never to the library's wheel.
FOREIGN_PARTS = {"book", "tests", "viz", "data", "_build"}
EXTRA_PATTERN = re.compile(r"wnlib\[([A-Za-z0-9_,-]+)\]")


def is_skipped(name: str, skip: Sequence[str]) -> bool:
    """True if the dotted module ``name`` is one of ``skip`` or inside one of them."""
    return any(name == s or name.startswith(s + ".") for s in skip)


def path_module(path: str) -> str:
    """``wnlib/kernels/__init__.py`` -> ``wnlib.kernels``; other files -> their dotted folder."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__" or not path.endswith(".py"):
        parts = parts[:-1]
    return ".".join(parts)


# --- 1. contents -----------------------------------------------------------------------------


def wheel_problems(wheel: Path, skip: Sequence[str]) -> list[str]:
    """Files in the wheel that are not the library's own Python modules."""
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    for name in names:
        top = name.split("/", 1)[0]
        if top.endswith(".dist-info") and top.startswith(f"{PACKAGE}-"):
            continue
        if is_skipped(path_module(name), skip):
            continue
        if top != PACKAGE:
            problems.append(f"wheel: {name}: outside the {PACKAGE} package")
        elif FOREIGN_PARTS.intersection(name.split("/")[1:-1]):
            problems.append(f"wheel: {name}: book or test material in the library")
        elif not (name.endswith(".py") or name.endswith("/py.typed")):
            problems.append(f"wheel: {name}: not a Python module (data belongs to the book's package)")
    print(f"wheel {wheel.name}: {len(names)} files")
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    """An sdist without pyproject.toml, or with the book's chapters or a build folder in it."""
    with tarfile.open(sdist) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    print(f"sdist {sdist.name}: {len(names)} files")
    problems = [] if "pyproject.toml" in names else [f"sdist: {sdist.name} has no pyproject.toml"]
    bad = sorted({n.split("/", 1)[0] for n in names} & {"book", "_build", ".venv", "node_modules"})
    return problems + [f"sdist: holds {b}/" for b in bad]


def metadata_problems(wheel: Path) -> list[str]:
    """Unconditional dependencies other than torch and numpy."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    plain = [r for r in requires if "extra ==" not in r]
    print(f"Requires-Dist: {'; '.join(plain)}  (+{len(requires) - len(plain)} behind extras)")
    names = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in plain}
    return [f"metadata: {n} is required without an extra" for n in sorted(names - RUNTIME_DEPENDENCIES)]


# --- 3. imports ------------------------------------------------------------------------------


def declared_extras() -> set[str]:
    """The extras the installed wnlib declares (Provides-Extra)."""
    return set(importlib.metadata.metadata(PACKAGE).get_all("Provides-Extra") or [])


def module_names(root: Path) -> list[str]:
    """Every module under the installed package folder ``root``, parents before children."""
    names = (path_module(p.relative_to(root.parent).as_posix()) for p in root.rglob("*.py"))
    return sorted(set(names), key=lambda n: (n.count("."), n))


def names_extra(message: str, extras: set[str]) -> bool:
    """True if an error message tells the user which declared wnlib extra to install."""
    return any(set(m.group(1).split(",")) <= extras for m in EXTRA_PATTERN.finditer(message))


def import_problem(name: str, extras: set[str]) -> str | None:
    """Import one module; None if it imports or fails naming an extra, else what went wrong."""
    try:
        importlib.import_module(name)
    except ImportError as err:
        if names_extra(str(err), extras):
            print(f"  {name}: needs an extra ({err})")
            return None
        return f"import {name}: {type(err).__name__}: {err} (names no wnlib[...] extra)"
    except Exception as err:  # anything else at import time is a bug, whatever is installed
        return f"import {name}: {type(err).__name__}: {err}"
    print(f"  {name}: ok")
    return None


def entry_point_problem(name: str, extras: set[str]) -> str | None:
    """Run ``python -m PACKAGE --help`` for a ``PACKAGE.__main__``: exit 0 or name an extra."""
    package = name.removesuffix(".__main__")
    done = subprocess.run(
        [sys.executable, "-I", "-m", package, "--help"], capture_output=True, text=True, timeout=300
    )
    if done.returncode == 0:
        print(f"  python -m {package} --help: ok")
        return None
    if names_extra(done.stderr, extras):
        print(f"  python -m {package} --help: needs an extra")
        return None
    tail = done.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
    return f"python -m {package} --help: exit {done.returncode}: {tail[0]}"


def imports_problems(skip: Sequence[str], expect_outside: Path | None) -> list[str]:
    """Import every installed wnlib module; then check that no forbidden package got imported."""
    root = Path(importlib.import_module(PACKAGE).__file__).parent
    print(f"{PACKAGE} from {root}")
    if expect_outside is not None and root.resolve().is_relative_to(expect_outside.resolve()):
        return [f"{PACKAGE} was imported from the checkout ({root}), not from the installed wheel"]
    extras = declared_extras()
    problems = []
    for name in module_names(root):
        if is_skipped(name, skip):
            print(f"  {name}: SKIPPED (--skip)")
            continue
        check = entry_point_problem if name.endswith(".__main__") else import_problem
        problems.append(check(name, extras))
    loaded = [m for m in FORBIDDEN_IMPORTS if m in sys.modules]
    problems += [f"importing wnlib imported {m}" for m in loaded]
    return [p for p in problems if p]


# --- the full check --------------------------------------------------------------------------


def only(folder: Path, pattern: str) -> Path:
    """The one file in ``folder`` matching ``pattern``, or a clear error."""
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected exactly one {pattern} in {folder}, found {[f.name for f in found]}")
    return found[0]


def fresh_venv_problems(wheel: Path, torch: str, skip: Sequence[str]) -> list[str]:
    """Install torch, numpy and the wheel into a new venv, then run the import walk inside it."""
    with tempfile.TemporaryDirectory(prefix="wnlib-wheel-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = env_dir / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, torch, "numpy", str(wheel.resolve())], check=True)
        versions = "import torch, numpy; print('torch', torch.__version__, '| numpy', numpy.__version__)"
        subprocess.run([str(python), "-c", versions], check=True)
        skips = [arg for s in skip for arg in ("--skip", s)]
        here = Path(__file__).resolve()
        inner = [str(python), "-I", str(here), "--imports-only", "--outside", str(here.parents[1])]
        done = subprocess.run([*inner, *skips], cwd=tmp)
    return [] if done.returncode == 0 else ["the import walk in the fresh venv failed (see above)"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; print each problem; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", nargs="?", type=Path, help="folder with the sdist and the wheel")
    parser.add_argument("--imports-only", action="store_true", help="import walk in this interpreter")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="leave out a subpackage, e.g. wnlib.viz (repeatable)",
    )
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement for the venv")
    parser.add_argument("--outside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.imports_only:
        problems = imports_problems(args.skip, args.outside)
    elif args.dist is None:
        parser.error("give the dist folder, or --imports-only")
    else:
        wheel = only(args.dist, f"{PACKAGE}-*.whl")
        problems = wheel_problems(wheel, args.skip) + sdist_problems(only(args.dist, f"{PACKAGE}-*.tar.gz"))
        problems += metadata_problems(wheel) + fresh_venv_problems(wheel, args.torch, args.skip)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    skipped = f" (skipped: {', '.join(args.skip)})" if args.skip else ""
    print(f"{len(problems)} problem(s){skipped}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
