"""Checks behind the "What came after" chapter (wnbook.chapters.after); fast, CPU only."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from wnbook.chapters import after
from wnlib.functional import weight_norm

# --- demo 2: batch norm + weight norm under a switching target ---------------------------------


def test_project_rows_sets_every_row_norm():
    w = torch.randn(5, 7, dtype=torch.float64)
    after.project_rows_(w, 2.5)
    assert torch.allclose(w.norm(dim=1), torch.full((5,), 2.5, dtype=torch.float64), rtol=1e-12)


def test_bnmlp_is_invariant_to_scaling_hidden_rows(one_thread):
    torch.manual_seed(0)
    model = after.BNMLP(4, 16).double()
    x = torch.randn(32, 4, dtype=torch.float64)
    before = model(x)
    with torch.no_grad():
        model.hidden[0].weight.mul_(torch.linspace(1.0, 10.0, 16, dtype=torch.float64).unsqueeze(1))
        model.hidden[1].weight.mul_(3.0)
    assert torch.allclose(model(x), before, atol=1e-4)  # batch norm's eps breaks exactness slightly


def test_nonstationary_run_projection_keeps_norms_and_rate_fixed(one_thread):
    free = after.nonstationary_run(utd=3, project=False, env_steps=12, switch_every=4, width=16)
    fixed = after.nonstationary_run(utd=3, project=True, env_steps=12, switch_every=4, width=16)
    assert np.allclose(fixed["norm"], fixed["norm"][0], rtol=1e-6)
    assert np.allclose(fixed["elr"], fixed["elr"][0], rtol=1e-5)
    assert free["norm"][-1] != pytest.approx(free["norm"][0], rel=1e-4)
    assert set(free) == {"loss", "norm", "elr", "dead"} and len(free["loss"]) == 12
    assert ((free["dead"] >= 0) & (free["dead"] <= 1)).all()


def test_nonstationary_run_rejects_bad_ratios():
    with pytest.raises(ValueError, match="utd and switch_every must be >= 1, got utd=0"):
        after.nonstationary_run(utd=0, project=False)


def test_phase_windows():
    loss = np.arange(12.0)
    assert after.post_switch_loss(loss, 4, window=2).tolist() == [4.5, 8.5]
    assert after.end_of_phase_loss(loss, 4, window=2).tolist() == [2.5, 6.5, 10.5]


# --- demo 3: L1 weight norm and the 1-path-norm --------------------------------------------------


def test_l1_weight_norm_rows_have_l1_norm_abs_g_and_gradients():
    v = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    w = after.l1_weight_norm(v, g)
    assert torch.allclose(w.abs().sum(1), g.abs(), rtol=1e-12)
    assert torch.autograd.gradcheck(after.l1_weight_norm, (v, g))
    assert torch.autograd.gradgradcheck(after.l1_weight_norm, (v, g))
    shared = after.l1_weight_norm(v, torch.tensor(-2.0, dtype=torch.float64))
    assert torch.allclose(shared.abs().sum(1), torch.full((4,), 2.0, dtype=torch.float64))


def test_l1_weight_norm_rejects_bad_shapes_and_eps():
    v = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"g has shape \(3,\) but v has 4 rows"):
        after.l1_weight_norm(v, torch.ones(3))
    with pytest.raises(ValueError, match=r"expects an \(out, in\) matrix"):
        after.l1_weight_norm(torch.randn(4, 6, 2), torch.ones(4))
    with pytest.raises(ValueError):
        after.l1_weight_norm(v, torch.ones(4), eps=-1.0)


def test_path_norm_identity_shared_gain_and_bound_per_unit():
    weights, _ = after.random_l1_network([3, 4, 3, 2], shared_g=True, seed=1)
    brute = after.path_norm_brute_force(weights)
    gains = [g[0].item() for g in after.layer_gains(weights)]
    assert brute == pytest.approx(after.path_norm(weights).item(), rel=1e-12)
    assert brute == pytest.approx(2 * math.prod(gains), rel=1e-12)
    weights, _ = after.random_l1_network([3, 4, 3, 2], shared_g=False, seed=1)
    bound = 2 * math.prod(g.max().item() for g in after.layer_gains(weights))
    assert after.path_norm_brute_force(weights) <= bound


def test_path_norm_bounds_the_lipschitz_constant_with_and_without_biases():
    weights, biases = after.random_l1_network([4, 5, 3], seed=2)
    pn = after.path_norm(weights).item()
    assert 0 < after.lipschitz_check(weights, None) <= pn
    assert after.lipschitz_check(weights, biases) <= pn


def test_sparsity_run_rejects_unknown_kind_and_runs(one_thread):
    with pytest.raises(ValueError, match="kind must be 'plain', 'l2' or 'l1', got 'l3'"):
        after.sparsity_run("l3")
    out = after.sparsity_run("l1", steps=3)
    assert 0 <= out["near-zero fraction"] <= 1 and 0 <= out["test accuracy"] <= 1


def test_near_zero_fraction():
    w = torch.tensor([[1.0, 0.0, 1e-5, 1.0]])
    assert after.near_zero_fraction([w]) == 0.5


# --- demo 4: Hessian of WN MLPs ------------------------------------------------------------------


def test_wn_forward_matches_the_library_op():
    params = after.wn_mlp([5, 4, 3], seed=0)
    x = torch.randn(7, 5, dtype=torch.float64)
    v1, g1, b1, v2, g2, b2 = (p.detach() for p in params)
    h = torch.tanh(x @ weight_norm(v1, g1).T + b1)
    assert torch.allclose(after.wn_forward(params, x), h @ weight_norm(v2, g2).T + b2, rtol=1e-12)


def test_top_hessian_eigenvalue_of_a_quadratic():
    a = torch.diag(torch.tensor([3.0, -1.0, 0.5], dtype=torch.float64))
    p = [torch.randn(3, dtype=torch.float64, requires_grad=True)]
    lam = after.top_hessian_eigenvalue(lambda ps: 0.5 * ps[0] @ a @ ps[0], p, n_iter=100)
    assert lam == pytest.approx(3.0, rel=1e-8)


def test_rescaled_v_hessian_scales_as_inverse_square(one_thread):
    out = after.rescaled_v_hessian(width=8, depth=1, scales=(1.0, 2.0))
    (loss1, lam1), (loss2, lam2) = out[1.0], out[2.0]
    assert loss1 == pytest.approx(loss2, rel=1e-12)
    assert lam2 == pytest.approx(lam1 / 4, rel=1e-3)


def test_hessian_run_records_checkpoints(one_thread):
    run = after.hessian_run(8, 1, steps=4, every=2)
    assert run["step"].tolist() == [0, 2, 4] and len(run["lambda_max"]) == 3
    assert run["min |v|"][-1] >= run["min |v|"][0] - 1e-12  # GD on v ⟂ v can only lengthen it


# --- demo 5: same name, different thing ---------------------------------------------------------


def test_pmod_router_weights_at_init_and_bounds():
    x = torch.randn(10, 6)
    assert torch.equal(after.pmod_router_weights(x, "tanh"), torch.ones(10))
    assert torch.allclose(after.pmod_router_weights(x, "sigmoid"), torch.full((10,), 0.5))
    assert torch.allclose(after.pmod_router_weights(x, "softmax"), torch.full((10,), 0.1))
    router = torch.nn.Linear(6, 1)
    w = after.pmod_router_weights(100 * x, "tanh", router)
    assert ((w >= 0.8) & (w <= 1.2)).all()
    with pytest.raises(ValueError, match="mode must be"):
        after.pmod_router_weights(x, "relu")


def test_xft_weights_sum_to_one_and_upcycling_keeps_scale():
    routed, shared = after.xft_routing_weights(torch.randn(9, 7), k=5)
    assert torch.allclose(routed.sum(1) + shared, torch.ones(9), atol=1e-6)
    ratios = after.upcycled_output_ratio()
    assert ratios["XFT"] == pytest.approx(1.0, abs=1e-6)
    assert ratios["shared at 1 + routed"] == pytest.approx(2.0, abs=1e-6)


def test_agr_zeroes_scalar_gradients_and_barely_touches_large_tensors():
    assert after.agr_gradient(torch.tensor([0.7])).item() == 0.0
    report = after.agr_report()
    assert report["scalar gain"] == (1, 1.0, 1.0)
    assert report["v_1"][2] < 0.01 < report["g_2"][2]
