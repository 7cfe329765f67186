"""Checks behind the Beyond chapter's figures and claims (wnbook.chapters.beyond); fast, CPU only."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import wnlib
from wnbook import baselines, stats, training
from wnbook.chapters import beyond


def _matrix(seed: int = 0, m: int = 12, n: int = 20) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=gen, dtype=torch.float64) + 0.4


def test_centered_weight_norm_rows_have_zero_mean_and_norm_g():
    v = _matrix()
    g = torch.linspace(0.5, 3.0, v.shape[0], dtype=torch.float64)
    w = baselines.centered_weight_norm(v, g)
    assert torch.allclose(w.mean(dim=1), torch.zeros(v.shape[0], dtype=torch.float64), atol=1e-14)
    assert torch.allclose(baselines.row_norms(w), g, rtol=1e-12)
    # It is eq. 2 on the centered rows, and g=None means g = 1.
    centered = v - v.mean(dim=1, keepdim=True)
    assert torch.allclose(w, wnlib.functional.weight_norm(centered, g), rtol=1e-12)
    ones = torch.ones(v.shape[0], dtype=v.dtype)
    assert torch.allclose(baselines.row_norms(baselines.centered_weight_norm(v)), ones)


def test_centered_weight_norm_keeps_conv_shape_and_has_gradients():
    v = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    g = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: baselines.centered_weight_norm(a, b), (v, g))
    assert baselines.centered_weight_norm(v, g).shape == v.shape


def test_weight_standardization_rows_have_mean_0_std_1_and_equal_scaled_centered_wn():
    v = _matrix(1)
    w = baselines.weight_standardization(v)
    n = v.shape[1]
    assert torch.allclose(w.mean(dim=1), torch.zeros(v.shape[0], dtype=v.dtype), atol=1e-14)
    assert torch.allclose(w.std(dim=1, unbiased=False), torch.ones(v.shape[0], dtype=v.dtype), rtol=1e-12)
    assert torch.allclose(w, math.sqrt(n) * baselines.centered_weight_norm(v), rtol=1e-12)


def test_spectral_norm_has_unit_largest_singular_value_and_rows_at_most_1():
    w = _matrix(2)
    w_sn = baselines.spectral_norm(w)
    sv = baselines.singular_values(w_sn)
    assert sv[0].item() == pytest.approx(1.0, abs=1e-12)
    assert (baselines.row_norms(w_sn) <= 1 + 1e-12).all()
    # A conv weight is normalized as its (out, in·k·k) matrix.
    conv = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    sigma = torch.linalg.matrix_norm(baselines.spectral_norm(conv).reshape(5, -1), ord=2)
    assert sigma.item() == pytest.approx(1.0)


def test_spectral_norm_matches_torch_parametrization():
    torch.manual_seed(0)
    layer = torch.nn.utils.parametrizations.spectral_norm(
        torch.nn.Linear(20, 12, dtype=torch.float64), n_power_iterations=50
    )
    weight = layer.parametrizations.weight.original.detach()
    assert torch.allclose(layer.weight.detach(), baselines.spectral_norm(weight), rtol=1e-8)


def test_power_iteration_increases_to_sigma_max():
    w = _matrix(3, 16, 24)
    sigma = torch.linalg.matrix_norm(w, ord=2).item()
    est = baselines.power_iteration(w, n_iter=200)
    assert (est[1:] >= est[:-1] - 1e-12).all()
    assert (est <= sigma + 1e-10).all()
    assert est[-1].item() == pytest.approx(sigma, rel=1e-8)


def test_weight_norm_fixes_rows_and_frobenius_spectral_norm_fixes_sigma_max():
    w = beyond.spiked_matrix(strength=3.0)
    g = torch.linspace(0.5, 2.0, w.shape[0], dtype=torch.float64)
    w_wn = wnlib.functional.weight_norm(w, g)
    sv = baselines.singular_values(w_wn)
    assert torch.allclose(baselines.row_norms(w_wn), g, rtol=1e-12)
    assert sv.square().sum().item() == pytest.approx(g.square().sum().item(), rel=1e-12)
    assert g.max().item() - 1e-12 <= sv[0].item() <= g.square().sum().sqrt().item() + 1e-12


def test_spiked_matrix_and_centering_removes_a_shared_mean_exactly():
    for direction in ("shared mean", "random"):
        w = beyond.spiked_matrix(m=8, n=16, strength=2.0, direction=direction, seed=4)
        assert w.shape == (8, 16) and w.dtype == torch.float64
    w0 = beyond.spiked_matrix(strength=0.0)
    w3 = beyond.spiked_matrix(strength=3.0, direction="shared mean")
    assert torch.allclose(baselines.centered_weight_norm(w3), baselines.centered_weight_norm(w0), atol=1e-12)
    with pytest.raises(ValueError, match="direction"):
        beyond.spiked_matrix(direction="sideways")


def test_invariance_table_reproduces_ba_et_al_table_1():
    table = beyond.invariance_table()
    for name, row in beyond.BA_TABLE_1.items():
        assert table[name][:6] == row, name
    shift = len(beyond.TRANSFORMS) - 1
    assert table["centered weight norm"][shift] and table["weight standardization"][shift]
    others = ("batch norm", "weight norm", "layer norm", "spectral norm")
    assert not any(table[name][shift] for name in others)
    text = beyond.format_invariance_table(table)
    assert len(text.splitlines()) == len(table) + 1


def test_scale_invariance_of_v():
    out = beyond.scale_invariance(alpha=7.0)
    assert out["loss(v)"] == pytest.approx(out["loss(alpha v)"], rel=1e-12)
    assert out["grad mismatch"] < 1e-10
    assert out["max |cos(v, grad)|"] < 1e-10


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rescaled_training_is_the_same_run(optimizer):
    out = training.rescaled_training(alpha=5.0, optimizer=optimizer, lr=0.05, steps=30)
    assert out["max relative deviation of v"] < 1e-9
    assert out["max relative deviation of loss"] < 1e-9


def test_weight_decay_run_norm_identity_and_equilibrium():
    lr, wd = 0.5, 2e-2
    run = training.weight_decay_run(lr=lr, weight_decay=wd, steps=600)
    assert run["norm_identity"].max() < 1e-10
    ratio = stats.late_rms(run["angle"]) / beyond.predicted_angular_update(lr, wd)
    assert 0.9 < ratio < 1.1
    assert beyond.predicted_angular_update(lr, wd) == pytest.approx(math.sqrt(2 * lr * wd), rel=0.02)


def test_without_weight_decay_the_norm_of_v_never_decreases():
    run = training.weight_decay_run(weight_decay=0.0, steps=200)
    assert (run["norm"][1:] >= run["norm"][:-1] - 1e-12).all()


def test_figures_and_widget_build():
    import matplotlib.pyplot as plt

    fig = beyond.spectra_figure()
    assert len(fig.axes) == 6
    runs = {wd: training.weight_decay_run(weight_decay=wd, steps=150) for wd in (0.0, 1e-2)}
    fig2 = beyond.weight_decay_figure(runs, lr=0.5, window=20)
    assert len(fig2.axes) == 2
    plt.close("all")
    fig3 = beyond.spectra_frame(2.0, "random")
    assert len(fig3.axes) == 2 and "random, s = 2" in fig3.texts[-1].get_text()
    plt.close("all")


def test_every_frame_of_the_spectra_widget_fits_its_fixed_axes():
    for strength in beyond.WIDGET_STRENGTHS:
        for direction in ("shared mean", "random"):
            for w in beyond.normalized_variants(
                beyond.spiked_matrix(strength=strength, direction=direction)
            ).values():
                rows, sv = baselines.row_norms(w), baselines.singular_values(w)
                low, high = beyond.FRAME_ROW_LIMITS
                assert low < rows.min() and rows.max() < high
                low, high = beyond.FRAME_SV_LIMITS
                assert low < sv.min() and sv.max() < high


def test_spectra_widget_has_a_frame_per_strength_and_direction():
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    widget = beyond.spectra_widget(strength=3.0, direction="random")
    strength, direction = widget.children[0].children
    assert [value for _, value in strength.options] == list(beyond.WIDGET_STRENGTHS)
    assert [value for _, value in direction.options] == ["shared mean", "random"]
    view = widget.children[1]
    assert len(view.children) == len(beyond.WIDGET_STRENGTHS)
    assert all(len(stack.children) == 2 for stack in view.children)
    shown = view.children[view.selected_index]
    shown = shown.children[shown.selected_index]
    index = beyond.WIDGET_STRENGTHS.index(3.0)
    assert isinstance(shown, widgets.Image) and shown._dom_classes == (f"wn-frame-{index}-1",)
    assert plt.get_fignums() == []
