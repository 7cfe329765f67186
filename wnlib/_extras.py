"""Optional dependencies: import one, or fail with an ImportError that names the extra to install.

``pip install wnlib`` brings torch and numpy only. The Triton kernels need ``wnlib[gpu]``; the
experiments' data sets, progress bars and environments need ``wnlib[experiments]`` (scikit-learn,
mnist1d, tqdm, gymnasium). Modules import these lazily, inside the function that needs them, through
:func:`require`, so every wnlib module imports without them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "missing_extra", "require"]

# The extra of pyproject.toml that provides each optional top-level package.
EXTRAS: dict[str, str] = {
    "triton": "gpu",
    "sklearn": "experiments",
    "mnist1d": "experiments",
    "tqdm": "experiments",
    "gymnasium": "experiments",
}


def missing_extra(package: str, what: str) -> ImportError:
    """The ImportError to raise when ``package`` (a key of :data:`EXTRAS`) is missing for ``what``."""
    extra = EXTRAS[package]
    return ImportError(f'{what} needs {package}, which is not installed: pip install "wnlib[{extra}]"')


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.datasets"``), or raise the named-extra ImportError.

    ``what`` says what needs it, for the message: ``require("tqdm.auto", "the progress bar")`` raises
    ``ImportError: the progress bar needs tqdm, which is not installed: pip install "wnlib[experiments]"``
    when tqdm is missing.
    """
    package = module.partition(".")[0]
    if package not in EXTRAS:
        raise ValueError(f"{package!r} is not an optional dependency of wnlib; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.partition(".")[0] == package:
            raise missing_extra(package, what) from error
        raise
