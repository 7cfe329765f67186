"""Defaults shared by every module of wnlib, defined once.

``DEFAULT_EPS`` is the lower bound on ‖v‖ in w = g·v/max(‖v‖, eps) (Salimans & Kingma 2016, eq. 2, with
the clamp of ``torch.nn.functional.normalize``): the NumPy reference, the PyTorch op, the layers, the
L1 variants and the benchmarks all default to it, so they compute the same w. Public as
``wnlib.DEFAULT_EPS``, ``wnlib.functional.DEFAULT_EPS`` and ``wnlib.reference.DEFAULT_EPS``.
"""

__all__ = ["DEFAULT_EPS"]

DEFAULT_EPS = 1e-12
