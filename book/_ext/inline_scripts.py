"""Sphinx extension: write each inline ``<script>`` into a page once.

Sphinx 7.4 registers a script added with ``app.add_js_file(None, body=...)`` after the HTML builder
has started twice: once with the filename ``None`` (straight into the builder) and once with the
filename ``""`` (copied from the registry when writing begins). The two compare unequal, so the page
gets both. For sphinx-thebe's ``const THEBE_JS_URL = ...`` the second copy throws "Identifier
'THEBE_JS_URL' has already been declared" in every page's console (sphinx-togglebutton's
``var togglebuttonSelector`` is duplicated the same way, silently). This extension drops the second
copy of any script, treating the two filenames as the same.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def _script_key(script: Any) -> tuple:
    """What makes two scripts the same: file (``None`` and ``""`` alike), priority, attributes."""
    return (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))


def drop_duplicate_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """Keep the first of each script in this page's ``script_files`` (in place: Sphinx restores
    the list after every page, and other extensions' per-page scripts must stay in it)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app: Sphinx) -> dict[str, Any]:
    # Late, after the extensions that add their own per-page scripts.
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
