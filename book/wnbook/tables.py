"""The book's one Markdown-table writer.

Every Markdown table a chapter shows is written by :func:`markdown_table`, which is the library's own
:func:`wnlib.experiments.tables.markdown_table` (the experiments' command line prints its tables with
it too), so the book and the library format tables the same way. The chapters build the rows (dicts of
already formatted cells) and choose the columns' alignment.
"""

from __future__ import annotations

from wnlib.experiments.tables import markdown_table

__all__ = ["markdown_table"]
