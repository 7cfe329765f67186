"""A chapter runs from an empty directory against non-editable installs of wnlib and wnbook: no path in
the library, the book's package or the chapter depends on the repository checkout.

The test makes a throw-away venv whose only packages of its own are wnlib and wnbook, built and
installed from the checkout as regular (non-editable) wheels. The other dependencies (torch, numpy,
matplotlib, ipykernel, ...) come from the project's venv through a ``.pth`` line naming its
site-packages: Python does not process the ``.pth`` files found there, so the project's editable
installs of wnlib and wnbook are invisible. The chapter is copied into an empty temporary directory,
executed there with ``jupyter execute`` in the new venv, and its printed outputs must be the committed
ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTER = ROOT / "book" / "vae.ipynb"  # reads the committed runs and writes nothing: a few seconds

pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _texts(nb: dict) -> list[list[str]]:
    return [
        ["".join(o.get("text", "")) for o in c.get("outputs", []) if o.get("output_type") == "stream"]
        + ["".join(o.get("data", {}).get("text/plain", "")) for o in c.get("outputs", []) if "data" in o]
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    base = tmp_path_factory.mktemp("fresh")
    venv, work = base / "venv", base / "empty"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            cwd=work,
            env={"PATH": os.environ["PATH"]},
        ).strip()
    )
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    # pip from the project's venv, installing into the new one: no build isolation (setuptools is
    # already there), no dependencies (they come through the .pth line).
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        str(ROOT),
        str(ROOT / "book"),
        cwd=work,
        env=env,
    )
    return python, env, work


def test_packages_come_from_the_fresh_venv_not_the_checkout(fresh):
    python, env, work = fresh
    where = json.loads(
        _run(
            str(python),
            "-c",
            (
                "import json, wnlib, wnbook, wnbook.files as f; "
                "print(json.dumps([wnlib.__file__, wnbook.__file__, str(f.committed_cache())]))"
            ),
            cwd=work,
            env=env,
        )
    )
    prefix = str(python.parent.parent)
    assert all(p.startswith(prefix) for p in where), where
    assert not any(p.startswith(str(ROOT)) for p in where), where
    assert (Path(where[2]) / "results").is_dir()  # the committed runs ship with the package


def test_a_chapter_runs_from_an_empty_directory(fresh):
    python, env, work = fresh
    copy = work / CHAPTER.name
    copy.write_text(CHAPTER.read_text())
    nb_env = dict(
        env,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        ATEN_CPU_CAPABILITY="avx2",
        MKL_CBWR="AVX2",
        ONEDNN_MAX_CPU_ISA="AVX2",
    )
    execute = "import sys; from nbclient.cli import main; sys.argv[0] = 'jupyter-execute'; main()"
    _run(str(python), "-c", execute, "--inplace", copy.name, cwd=work, env=nb_env)
    assert sorted(p.name for p in work.iterdir()) == [CHAPTER.name]  # it wrote nothing beside itself
    assert _texts(json.loads(copy.read_text())) == _texts(json.loads(CHAPTER.read_text()))
