"""Shared pytest configuration.

Triton's interpreter must be chosen before any module defining Triton kernels is imported (Triton
reads ``TRITON_INTERPRET`` when a kernel is decorated). Setting it here, first, lets the GPU kernels
of :mod:`wnlib.kernels` run on CPU tensors in the tests. ``setdefault`` keeps an explicit
``TRITON_INTERPRET=0`` (compiled kernels, on a machine with a GPU).
"""

import os

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread, and then do not fight a parallel pytest worker."""
    from wnlib._threads import torch_threads

    with torch_threads(1):
        yield
