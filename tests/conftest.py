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


@pytest.fixture
def retrain_matches_cache():
    """A check that retrains a cached classification run in full and compares it with the cache entry:
    its first epoch to float precision (the entry is genuine: nothing else gives that fingerprint), its
    schedule exactly, its final test error within a point (float rounding on another CPU grows over
    20 epochs into a different final network, about as different as another seed's)."""

    def check(config, cache_dir) -> None:
        from wnlib import experiments as ex
        from wnlib.experiments import training

        stored = training.cached_result(config, device="cpu", cache_dir=str(cache_dir))
        assert stored is not None, f"{config} is not in the cache {cache_dir}"
        _, fresh = ex.fit(config, device="cpu", quiet=True, threads=1)
        assert len(fresh.epochs) == len(stored.epochs) == config.epochs
        first, again = stored.epochs[0], fresh.epochs[0]
        assert again.train_loss == pytest.approx(first.train_loss, rel=1e-4)
        assert abs(again.test_error - first.test_error) <= 0.01
        assert [(e.lr, e.beta1) for e in fresh.epochs] == [(e.lr, e.beta1) for e in stored.epochs]
        assert abs(fresh.final_test_error - stored.final_test_error) <= 0.01

    return check
