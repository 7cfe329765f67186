"""The PyTorch op against autograd of the naive formula, gradcheck, and the NumPy reference."""

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

import wnlib
from wnlib import functional as wnf
from wnlib import reference as ref

TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2}


def naive(v: torch.Tensor, g: torch.Tensor, dim: int | None, eps: float = wnf.DEFAULT_EPS) -> torch.Tensor:
    """w = g v/max(‖v‖, eps) in plain autograd ops (float64 oracle)."""
    if dim is None:
        return g * v / torch.sqrt((v * v).sum()).clamp_min(eps)
    reduce = [d for d in range(v.ndim) if d != dim % v.ndim]
    n = torch.sqrt((v * v).sum(reduce, keepdim=True)).clamp_min(eps)
    shape = [1] * v.ndim
    shape[dim % v.ndim] = -1
    return g.reshape(shape) * v / n


def make(shape, dim, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    n = 1 if dim is None else shape[dim]
    g = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    g = g.reshape(()) if dim is None else g
    return v.to(dtype).requires_grad_(), g.to(dtype).requires_grad_()


CASES = [((5, 3), 0), ((5, 3), 1), ((5, 3), -1), ((4, 3, 2, 2), 0), ((3, 4, 2, 2), 1), ((4, 3, 2), None)]


@pytest.mark.parametrize("shape, dim", CASES)
def test_gradcheck_float64(shape, dim):
    v, g = make(shape, dim)
    assert torch.autograd.gradcheck(lambda v, g: wnf.weight_norm(v, g, dim), (v, g))


@pytest.mark.parametrize("shape, dim", CASES)
def test_matches_naive_autograd_and_reference(shape, dim):
    v, g = make(shape, dim)
    upstream = torch.randn(shape, dtype=torch.float64)
    w = wnf.weight_norm(v, g, dim)
    gv, gg = torch.autograd.grad(w, (v, g), upstream)
    w0 = naive(v, g, dim)
    gv0, gg0 = torch.autograd.grad(w0, (v, g), upstream)
    torch.testing.assert_close(w, w0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gv, gv0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gg, gg0, rtol=1e-10, atol=1e-12)
    # and against the NumPy reference, written independently from the paper's equations
    vn, gn, un = v.detach().numpy(), g.detach().numpy(), upstream.numpy()
    np.testing.assert_allclose(w.detach().numpy(), ref.weight(vn, gn, dim), rtol=1e-12)
    np.testing.assert_allclose(gv.numpy(), ref.grad_v(un, vn, gn, dim), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gg.numpy(), ref.grad_g(un, vn, dim), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape, dim", CASES)
def test_norm_of_w_equals_g_and_grad_v_orthogonal_to_v(shape, dim):
    v, g = make(shape, dim)
    w = wnf.weight_norm(v, g, dim)
    reduce = list(range(v.ndim)) if dim is None else [d for d in range(v.ndim) if d != dim % v.ndim]
    torch.testing.assert_close(torch.linalg.vector_norm(w, dim=reduce), g.detach(), rtol=1e-10, atol=0)
    (gv,) = torch.autograd.grad(w, v, torch.randn_like(w))
    dots = (gv * v).sum(reduce)
    scale = torch.linalg.vector_norm(gv, dim=reduce) * torch.linalg.vector_norm(v, dim=reduce)
    assert torch.all(dots.abs() <= 1e-12 * scale)  # exact up to rounding


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    dim_choice=st.integers(-5, 4),
    use_none=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    keepdim_g=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_any_shape_dim_dtype(shape, dim_choice, use_none, dtype, keepdim_g, seed):
    shape = tuple(shape)
    dim = None if use_none else dim_choice % len(shape) - (len(shape) if dim_choice < 0 else 0)
    v64, g64 = make(shape, dim, seed=seed)
    v, g = v64.detach().to(dtype).requires_grad_(), g64.detach().to(dtype)
    if keepdim_g and dim is not None:
        g = g.reshape(wnf.slice_shape(v, dim % len(shape)))
    g.requires_grad_()
    upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    w = wnf.weight_norm(v, g, dim)
    assert w.dtype == dtype and w.shape == v.shape
    gv, gg = torch.autograd.grad(w, (v, g), upstream.to(dtype))
    assert gv.dtype == dtype and gv.shape == v.shape and gg.shape == g.shape
    # oracle: float64 reference on the same (rounded) inputs
    vn, gn = v.detach().double().numpy(), g.detach().double().reshape(-1).numpy()
    gn = gn.reshape(()) if dim is None else gn
    un = upstream.to(dtype).double().numpy()
    tol = TOL[dtype]
    np.testing.assert_allclose(w.detach().double().numpy(), ref.weight(vn, gn, dim), rtol=tol, atol=tol)
    scale = max(1.0, float(np.abs(ref.grad_v(un, vn, gn, dim)).max()))
    np.testing.assert_allclose(gv.double().numpy(), ref.grad_v(un, vn, gn, dim), rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(
        gg.double().reshape(-1).numpy(), np.reshape(ref.grad_g(un, vn, dim), -1), rtol=tol, atol=tol * scale
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_norm_accumulates_in_float32(dtype):
    # 4096 equal entries: a half-precision running sum would stall long before the end
    v = torch.full((2, 4096), 0.5, dtype=dtype)
    n = wnf.slice_norm(v, 0)
    assert n.dtype == torch.float32
    torch.testing.assert_close(n, torch.full((2,), 32.0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("dim", [0, 1, None])
def test_zero_vector_gives_finite_output_and_gradients(dtype, dim):
    v = torch.randn(3, 4, dtype=dtype)
    if dim is None:
        v.zero_()
    else:
        v.select(dim, 1).zero_()
    v.requires_grad_()
    g = torch.ones(1 if dim is None else v.shape[dim], dtype=dtype, requires_grad=True)
    w = wnf.weight_norm(v, g, dim)
    assert torch.isfinite(w).all()
    assert torch.all((w if dim is None else w.select(dim, 1)) == 0)
    gv, gg = torch.autograd.grad(w.sum(), (v, g))
    assert torch.isfinite(gv).all() and torch.isfinite(gg).all()
    assert gg[0 if dim is None else 1] == 0
    # below eps the norm is clamped: ∇v = (g/eps)·∇w on that slice, exactly
    zero_grad = gv if dim is None else gv.select(dim, 1)
    torch.testing.assert_close(zero_grad.double(), torch.full_like(zero_grad, 1 / wnf.DEFAULT_EPS).double())


def test_backend_switch():
    assert wnf.get_backend() == "auto"
    with wnf.use_backend("torch"):
        assert wnf.get_backend() == "torch"
    assert wnf.get_backend() == "auto"
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        wnf.set_backend("cuda")


@pytest.mark.parametrize("batch", [3, 40])  # fewer rows than inputs (w never formed), and more
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_naive(batch, bias):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    v, g = make((5, 8), 0)
    b = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=bias) if bias else None
    inputs = (x, v, g, b) if bias else (x, v, g)
    assert torch.autograd.gradcheck(lambda *a: wnf.linear(*a[:3], a[3] if bias else None), inputs)
    y = wnf.linear(x, v, g, b)
    y0 = torch.nn.functional.linear(x, naive(v, g, 0), b)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)


def test_linear_with_extra_batch_dims():
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    v, g = make((5, 8), 0)
    assert torch.autograd.gradcheck(lambda x, v, g: wnf.linear(x, v, g), (x, v, g))


@pytest.mark.parametrize("dim", [0, 1, None])
def test_gradient_below_eps_is_the_derivative_of_the_clamped_norm(dim):
    # 0 < ‖v‖ < eps: the norm is the constant eps, so w = g·v/eps and ∇v = (g/eps)·∇w, as F.normalize's
    eps = 1e-5
    gen = torch.Generator().manual_seed(11)
    v = (
        0.3
        * eps
        * torch.nn.functional.normalize(
            torch.randn(2, 3, generator=gen, dtype=torch.float64), dim=None if dim is None else 1 - dim
        )
    )
    v.requires_grad_()
    g = torch.ones(1 if dim is None else v.shape[dim], dtype=torch.float64)
    upstream = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    (gv,) = torch.autograd.grad(wnf.weight_norm(v, g, dim, eps), v, upstream)
    torch.testing.assert_close(gv, upstream / eps, rtol=1e-12, atol=0)


def test_linear_rejects_a_0d_input_and_a_list_with_specific_errors():
    v, g = torch.randn(3, 4), torch.ones(3)
    with pytest.raises(ValueError, match="feature axis of size 4, got 0-d"):
        wnf.linear(torch.tensor(1.0), v, g)
    with pytest.raises(TypeError, match="input x as a torch.Tensor, got list"):
        wnf.linear([[1.0, 2.0, 3.0, 4.0]], v, g)
    with pytest.raises(ValueError, match="input has 5 features"):
        wnlib.nn.Linear(4, 3)(torch.randn(2, 5))


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -1.0, "1e-12", True])
def test_the_op_rejects_bad_eps(eps):
    with pytest.raises((TypeError, ValueError), match="eps must be"):
        wnf.weight_norm(torch.randn(3, 4), torch.ones(3), 0, eps)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "channels_last"])
@pytest.mark.parametrize("dim", [0, 1, 2, 3])
def test_slice_norm_and_slice_dot_on_every_axis_equal_the_plain_reductions(dim, layout):
    """The fast per-slice sums (leading axes first, then trailing) give the strided reduction's values
    with and without autograd recording, in every layout, and their gradient is the plain one's."""
    torch.manual_seed(dim)
    a = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    b = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    if layout == "transposed":
        a, b = a.transpose(1, 3).contiguous().transpose(1, 3), b.transpose(0, 2).contiguous().transpose(0, 2)
    elif layout == "channels_last":
        a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    others = [d for d in range(4) if d != dim]
    norm = a.pow(2).sum(others).sqrt()
    torch.testing.assert_close(wnf.slice_norm(a, dim), norm, rtol=1e-14, atol=0)
    dot = wnf._slice_dot(a, b, dim, torch.float64)
    torch.testing.assert_close(dot, (a * b).sum(others), rtol=1e-13, atol=1e-13)
    leaf = a.clone().requires_grad_()
    (grad,) = torch.autograd.grad(wnf._per_slice_sum(leaf * b, dim).sum(), leaf)
    torch.testing.assert_close(grad, b)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_slice_norm_of_a_zero_slice_has_a_zero_gradient_like_vector_norm(dim):
    """The sum-of-squares norm is differentiated where autograd records it (create_graph, torch.func):
    at a zero slice its gradient is 0 like vector_norm's, never ∞·0 = NaN; elsewhere they agree."""
    v = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    v.select(dim, 1).zero_()
    others = [d for d in range(4) if d != dim]
    grads = []
    for norm in (lambda t: wnf.slice_norm(t, dim), lambda t: torch.linalg.vector_norm(t, dim=others)):
        leaf = v.clone().requires_grad_()
        (grad,) = torch.autograd.grad(norm(leaf).sum(), leaf)
        grads.append(grad)
    assert torch.isfinite(grads[0]).all() and not grads[0].select(dim, 1).any()
    torch.testing.assert_close(grads[0], grads[1])
