"""tools/check_wheel.py on small hand-made distributions: the rules it applies, not the real wheel.

The real wheel is checked end to end by the wheel workflow (and locally with
``python tools/check_wheel.py dist`` after ``python -m build``).
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_wheel.py"


@pytest.fixture(scope="module")
def cw():
    """The checker, imported from its file (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("check_wheel", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_wheel"] = module
    spec.loader.exec_module(module)
    return module


def make_wheel(path: Path, files: list[str], requires: list[str]) -> Path:
    """A zip laid out like a wheel: ``files`` plus a METADATA with ``requires`` as Requires-Dist."""
    meta = "Metadata-Version: 2.4\nName: wnlib\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        for name in files:
            zf.writestr(name, "")
        zf.writestr("wnlib-0.1.0.dist-info/METADATA", meta)
    return path


def make_sdist(path: Path, files: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name in files:
            info = tarfile.TarInfo(f"wnlib-0.1.0/{name}")
            tf.addfile(info, io.BytesIO(b""))
    return path


def test_wheel_with_only_library_modules_passes(cw, tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", ["wnlib/__init__.py", "wnlib/kernels/__init__.py"], [])
    assert cw.wheel_problems(wheel, []) == []


def test_wheel_flags_book_material_data_files_and_foreign_packages(cw, tmp_path):
    files = ["wnlib/__init__.py", "wnlib/viz/theory.py", "wnlib/runs.json", "book/index.md"]
    problems = cw.wheel_problems(make_wheel(tmp_path / "w.whl", files, []), [])
    assert [p.split(":")[1].strip() for p in problems] == [
        "wnlib/viz/theory.py",
        "wnlib/runs.json",
        "book/index.md",
    ]


def test_skip_leaves_a_subpackage_out_of_the_contents_check(cw, tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", ["wnlib/__init__.py", "wnlib/viz/theory.py"], [])
    assert cw.wheel_problems(wheel, ["wnlib.viz"]) == []


def test_metadata_allows_only_torch_and_numpy_without_an_extra(cw, tmp_path):
    requires = ["torch>=2.1", "numpy>=1.24", "triton>=3.0; extra == 'gpu'", "matplotlib>=3.8"]
    problems = cw.metadata_problems(make_wheel(tmp_path / "w.whl", [], requires))
    assert problems == ["metadata: matplotlib is required without an extra"]


def test_sdist_needs_pyproject_and_no_book(cw, tmp_path):
    good = make_sdist(tmp_path / "good.tar.gz", ["pyproject.toml", "wnlib/__init__.py"])
    bad = make_sdist(tmp_path / "bad.tar.gz", ["wnlib/__init__.py", "book/index.md"])
    assert cw.sdist_problems(good) == []
    assert cw.sdist_problems(bad) == ["sdist: bad.tar.gz has no pyproject.toml", "sdist: holds book/"]


@pytest.mark.parametrize(
    ("message", "accepted"),
    [
        ("the fused kernels need Triton; install it with `pip install wnlib[gpu]`", True),
        ("needs scikit-learn: pip install 'wnlib[experiments]'", True),
        ("pip install wnlib[gpu,experiments]", True),
        ("No module named 'triton'", False),
        ("pip install wnlib[plots]", False),  # not an extra wnlib declares
    ],
)
def test_an_import_error_must_name_a_declared_extra(cw, message, accepted):
    assert cw.names_extra(message, {"gpu", "experiments"}) is accepted


def test_module_names_lists_parents_first_with_entry_points(cw, tmp_path):
    for rel in [
        "__init__.py",
        "nn.py",
        "kernels/__init__.py",
        "kernels/triton_wn.py",
        "experiments/__main__.py",
    ]:
        (tmp_path / "wnlib" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "wnlib" / rel).write_text("")
    assert cw.module_names(tmp_path / "wnlib") == [
        "wnlib",
        "wnlib.kernels",
        "wnlib.nn",
        "wnlib.experiments.__main__",
        "wnlib.kernels.triton_wn",
    ]
