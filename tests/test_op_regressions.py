"""Each case reported against the op (issue 9), as users met it, through layers and ``weight_norm``.

The op-level matrix (tests/test_op_matrix.py) covers modes × layouts × dtypes × dims; these are the
reported reproductions, kept as they were written, each compared with an independent computation.
"""

from __future__ import annotations

import pytest
import torch
from torch import func, nn

import wnlib
from wnlib import functional as wnf


def naive_w(m: nn.Module, dim: int | None = 0) -> torch.Tensor:
    v, g = m.weight_v, m.weight_g
    if dim is None:
        return g * v / v.norm()
    reduce = [d for d in range(v.ndim) if d != dim]
    shape = [1] * v.ndim
    shape[dim] = -1
    return g.reshape(shape) * v / v.norm(dim=reduce, keepdim=True)


# 1. create_graph=True first-order gradients ---------------------------------------------------------


LAYERS = [
    (lambda: nn.Linear(5, 5), (3, 5)),
    (lambda: nn.Linear(4, 5), (3, 4)),
    (lambda: nn.Conv2d(2, 4, 3), (3, 2, 6, 6)),
]


@pytest.mark.parametrize("make, x_shape", LAYERS)
def test_create_graph_gradients_equal_plain_ones(make, x_shape):
    torch.manual_seed(0)
    m = wnlib.weight_norm(make())
    x = torch.randn(x_shape)
    a = torch.autograd.grad(m(x).pow(2).sum(), m.weight_v)[0]
    b = torch.autograd.grad(m(x).pow(2).sum(), m.weight_v, create_graph=True)[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert b.requires_grad


# 2. second derivatives on every path ----------------------------------------------------------------


def _penalty_grad_g(module_fn, v, g):
    gv, gg = torch.autograd.grad(module_fn(v, g).pow(2).sum(), (v, g), create_graph=True)
    return torch.autograd.grad(gv.pow(2).sum() + gg.pow(2).sum(), g)[0]


def test_dim_none_second_order_is_not_zero():
    torch.manual_seed(0)
    v = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    g = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    got = _penalty_grad_g(lambda v, g: wnf.weight_norm(v, g, None) * torch.arange(24.0).reshape(6, 4), v, g)
    want = _penalty_grad_g(lambda v, g: g * v / v.norm() * torch.arange(24.0).reshape(6, 4), v, g)
    assert want.abs() > 1
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size", [(512, 512), (1024, 256)])  # the second is on the scaled Linear path
def test_gradient_penalty_through_large_linear_layers(size):
    torch.manual_seed(0)
    m = wnlib.nn.Linear(*size).double()
    x = torch.randn(8, size[0], dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(m(x).tanh().sum(), x, create_graph=True)
    got = torch.autograd.grad(gx.pow(2).sum(), (m.weight_v, m.weight_g))
    w = naive_w(m)
    (gx0,) = torch.autograd.grad(torch.nn.functional.linear(x, w, m.bias).tanh().sum(), x, create_graph=True)
    want = torch.autograd.grad(gx0.pow(2).sum(), (m.weight_v, m.weight_g))
    for a, b in zip(got, want, strict=True):
        assert a is not None
        torch.testing.assert_close(a, b)


# 3. torch.func over the library's Functions and layers -------------------------------------------


def test_torch_func_on_the_autograd_functions_directly():
    v = torch.randn(4, 3, dtype=torch.float64)
    g = torch.rand(4, dtype=torch.float64) + 0.5
    grad = func.grad(lambda v: wnf.WeightNormFunction.apply(v, g, 0, 1e-12)[0].sum())(v)
    want = func.grad(lambda v: (g[:, None] * v / v.norm(dim=1, keepdim=True)).sum())(v)
    torch.testing.assert_close(grad, want)


def test_vmap_over_a_stacked_ensemble_of_layers():
    torch.manual_seed(0)
    models = [wnlib.nn.Linear(6, 3) for _ in range(4)]
    params, buffers = func.stack_module_state(models)
    x = torch.randn(5, 6)

    def call(p, b, x):
        return func.functional_call(models[0], (p, b), (x,))

    out = func.vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    for k, m in enumerate(models):
        torch.testing.assert_close(out[k], m(x))


def test_per_sample_gradients_with_vmap_grad():
    torch.manual_seed(0)
    m = wnlib.nn.Conv1d(2, 3, 3).double()
    params = {k: p.detach() for k, p in m.named_parameters()}
    x = torch.randn(4, 2, 8, dtype=torch.float64)

    def loss(p, xi):
        return func.functional_call(m, p, (xi[None],)).pow(2).sum()

    per_sample = func.vmap(func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(4):
        m.zero_grad()
        m(x[i : i + 1]).pow(2).sum().backward()
        for k, p in m.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad)


# 4. compile(fullgraph=True) and strict export of layers -------------------------------------------


@pytest.mark.slow
def test_layers_compile_fullgraph_and_export_strictly():
    torch.manual_seed(0)
    model = nn.Sequential(wnlib.nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), wnlib.nn.Linear(4 * 36, 2))
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    torch.testing.assert_close(y, model(x))
    y.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    ep = torch.export.export(model, (x,), strict=True)
    torch.testing.assert_close(ep.module()(x), model(x))


# 5. memory layouts ---------------------------------------------------------------------------------


def test_channels_last_conv_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    c = wnlib.nn.Conv2d(3, 8, 3)
    x = torch.randn(2, 3, 7, 7)
    y0 = c(x)
    y0.sum().backward()
    g0 = [p.grad.clone() for p in c.parameters()]
    c.zero_grad()
    c = c.to(memory_format=torch.channels_last)
    assert not c.weight_v.is_contiguous()
    y1 = c(x)
    y1.sum().backward()
    torch.testing.assert_close(y1, y0)
    for a, p in zip(g0, c.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


def test_transposed_weight_v():
    torch.manual_seed(0)
    m = wnlib.nn.Linear(4, 6)
    with torch.no_grad():
        m.weight_v = nn.Parameter(m.weight_v.detach().t().contiguous().t())
    assert not m.weight_v.is_contiguous()
    x = torch.randn(3, 4)
    torch.testing.assert_close(m(x), x @ naive_w(m).t() + m.bias)


def test_expanded_large_v_does_not_crash():
    v = torch.randn(1, 1024).expand(4096, 1024)
    g = torch.ones(4096)
    w = wnf.weight_norm(v, g, 0)
    torch.testing.assert_close(w[17], v[0] / v[0].norm())


def test_one_dimensional_non_contiguous_v_with_dim_0():
    v = torch.tensor([3.0, 0.0, -4.0, 0.0, 2.0, 0.0])[::2]  # each slice is one entry: w = g·sign(v)
    g = torch.tensor([2.0, 3.0, 4.0])
    torch.testing.assert_close(wnf.weight_norm(v, g, 0), torch.tensor([2.0, -3.0, 4.0]))


def test_non_contiguous_upstream_gradient():
    torch.manual_seed(0)
    v = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    g = torch.rand(5, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 5, dtype=torch.float64).t()
    got = torch.autograd.grad(wnf.weight_norm(v, g, 0), (v, g), up)
    want = torch.autograd.grad(g[:, None] * v / v.norm(dim=1, keepdim=True), (v, g), up)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


# 6. fp16 on the scaled Linear path -----------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5000])
def test_fp16_linear_does_not_overflow_before_scaling(batch):
    m = wnlib.nn.Linear(4096, 64, bias=False).half()
    with torch.no_grad():
        m.weight_v.fill_(50.0)
        m.weight_g.fill_(1.0)
    y = m(torch.ones(batch, 4096, dtype=torch.float16))
    torch.testing.assert_close(y.float(), torch.full((batch, 64), 64.0))  # (1/64)·4096 = 64 exactly


# 7. wrapping is exact ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [0, 1, -1, None])
@pytest.mark.parametrize("make", [lambda: nn.Linear(64, 48), lambda: nn.Conv2d(8, 16, 3)])
def test_wrapping_leaves_w_bit_identical(dtype, dim, make):
    torch.manual_seed(0)
    layer = make().to(dtype)
    w0 = layer.weight.detach().clone()
    wnlib.weight_norm(layer, dim=dim)
    assert torch.equal(layer.weight, w0)


def test_torch_upstream_bf16_weight_norm_case():
    """torch's test_weight_norm bf16 case: the wrapped module's output equals the original."""
    torch.manual_seed(0)
    m = nn.Linear(5, 7).to(torch.bfloat16)
    x = torch.randn(3, 5, dtype=torch.bfloat16)
    expected = m(x)
    for dim in (0, 1, None):
        wm = wnlib.weight_norm(nn.Linear(5, 7).to(torch.bfloat16), dim=dim)
        wm.load_state_dict(m.state_dict())  # a plain state: v = w, g = ‖w‖
        assert torch.equal(wm(x), expected)
