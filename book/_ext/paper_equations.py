"""Number the chapters' labelled equations as the paper does, not 1, 2, 3 per page.

A chapter writes an equation with the paper's number and a label::

    $$
    \\mathbf{w} = \\frac{g}{\\lVert\\mathbf{v}\\rVert}\\,\\mathbf{v} \\tag{2}
    $$ (eq-wn)

and refers to it with ``{eq}`eq-wn```. Sphinx would number labelled equations 1, 2, ... in page order,
so the Implementation chapter, which starts at the paper's eq. 2, would show (1), and the reference
would read "(1)". This extension takes the number from the equation's own ``\\tag{...}``: the tag is
removed from the LaTeX (so MathJax does not print it a second time) and becomes the equation's number,
both in the page ("(2)" with a permalink) and in every ``{eq}`` reference to it, from any page.

Needs ``math_numfig = False`` (set in _config.yml): with it, Sphinx takes equation numbers from the
math domain (which this extension sets) instead of counting them per page. An unlabelled equation keeps
its ``\\tag`` for MathJax to print; a labelled one without a tag is an error, so that no equation of the
book is silently numbered differently from the paper.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

TAG = re.compile(r"\\tag\{([^{}]+)\}")


def _number_from_tags(app: Sphinx, doctree: nodes.document) -> None:
    domain = app.env.get_domain("math")
    for node in doctree.findall(nodes.math_block):
        label = node.get("label")
        if not label:
            continue
        latex = node.astext()
        tags = TAG.findall(latex)
        if len(tags) != 1:
            logger.warning(
                "equation %r has %d \\tag{...}, expected exactly one (the paper's number)",
                label,
                len(tags),
                location=node,
            )
            continue
        number = tags[0].strip()
        stripped = TAG.sub("", latex).rstrip()
        node.children = [nodes.Text(stripped)]
        node["number"] = number
        domain.equations[label] = (app.env.docname, number)


def _check_config(app: Sphinx) -> None:
    if app.config.math_numfig:
        raise ExtensionError(
            "paper_equations needs math_numfig = False (sphinx: config: math_numfig: false in "
            "_config.yml); with numfig on, Sphinx renumbers the equations per page"
        )


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _check_config)
    app.connect("doctree-read", _number_from_tags)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
