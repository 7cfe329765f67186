"""Where the experiments keep things on disk: downloaded data sets and finished runs.

One directory holds both (``data/`` and ``results/``). It is, in order of precedence, the
``cache_dir`` argument, the ``WNLIB_CACHE`` environment variable, or ``~/.cache/wnlib``.

A finished run is stored as JSON under a key that hashes its full configuration together with the
wnlib version and ``_RESULTS_VERSION``, so re-running a notebook reuses results and changing any
setting (or the training code's version) trains afresh. The Experiments chapter relies on this.

The files are strict JSON: a non-finite number (the loss of a diverged run) is stored as ``null``.
They are written atomically (a temporary file in the same directory, then :func:`os.replace`), so a
reader never sees half a file; a file that is unreadable or does not hold a JSON object is reported
by ``_read_result`` and treated by its callers as a miss, retrained and replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DIR",
    "CacheEntryInvalid",
    "NotWritableError",
    "cache_dir",
    "dumps",
    "load_result",
    "result_path",
    "save_result",
]

_ENV_VAR = "WNLIB_CACHE"
#: The cache directory when the environment variable is not set.
DEFAULT_DIR = Path("~/.cache/wnlib")
# Bump when a change to the training code changes what a configuration produces.
_RESULTS_VERSION = 1


class CacheEntryInvalid(UserWarning):
    """A stored result does not validate: it is treated as a miss, retrained and replaced."""


class NotWritableError(ValueError):
    """A directory the experiments must write to cannot be written."""


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``path`` if given, else ``$WNLIB_CACHE``, else ``~/.cache/wnlib``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(_ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_DIR.expanduser()


def _config_key(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serializable configuration (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def result_path(key: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Where the result with ``key`` is stored."""
    return cache_dir(path) / "results" / f"{key}.json"


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, so that it is valid JSON.

    Example:
        >>> _json_safe({"loss": [0.5, float("nan")], "n": 3})
        {'loss': [0.5, None], 'n': 3}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 1) -> str:
    """Strict JSON of ``obj`` (sorted keys; non-finite numbers as ``null``, see ``_json_safe``)."""
    return json.dumps(_json_safe(obj), indent=indent, sort_keys=True, allow_nan=False)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _read_result(
    key: str, path: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(the stored JSON object of ``key``, None), or (None, None) when nothing is stored, or
    (None, what is wrong with the file) when something is stored that is not a readable JSON object."""
    file = result_path(key, path)
    if file.is_dir():
        return None, "is a directory, not a file"
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON ({_one_line(e)})"
    except (OSError, ValueError) as e:
        return None, f"cannot be read ({type(e).__name__}: {_one_line(e)})"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    return data, None


def load_result(key: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The stored JSON object for ``key``, or None when there is none or it is unreadable."""
    return _read_result(key, path)[0]


def _clear(file: Path) -> None:
    """Make room for ``file``: a directory in its place is removed if empty, else moved aside."""
    if not file.is_dir():
        return
    try:
        file.rmdir()
    except OSError:
        aside = Path(tempfile.mkdtemp(prefix=f"{file.name}.invalid.", dir=file.parent))
        os.replace(file, aside / file.name)


def save_result(key: str, result: dict[str, Any], path: str | os.PathLike[str] | None = None) -> Path:
    """Store ``result`` under ``key`` atomically: written to a temporary file in the same directory,
    then moved over the old entry with :func:`os.replace` (whatever the old entry held)."""
    file = result_path(key, path)
    file.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(result)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        _clear(file)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def _check_writable(directory: str | os.PathLike[str], what: str) -> Path:
    """``directory`` as a Path, created if missing, after checking that a file can be written in it
    (a probe file, removed again); else :class:`NotWritableError` naming ``what`` (e.g. ``--cache-dir``).
    """
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".wnlib-write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise NotWritableError(
            f"{what}: cannot write to {directory} ({type(e).__name__}: {_one_line(e)}); "
            "pass a directory you can write to"
        ) from None
    return directory
