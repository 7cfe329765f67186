"""The data files shipped with the book's package: the benchmark tables and the committed experiment cache.

They live in ``wnbook/data/`` and are found through :func:`importlib.resources.files`, so they resolve
from wherever ``wnbook`` is installed (an editable install in a checkout, a wheel, Binder or Colab),
never from the working directory or the repository's layout. The writers put them there:
``python -m wnlib.bench --out book/wnbook/data/bench_cpu.md`` and the experiment runs with
``--cache-dir book/wnbook/data/experiments`` (see ``wnbook/data/experiments/README.md``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["committed_cache", "data_file"]


def data_file(*parts: str) -> Path:
    """The path of ``wnbook/data/<parts...>`` in the installed package (it need not exist yet).

    Raises ``RuntimeError`` if the package is not installed as plain files (for example, from a zip),
    because the experiment cache is read and written as a folder.
    """
    path = files("wnbook").joinpath("data", *parts)
    if not isinstance(path, Path):
        raise RuntimeError(f"wnbook's data files are not on the file system ({path!r}); install it unzipped")
    return path


def committed_cache() -> Path:
    """The committed result cache of :mod:`wnlib.experiments`, ``wnbook/data/experiments``: the runs of
    the Experiments, VAE and DQN chapters, trained once and read back when a chapter is re-executed."""
    return data_file("experiments")
