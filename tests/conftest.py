"""Shared pytest configuration.

Triton's interpreter must be chosen before any module defining Triton kernels is imported (Triton
reads ``TRITON_INTERPRET`` when a kernel is decorated). Setting it here, first, lets the GPU kernels
of :mod:`wnlib.kernels` run on CPU tensors in the tests. ``setdefault`` keeps an explicit
``TRITON_INTERPRET=0`` (compiled kernels, on a machine with a GPU).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
