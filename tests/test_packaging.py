"""``pip install wnlib`` gives torch and numpy only: every module must import without the extras.

A fresh interpreter gets a meta-path finder that makes the optional packages (and the book's plotting
and notebook stack) unimportable, as in an environment that has only torch and numpy, and then imports
every module of wnlib. Each one must import, or raise an ImportError that names the extra to install
(``pip install "wnlib[gpu]"`` / ``"wnlib[experiments]"``); the core modules must import fully; and
nothing may have pulled in matplotlib, ipywidgets or IPython. The same blocker then checks that
calling into a missing extra gives that named error, not a bare ModuleNotFoundError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = (
    "matplotlib",
    "ipywidgets",
    "IPython",
    "sklearn",
    "mnist1d",
    "gymnasium",
    "tqdm",
    "triton",
    "pandas",
)
NEVER_IMPORTED = ("matplotlib", "ipywidgets", "IPython")
CORE = (
    "wnlib",
    "wnlib.functional",
    "wnlib.nn",
    "wnlib.parametrize",
    "wnlib.init",
    "wnlib.mean_only_bn",
    "wnlib.reference",
    "wnlib.variants",
)

BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

for name in list(sys.modules):  # nothing of them may be imported already (site hooks, .pth files)
    if name.partition(".")[0] in BLOCKED:
        del sys.modules[name]
sys.meta_path.insert(0, Blocker())
"""

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import wnlib

report = {"imported": ["wnlib"], "extra_errors": {}, "other_errors": {}}
for info in pkgutil.walk_packages(wnlib.__path__, "wnlib."):
    try:
        importlib.import_module(info.name)
    except ImportError as error:
        key = "extra_errors" if 'pip install "wnlib[' in str(error) else "other_errors"
        report[key][info.name] = f"{type(error).__name__}: {error}"
    except Exception as error:
        report["other_errors"][info.name] = f"{type(error).__name__}: {error}"
    else:
        report["imported"].append(info.name)
report["loaded"] = sorted({m.partition(".")[0] for m in sys.modules})
print(json.dumps(report))
"""


def run_blocked(code: str, blocked: tuple[str, ...] = BLOCKED) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``blocked`` cannot be imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)
    script = textwrap.dedent(BLOCKER.format(blocked=blocked)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )


@pytest.fixture(scope="module")
def report() -> dict:
    done = run_blocked(IMPORT_ALL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_blocker_blocks():
    done = run_blocked("import sklearn")
    assert done.returncode != 0 and "blocked by the test" in done.stderr


def test_every_module_imports_or_names_its_extra(report):
    assert report["other_errors"] == {}
    assert len(report["imported"]) + len(report["extra_errors"]) > 20  # the walk found the package


def test_only_the_triton_kernels_need_an_extra_to_import(report):
    assert set(report["extra_errors"]) == {"wnlib.kernels.triton_wn"}
    assert 'pip install "wnlib[gpu]"' in report["extra_errors"]["wnlib.kernels.triton_wn"]


def test_core_modules_import_fully(report):
    assert set(CORE) <= set(report["imported"])


def test_no_plotting_or_notebook_packages_are_imported(report):
    assert set(NEVER_IMPORTED).isdisjoint(report["loaded"])
    assert {"torch", "numpy", "wnlib"} <= set(report["loaded"])


@pytest.mark.parametrize(
    ("call", "extra"),
    [
        ("from wnlib.experiments.data import load_dataset; load_dataset('digits')", "experiments"),
        ("from wnlib.experiments.data import load_dataset; load_dataset('mnist1d')", "experiments"),
        ("from wnlib.experiments.training import _progress; _progress(3, False, 'x')", "experiments"),
        ("from wnlib.experiments.vae import load_vae_data; load_vae_data('digits')", "experiments"),
        ("from wnlib import kernels; kernels.weight_norm_forward(None, None, 0, 0.0)", "gpu"),
        ("from wnlib.functional import set_backend; set_backend('triton')", "gpu"),
    ],
)
def test_a_missing_extra_is_named_when_it_is_needed(call, extra, tmp_path):
    code = f"import os\nos.environ['WNLIB_CACHE'] = {str(tmp_path)!r}\n{call}\n"
    done = run_blocked(code)
    assert done.returncode != 0
    assert f'pip install "wnlib[{extra}]"' in done.stderr.strip().splitlines()[-1], done.stderr


def test_dqn_names_gymnasium_and_its_extra():
    code = """
    from wnlib.experiments.dqn import fit_dqn, make_dqn_config
    fit_dqn(make_dqn_config("dqn-small", "normal", 0))
    """
    done = run_blocked(code)
    last = done.stderr.strip().splitlines()[-1]
    assert "ImportError" in last and "gymnasium" in last and 'pip install "wnlib[experiments]"' in last
