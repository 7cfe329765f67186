"""The computations behind the Theory chapter's figures (wnbook.chapters.theory): fast, seeded checks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from wnbook import datasets, training
from wnbook.chapters import theory as th

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: see tests/conftest.py


def test_check_gradients_eq2_to_4():
    check = th.check_gradients(k=6, n=15, g=-0.8, seed=3)
    assert abs(check.norm_w - abs(check.g)) < 1e-12  # eq. 2: ‖w‖ = |g|
    errors = check.errors()
    assert errors["eq. 4 vs eq. 3"] < 1e-12
    assert errors["finite differences"] < 1e-8
    assert errors["torch autograd"] < 1e-12
    assert errors["wnlib.functional"] < 1e-12
    assert abs(check.cos_grad_v_v) < 1e-12  # ∇v ⟂ v


def test_neuron_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    w, x, t = rng.normal(size=4), rng.normal(size=(7, 4)), rng.normal(size=7)
    _, grad = th.neuron_loss(w, 0.2, x, t)
    h = 1e-6
    fd = [
        (th.neuron_loss(w + h * e, 0.2, x, t)[0] - th.neuron_loss(w - h * e, 0.2, x, t)[0]) / (2 * h)
        for e in np.eye(4)
    ]
    np.testing.assert_allclose(grad, fd, atol=1e-9)


@pytest.mark.parametrize("theta", [0.0, 45.0, 90.0, 150.0, 180.0])
@pytest.mark.parametrize("norm_v", [0.5, 1.0, 2.5])
def test_geometry_projects_and_scales(theta, norm_v):
    g = 1.3
    geo = th.geometry(theta, norm_v, g=g)
    assert abs(np.linalg.norm(geo["w"]) - g) < 1e-12
    assert abs(geo["grad_v"] @ geo["v"]) < 1e-12
    np.testing.assert_allclose(geo["grad_w_along_w"] + geo["grad_w_orth"], geo["grad_w"], atol=1e-15)
    np.testing.assert_allclose(geo["grad_v"], g / norm_v * geo["grad_w_orth"], atol=1e-12)


def test_sgd_step_obeys_pythagoras():
    for lr in (0.01, 0.5, 20.0):
        step = th.sgd_step_growth(lr=lr, seed=2)
        assert abs(step["norm_v_new"] - step["pythagoras"]) < 1e-12 * step["norm_v_new"]
        assert step["norm_v_new"] > step["norm_v"]


def test_lr_runs_small():
    wn = training.lr_runs([1.0, 100.0], "weightnorm", steps=40)
    normal = training.lr_runs([1.0], "normal", steps=5)
    for run in wn:
        assert run.loss.shape == run.norm_v.shape == run.c.shape == (40,)
        assert np.all(np.diff(run.norm_v) >= -1e-6 * run.norm_v[1:])  # ‖v‖ never shrinks under SGD
        assert run.pythagoras_error < 1e-4
        assert np.isfinite(run.final_loss)
    # same data and initial v: the first step's c is proportional to the learning rate
    assert abs(wn[1].c[0] / wn[0].c[0] - 100.0) < 1e-3
    assert wn[1].norm_v[-1] > wn[0].norm_v[-1]
    assert normal[0].norm_v.size == 0 and np.isnan(normal[0].pythagoras_error)


def test_whiten_gives_identity_covariance():
    x, _ = datasets.digit_rows(whole=True)
    xw = th.whiten(x.double().numpy(), k=10)
    assert xw.shape == (1797, 10)
    np.testing.assert_allclose(xw.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(xw.T @ xw / len(xw), np.eye(10), atol=1e-10)


def test_bn_equals_wn_on_whitened_inputs_only():
    x, _ = datasets.digit_rows(whole=True)
    whitened = th.bn_wn_single_neuron(th.whiten(x.double().numpy(), k=12), n_directions=20)
    raw = th.bn_wn_single_neuron(x.double().numpy(), n_directions=20)
    np.testing.assert_allclose(whitened["sigma_over_norm"], 1.0, atol=1e-9)
    assert whitened["max_abs_diff"] < 1e-4
    assert raw["max_abs_diff"] > 0.5


def test_minibatch_noise_bn_noisy_wn_deterministic():
    torch.manual_seed(0)
    nets = th.minibatch_noise_nets(hidden=16, seed=1)
    bn = th.measure_minibatch_noise(nets["batchnorm"], example=5, batches=20, batch_size=16, seed=1)
    wn = th.measure_minibatch_noise(nets["weightnorm"], example=5, batches=20, batch_size=16, seed=1)
    n_bn = sum(p.numel() for p in nets["batchnorm"].parameters())
    assert bn.grad.shape == (20, n_bn) and wn.grad.shape[0] == 20
    assert np.ptp(wn.logit) < 1e-6 and wn.grad_rel_dev.max() < 1e-6
    assert bn.logit_std > 1e-3 and bn.grad_rel_dev.mean() > 1e-2


def test_figures_draw():
    wn = training.lr_runs([0.3, 30.0], "weightnorm", steps=15)
    normal = training.lr_runs([0.3, 30.0], "normal", steps=15)
    x, _ = datasets.digit_rows(whole=True)
    res = th.bn_wn_single_neuron(x.double().numpy(), n_directions=5)
    nets = th.minibatch_noise_nets(hidden=8)
    noise = [
        th.measure_minibatch_noise(nets[k], batches=5, batch_size=8) for k in ("batchnorm", "weightnorm")
    ]
    figs = [
        th.plot_geometry([(60, 2.0), (150, 1.0)]),
        th.plot_lr_runs(wn, normal, show=[0.3, 30.0]),
        th.plot_bn_equivalence(res, res),
        th.plot_minibatch_noise(*noise),
    ]
    for fig in figs:
        fig.canvas.draw()
    plt.close("all")
    plt.close("all")


def _shown(box):
    view = box.children[1]
    while hasattr(view, "selected_index"):
        view = view.children[view.selected_index]
    return view


def test_geometry_widget_frames_match_their_controls():
    box = th.geometry_widget(theta=60, norm_v=2.0)
    theta, norm_v = box.children[0].children
    assert [v for _, v in theta.options] == list(th.GEOMETRY_THETAS)
    assert [v for _, v in norm_v.options] == list(th.GEOMETRY_NORMS)
    assert len(th.GEOMETRY_THETAS) * len(th.GEOMETRY_NORMS) <= 64
    # the frame shown first is the one drawn for the initial values (θ = 60° is index 2, ‖v‖ = 2 index 2)
    assert _shown(box)._dom_classes == ("wn-frame-2-2",)
    # each frame's title names the setting it was drawn for
    fig = th.draw_geometry_frame(120, 1.0)
    assert "θ = 120°" in fig.axes[0].get_title() and "‖v‖ = 1," in fig.axes[0].get_title()
    plt.close("all")
    with pytest.raises(ValueError, match="not among its options"):
        th.geometry_widget(theta=45)


def test_lr_widget_one_frame_per_precomputed_run():
    wn = training.lr_runs([0.3, 30.0], "weightnorm", steps=15)
    normal = training.lr_runs([0.3, 30.0], "normal", steps=15)
    box = th.lr_widget(wn, normal, value=30.0)
    (slider,) = box.children[0].children
    assert [v for _, v in slider.options] == [0.3, 30.0]
    assert _shown(box)._dom_classes == ("wn-frame-1",)
    assert "lr = 30" in th.draw_lr_frame(wn, normal, 30.0).axes[0].get_title()
    with pytest.raises(ValueError, match="no precomputed run at lr = 3"):
        th.draw_lr_frame(wn, normal, 3.0)
    with pytest.raises(ValueError, match="normal runs at"):
        th.lr_widget(wn, normal[:1])
    plt.close("all")


def test_whitened_ratios_fall_in_one_histogram_bar():
    x, _ = datasets.digit_rows(whole=True)
    whitened = th.bn_wn_single_neuron(th.whiten(x.double().numpy(), k=12), n_directions=20)
    fig = th.plot_bn_equivalence(whitened, whitened)
    bars = [p for p in fig.axes[1].patches if p.get_height() > 0]  # both histograms (same data twice)
    assert [(round(p.get_x() + p.get_width() / 2, 9), p.get_height()) for p in bars] == [(1.0, 20)] * 2
    plt.close(fig)


def test_fmt_small():
    assert th.fmt_small(3e-17, 1e-12) == "< 1e-12"
    assert th.fmt_small(2.5e-3, 1e-12) == "2.5e-03"
