"""The covariance argument of §2.1 (wnbook.chapters.covariance): its algebra, and a short seeded run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from wnbook import stats
from wnbook.chapters import covariance as cv

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: see tests/conftest.py


def _random_covariance(d: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d)
    return np.cov(a, rowvar=False)


def test_projector_is_the_projection_away_from_w():
    w = np.array([3.0, -1.0, 2.0])
    m = cv.projector(w)
    np.testing.assert_allclose(m @ w, 0.0, atol=1e-15)
    np.testing.assert_allclose(m @ m, m, atol=1e-15)
    np.testing.assert_allclose(m, np.eye(3) - np.outer(w, w) / (w @ w), atol=1e-15)


def test_d_is_the_covariance_of_the_projected_scaled_gradients():
    # samples of ∇w L, mapped by eq. 4 to ∇v L = (g/‖v‖) M_w ∇w L: their covariance is D
    rng = np.random.default_rng(0)
    grad_w = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    w, g, norm_v = rng.normal(size=6), 1.7, 0.6
    grad_v = (g / norm_v) * grad_w @ cv.projector(w).T
    c = np.cov(grad_w, rowvar=False)
    d = cv.covariance_of_grad_v(c, w, g, norm_v)
    np.testing.assert_allclose(d, np.cov(grad_v, rowvar=False), rtol=1e-10, atol=1e-12)
    m = cv.projector(w)
    np.testing.assert_allclose(d, (g / norm_v) ** 2 * m @ c @ m, atol=1e-12)


def test_d_has_w_as_null_vector_and_restrict_removes_only_that_zero():
    c, w = _random_covariance(7, 200, seed=1), np.random.default_rng(2).normal(size=7)
    d = cv.covariance_of_grad_v(c, w, g=2.0, norm_v=1.0)
    np.testing.assert_allclose(d @ w, 0.0, atol=1e-12)
    eig_d = np.linalg.eigvalsh(d)
    assert abs(eig_d[0]) < 1e-12 and eig_d[1] > 1e-3  # one zero, along w
    restricted = np.linalg.eigvalsh(cv.restrict(d, w))
    np.testing.assert_allclose(restricted, eig_d[1:], rtol=1e-10)
    np.testing.assert_allclose(cv.restrict(d, w), 4.0 * cv.restrict(c, w), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("w", [np.array([1.0, 0, 0, 0]), np.array([-1.0, 0, 0, 0]), np.array([0.0, 0, 0, 2])])
def test_restrict_basis_is_orthonormal_and_orthogonal_to_w(w):
    # the Householder basis must not break when w is ±e_1 (the stable branch) or any axis
    c = np.diag([1.0, 2.0, 3.0, 4.0])
    ev = np.linalg.eigvalsh(cv.restrict(c, w))
    expected = np.delete(np.array([1.0, 2.0, 3.0, 4.0]), np.flatnonzero(w)[0])
    np.testing.assert_allclose(ev, expected, atol=1e-14)


def test_projecting_out_the_top_eigenvector_lowers_the_condition_number():
    # constructed: C has a dominant direction e; w = e is the paper's case, a random u the control
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    c = q @ np.diag([100.0, *np.linspace(1.0, 2.0, 9)]) @ q.T
    w = 2.5 * q[:, 0]
    u = rng.normal(size=10)
    kappa_c = stats.condition_number(np.linalg.eigvalsh(c))
    kappa_w = stats.condition_number(np.linalg.eigvalsh(cv.restrict(c, w)))
    kappa_u = stats.condition_number(np.linalg.eigvalsh(cv.restrict(c, u)))
    assert kappa_c == pytest.approx(100.0)
    assert kappa_w == pytest.approx(2.0)  # λ2/λmin: only the dominant direction is gone
    assert kappa_u > 50.0  # a random direction barely touches the dominant one
    assert stats.spread(np.linalg.eigvalsh(cv.restrict(c, w))) < 1.5 < stats.spread(np.linalg.eigvalsh(c))


def test_any_projection_can_only_narrow_the_spectrum():
    # Cauchy interlacing: why the random-direction control is needed at all
    c = _random_covariance(8, 100, seed=4)
    ev = np.linalg.eigvalsh(c)
    for seed in range(5):
        u = np.random.default_rng(seed).normal(size=8)
        ev_u = np.linalg.eigvalsh(cv.restrict(c, u))
        assert ev_u.max() <= ev.max() + 1e-12 and ev_u.min() >= ev.min() - 1e-12
        assert stats.condition_number(ev_u) <= stats.condition_number(ev) + 1e-9


def test_condition_number_and_spread_of_singular_spectra():
    ev = np.array([0.0, 1.0, 3.0])
    assert stats.condition_number(ev) == float("inf")
    assert stats.condition_number(ev, rel_floor=0.5) == pytest.approx((3.0 + 2 / 3) / (2 / 3))
    assert stats.spread(ev) == pytest.approx(3.0 / (4.0 / 3.0))


def test_bad_input_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match=r"finite, nonzero vector .* M_w is undefined for w = 0"):
        cv.projector(np.zeros(3))
    with pytest.raises(ValueError, match=r"w must be a vector \(shape \(d,\)\), got shape \(2, 2\)"):
        cv.projector(np.eye(2))
    with pytest.raises(ValueError, match=r"C must be a \(3, 3\) matrix to match w of length 3, got shape"):
        cv.covariance_of_grad_v(np.eye(2), np.ones(3), g=1.0, norm_v=1.0)
    with pytest.raises(ValueError, match=r"norm_v = ‖v‖ must be positive, got 0.0"):
        cv.covariance_of_grad_v(np.eye(3), np.ones(3), g=1.0, norm_v=0.0)
    with pytest.raises(ValueError, match=r"positive mean \(a nonzero covariance\)"):
        stats.spread(np.zeros(3))
    with pytest.raises(ValueError, match=r"rel_floor must be >= 0, got -1"):
        stats.condition_number(np.ones(3), rel_floor=-1)
    with pytest.raises(ValueError, match=r"strictly increasing list of steps >= 0, got \[5, 5\]"):
        cv.train_snapshots(torch.zeros(4, 64), torch.zeros(4, dtype=torch.long), steps=[5, 5])
    with pytest.raises(ValueError, match=r"n_batches must be >= 2 to estimate a covariance, got 1"):
        cv.measure_run(steps=(0,), n_batches=1)


@pytest.fixture(scope="module")
def short_run() -> list[cv.LayerSpectra]:
    # Module-scoped, so it is set up before the function-scoped one_thread fixture: set the same
    # one thread here, or the run below (on one thread) may differ by a rounding of the reductions.
    from wnlib._threads import torch_threads

    with torch_threads(1):
        return cv.measure_run(steps=(0, 20), n_batches=80, seed=0)


def test_training_leaves_the_global_rng_alone():
    x, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cv.train_snapshots(x, y, steps=(0, 3), seed=0)
    torch.testing.assert_close(torch.rand(3), expected)


def test_short_run_measures_every_layer_and_wnlib_backward_matches_d(short_run):
    assert [(s.step, s.layer) for s in short_run] == [(0, 1), (0, 2), (0, 3), (20, 1), (20, 2), (20, 3)]
    for s in short_run:
        assert s.d_error < 1e-10  # cov(wnlib's ∇v L) = (g²/‖v‖²) M_w C M_w on the real run
        n_live = s.n_units - s.dead
        assert n_live > 0 and len(s.cos_w) == len(s.cos_u) == n_live
        assert np.all((0 <= s.cos_w) & (s.cos_w <= 1 + 1e-12))
        for name in cv.PROJECTIONS:
            assert np.all(np.isfinite(s.spread[name]) & (s.spread[name] >= 1.0 - 1e-12))


def test_run_is_deterministic(short_run):
    again = cv.measure_run(steps=(0, 20), n_batches=80, seed=0)
    for a, b in zip(short_run, again, strict=True):
        np.testing.assert_array_equal(a.cos_w, b.cos_w)
        np.testing.assert_array_equal(a.cos_u, b.cos_u)
        for name in cv.PROJECTIONS:
            np.testing.assert_array_equal(a.spread[name], b.spread[name])


def test_plot_covariance_draws_one_column_per_layer(short_run):
    fig = cv.plot_covariance(short_run, title="test")
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "layer 1: 64 → 32"
    plt.close(fig)
