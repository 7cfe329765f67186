"""The computations behind the Mean-only batch norm chapter (wnbook.chapters.mean_only_bn): seeded checks."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from wnbook import stats
from wnbook.chapters import mean_only_bn as mob


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 4), (6, 2, 3, 3)])
def test_eq7_eq8_hold(shape):
    c = mob.check_eq7_eq8(shape, seed=1)
    assert c["forward_error"] < 1e-12  # t̃ = t − μ[t] + b
    assert c["grad_error"] < 1e-12  # ∇t L = ∇t̃ L − μ[∇t̃ L]
    assert c["grad_sum"] < 1e-12
    assert c["bias_grad_error"] < 1e-12


def test_excess_kurtosis_of_known_distributions():
    rng = np.random.default_rng(0)
    size = (200_000, 2)
    assert abs(stats.excess_kurtosis(rng.normal(size=size))) < 0.05
    assert abs(stats.excess_kurtosis(rng.uniform(size=size)) + 1.2) < 0.05  # uniform: −6/5
    assert abs(stats.excess_kurtosis(rng.laplace(size=size)) - 3.0) < 0.3  # Laplace: 3
    # scale- and shift-invariant, column by column
    x = rng.normal(size=(1000, 3))
    assert stats.excess_kurtosis(x * [1, 10, 100] + 5) == pytest.approx(stats.excess_kurtosis(x), abs=1e-9)


@pytest.fixture(scope="module")
def gaussian_t() -> torch.Tensor:
    return torch.randn(3000, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_batch_noise_shapes_and_sizes(gaussian_t):
    n = 16
    z = mob.batch_noise(gaussian_t, n, examples=4, draws=500, seed=0)
    assert z.batch_size == n
    assert z.full.shape == z.mean_only.shape == z.scale.shape == (500, 4 * 16)
    # the mean of n values: RMS about σ/√n (the fixed example adds a little)
    assert z.std()["mean_only"] == pytest.approx(1 / math.sqrt(n), rel=0.2)
    assert (z.scale > 0).all()


def test_batch_noise_respects_samuelson_bound(gaussian_t):
    """The example is in its own batch, so its normalized value |t − μ_B|/σ_B is at most √(n − 1)."""
    n = 4
    t = gaussian_t
    z = mob.batch_noise(t, n, examples=3, draws=300, seed=2)
    order = torch.randperm(len(t), generator=torch.Generator().manual_seed(2))[:3]
    mu, sigma = t.mean(0), t.std(0, unbiased=False)
    z_pop = ((t[order] - mu) / torch.sqrt(sigma**2 + mob.BN_EPS)).reshape(-1).numpy()
    normalized = z.full + z_pop  # (t − μ_B)/σ_B, per draw
    assert np.abs(normalized).max() <= math.sqrt(n - 1) + 1e-6


def test_batch_noise_is_deterministic(gaussian_t):
    a = mob.batch_noise(gaussian_t, 8, examples=2, draws=100, seed=3)
    b = mob.batch_noise(gaussian_t, 8, examples=2, draws=100, seed=3)
    assert np.array_equal(a.full, b.full) and np.array_equal(a.mean_only, b.mean_only)
    with pytest.raises(ValueError, match="batch_size"):
        mob.batch_noise(gaussian_t, 1)


def test_noise_on_the_chapter_network():
    """The chapter's finding at one batch size: full BN's noise heavier-tailed than mean-only BN's."""
    t = mob.noise_preactivations(hidden=64, layer=1, seed=0)
    assert t.shape == (4000, 64)
    k = mob.batch_noise(t, 8, examples=8, draws=1000, seed=0).kurtosis()
    assert abs(k["mean_only"]) < 0.15
    assert k["full"] > k["mean_only"] + 0.15
    assert k["scale"] > 2


def test_init_with_mean_only_bn_sets_only_g_and_matches_batchnorm():
    pair = mob.init_with_mean_only_bn(hidden=8, init_batch=200, seed=1)
    assert pair["followed_by_mean_only_bn"] == 1.0
    assert pair["bias_change"] == 0.0 and pair["g_change"] > 0
    assert pair["gap_init_batch"] < 1e-5
    assert pair["gap_other_batch"] > 1e-3
    assert abs(pair["std_min"] - 1) < 1e-5 and abs(pair["std_max"] - 1) < 1e-5


@pytest.fixture(scope="module")
def tiny_comparison() -> mob.Comparison:
    return mob.training_comparison(
        ("weightnorm_meanonly", "batchnorm"), seeds=(0, 1), epochs=2, max_batches=2
    )


def test_training_comparison_and_fold(tiny_comparison):
    comp = tiny_comparison
    assert comp.errors["batchnorm"].shape == (2, 2)
    assert ((comp.errors["batchnorm"] >= 0) & (comp.errors["batchnorm"] <= 1)).all()
    mean, std = comp.final("weightnorm_meanonly")
    assert 0 <= mean <= 100 and std >= 0
    assert "weight norm + mean-only BN" in comp.table()
    x = torch.randn(50, 1, 40, generator=torch.Generator().manual_seed(0))
    fold = mob.fold_check(comp.models["weightnorm_meanonly"], x)
    assert fold["mean_only_bn_before"] == 5 and fold["weight_normed_before"] == 5
    assert fold["mean_only_bn_after"] == 0 and fold["weight_normed_after"] == 0
    assert fold["max_abs_diff"] <= fold["rounding_bound"]  # float32 rounding, one ε per folded layer
    assert fold["rounding_bound"] == pytest.approx(5 * 2**-23 * fold["max_abs_output"])
    assert fold["same_prediction"] == 1.0


def test_figures_and_widget_build(gaussian_t, tiny_comparison):
    noises = [mob.batch_noise(gaussian_t, n, examples=2, draws=200) for n in (8, 32)]
    fig = mob.plot_noise(noises)
    assert len(fig.axes) == 4
    plt.close(fig)
    fig = mob.plot_comparison(tiny_comparison, title="t")
    plt.close(fig)
    cache = {8: noises[0]}
    widget = mob.noise_widget(gaussian_t, value=8, cache=cache, sizes=(4, 8))
    (slider,) = widget.children[0].children
    assert (slider.description, slider.value) == ("batch size", 8)
    assert cache[8] is noises[0] and cache[4].batch_size == 4  # the missing size was measured
    shown = widget.children[1].children[slider.index]
    assert shown._dom_classes == ("wn-frame-1",) and bytes(shown.value[:4]) == b"\x89PNG"
    fig = mob.draw_noise_frame(noises[0])
    labels = fig.legends[0].get_texts()
    # one legend entry per drawn line, in the line's own colour family (full BN left, mean-only right)
    assert [t.get_text() for t in labels][:3] == [
        "full batch norm: perturbation",
        "Gaussian of full batch norm's spread",
        r"full batch norm: scale factor $\sigma/\sigma_B$",
    ]
    assert all("mean-only" in t.get_text() for t in labels[3:]) and len(labels) == 6
    assert mob.NOISE_COLORS["full"] != mob.NOISE_COLORS["mean_only"]
    plt.close("all")
