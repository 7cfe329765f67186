"""One context manager for torch's intra-op thread count, shared by the benchmark, the experiments and
the chapters' figures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = [
    "torch_threads",
]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave it), restoring the count after.

    Small networks run faster on one thread than on two busy cores, and their results then do not
    depend on how many cores the machine has.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
