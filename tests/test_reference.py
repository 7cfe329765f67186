"""The NumPy reference against finite differences and the paper's identities (eq. 2–4)."""

import numpy as np
import pytest

from wnlib import reference as ref


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function f at x."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        plus = f(x)
        x[idx] = old - h
        minus = f(x)
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("shape, dim", [((4, 3), 0), ((4, 3), 1), ((4, 3), -1), ((3, 2, 2), 1), ((5,), None)])
def test_norm_of_w_is_g(shape, dim):
    rng = np.random.default_rng(0)
    v = rng.normal(size=shape)
    n = 1 if dim is None else shape[dim]
    g = rng.uniform(0.5, 2.0, size=n if dim is not None else ())
    w = ref.weight(v, g, dim)
    np.testing.assert_allclose(ref.norm(w, dim), g, rtol=1e-13)


@pytest.mark.parametrize("shape, dim", [((4, 3), 0), ((3, 4), 1), ((2, 3, 2), 2), ((2, 3), None)])
def test_gradients_match_finite_differences(shape, dim):
    rng = np.random.default_rng(1)
    v = rng.normal(size=shape)
    g = rng.uniform(0.5, 2.0, size=() if dim is None else shape[dim])
    upstream = rng.normal(size=shape)  # L = Σ upstream ⊙ w, so ∇w L = upstream

    def loss_v(v_):
        return np.sum(upstream * ref.weight(v_, g, dim))

    def loss_g(g_):
        return np.sum(upstream * ref.weight(v, g_, dim))

    np.testing.assert_allclose(ref.grad_v(upstream, v, g, dim), numeric_grad(loss_v, v.copy()), atol=1e-7)
    g_arr = np.array(g, dtype=float)
    np.testing.assert_allclose(ref.grad_g(upstream, v, dim), numeric_grad(loss_g, g_arr), atol=1e-7)


def test_grad_v_is_orthogonal_to_v_and_equals_projection_form():
    rng = np.random.default_rng(2)
    v, grad_w = rng.normal(size=7), rng.normal(size=7)
    gv = ref.grad_v(grad_w, v, np.array(1.7), dim=None)
    assert abs(np.dot(gv, v)) < 1e-12 * np.linalg.norm(gv) * np.linalg.norm(v) * 10
    np.testing.assert_allclose(gv, ref.grad_v_projection(grad_w, v, 1.7), rtol=1e-10, atol=1e-14)


def test_zero_vector_is_finite():
    v = np.zeros((2, 3))
    g = np.ones(2)
    assert np.all(ref.weight(v, g) == 0)
    assert np.all(np.isfinite(ref.grad_v(np.ones((2, 3)), v, g)))


def test_dim_out_of_range():
    with pytest.raises(ValueError, match="dim 2 is out of range"):
        ref.norm(np.ones((2, 3)), dim=2)
    with pytest.raises(ValueError, match="one weight vector"):
        ref.grad_v_projection(np.ones((2, 2)), np.ones((2, 2)), 1.0)
