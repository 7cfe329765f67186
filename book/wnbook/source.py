"""Show a function's source in a chapter, so that the page and the code it runs cannot drift apart."""

from __future__ import annotations

import inspect
from collections.abc import Callable

__all__ = ["show_source"]


def show_source(*functions: Callable) -> object:
    """The source of ``functions`` as a Markdown code block (rendered by the book and by Jupyter)."""
    from IPython.display import Markdown

    if not functions:
        raise ValueError("show_source needs at least one function")
    code = "\n\n".join(inspect.getsource(f).rstrip() for f in functions)
    return Markdown(f"```python\n{code}\n```")
