"""Where the experiments keep things on disk: downloaded data sets and finished runs.

One directory holds both (``data/`` and ``results/``). It is, in order of precedence, the
``cache_dir`` argument, the ``WNLIB_CACHE`` environment variable, or ``~/.cache/wnlib``.

A finished run is stored as JSON under a key that hashes its full configuration together with the
wnlib version and :data:`RESULTS_VERSION`, so re-running a notebook reuses results and changing any
setting (or the training code's version) trains afresh. The Experiments chapter relies on this.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "WNLIB_CACHE"
DEFAULT_DIR = Path("~/.cache/wnlib")
# Bump when a change to the training code changes what a configuration produces.
RESULTS_VERSION = 1


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``path`` if given, else ``$WNLIB_CACHE``, else ``~/.cache/wnlib``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_DIR.expanduser()


def config_key(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serializable configuration (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def result_path(key: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Where the result with ``key`` is stored."""
    return cache_dir(path) / "results" / f"{key}.json"


def load_result(key: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The stored result for ``key``, or None when there is none (or it is unreadable)."""
    file = result_path(key, path)
    try:
        return json.loads(file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_result(key: str, result: dict[str, Any], path: str | os.PathLike[str] | None = None) -> Path:
    """Store ``result`` under ``key`` atomically (write to a temporary file, then rename)."""
    file = result_path(key, path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True))
    tmp.replace(file)
    return file
