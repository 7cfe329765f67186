"""Figures and widgets for the book's chapters, one module per chapter, sharing :mod:`wnlib.viz.style`.

Each chapter module holds the computations behind its figures (small, seeded, deterministic) and the
functions that draw them, so a notebook is narrative plus calls. Nothing in the core library imports
this package; it needs matplotlib (and ipywidgets for the interactive versions).
"""
