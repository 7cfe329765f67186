"""The computations behind the Initialization chapter's figures (wnbook.chapters.initialization)."""

import math

import matplotlib
import numpy as np
import pytest
import torch

import wnlib
from wnbook import models, training
from wnbook import widgets as ww
from wnbook.chapters import initialization as iv

matplotlib.use("Agg")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: see tests/conftest.py


def test_batches_shapes():
    x_init, x_heldout = iv.digits_batches(100)
    assert x_init.shape == (100, 64) and x_heldout.shape == (360, 64)
    images, _ = iv.digits_batches(100, images=True)
    assert images.shape == (100, 1, 8, 8)
    assert torch.equal(images.flatten(1), x_init)


def test_deep_mlp_prefix_does_not_depend_on_depth():
    short, long = models.deep_mlp(3), models.deep_mlp(8)
    for a, b in zip(models.weight_normed_layers(short), models.weight_normed_layers(long), strict=False):
        assert torch.equal(a.weight_v, b.weight_v) and torch.equal(a.bias, b.bias)
    assert len(models.weight_normed_layers(long)) == 8
    assert isinstance(long[-1], wnlib.nn.Linear)  # ends with a pre-activation
    assert models.deep_mlp(3, out_features=10)[-1].out_features == 10


def test_profile_after_data_dependent_init_per_unit():
    x_init, _ = iv.digits_batches()
    model = models.deep_mlp(8)
    wnlib.data_dependent_init(model, x_init, init_scale=0.5)
    p = iv.preactivation_profile(model, x_init)
    assert p.depth == 8
    assert p.max_std_error(0.5) < 1e-4 and p.mean_abs_max.max() < 1e-4
    np.testing.assert_allclose(p.std, 0.5, rtol=1e-4)


def test_profile_of_convnet_is_per_channel():
    x_img, _ = iv.digits_batches(200, images=True)
    convnet = models.small_convnet(channels=4, depth=2)
    wnlib.data_dependent_init(convnet, x_img)
    p = iv.preactivation_profile(convnet, x_img)
    assert p.depth == 3 and p.max_std_error(1.0) < 1e-4
    y = convnet[0](x_img).detach().double()  # channel 0 over batch and positions, by hand
    assert abs(y[:, 0].std(unbiased=False).item() - 1) < 1e-4


def test_cosine_matches_brute_force():
    torch.manual_seed(0)
    model = models.deep_mlp(2, width=7, in_features=5)
    x = torch.randn(6, 5)
    p = iv.preactivation_profile(model, x)
    h = torch.nn.functional.normalize(model[0](x).relu().double(), dim=1)
    c = h @ h.T
    expected = (c.sum() - c.diagonal().sum()) / (6 * 5)
    assert abs(p.cosine[0] - expected.item()) < 1e-12


def test_fixed_scale_is_homogeneous_and_drifts():
    profiles = iv.fixed_scale_profiles(scales=(1.0, 2.0), depth=10)
    f1, f2 = profiles[1.0].per_layer_factor, profiles[2.0].per_layer_factor
    assert f2 / f1 == pytest.approx(2.0, rel=1e-6)  # ReLU nets with b = 0: every g × c gives layer k × c^k
    assert profiles[1.0].drift < 0.1 and profiles[2.0].drift > 10


def test_depth_profiles_settings():
    p = iv.depth_profiles(depth=12, scale=2.0)
    assert set(p) == set(iv.SETTINGS)
    assert p["ddi"].max_std_error(2.0) < 2e-4
    assert p["default"].drift < 1e-3
    assert abs(p["ddi_heldout"].std[0] / 2.0 - 1) < 0.05  # close on held-out data, not exact
    assert p["ddi_heldout"].max_std_error(2.0) > 1e-3


def test_heldout_closer_with_larger_batch():
    hp = iv.heldout_profiles(sizes=(100, 1000), depth=20)
    assert abs(hp[1000].std[-1] - 1) < abs(hp[100].std[-1] - 1)


def test_sharded_init_pools_exactly_and_ranks_disagree():
    s = iv.sharded_init(n_ranks=2, depth=4)
    assert s.pooled_error < 1e-5
    assert s.rank_disagreement > 0.05
    assert len(s.g_per_rank) == 2 and not torch.allclose(s.g_per_rank[0], s.g_per_rank[1])


def test_train_curves_small():
    runs = training.train_curves(depth=4, steps=5)
    assert set(runs) == set(training.INITS)
    for run in runs.values():
        assert len(run["loss"]) == 5 and 0.0 <= run["test_error"] <= 1.0
    with pytest.raises(ValueError, match="unknown init"):
        training.train_curves(inits=("nope",), depth=2, steps=1)


def test_figures_and_widget_build():
    import matplotlib.pyplot as plt

    fixed = iv.fixed_scale_profiles(scales=(1.0, math.sqrt(2.0)), depth=6)
    figs = [
        iv.plot_fixed_scales(fixed, iv.depth_profiles(depth=6)["default"]),
        iv.plot_scale_grid(scales=(0.5, 1.0), depth=6),
        iv.plot_heldout(iv.heldout_profiles(sizes=(100, 200), depth=6)),
        iv.plot_training(training.train_curves(depth=3, steps=12), window=4),
    ]
    assert all(isinstance(f, plt.Figure) for f in figs)
    plt.close("all")
    widget = iv.depth_widget(depths=(5, models.DEPTH), scales=(0.5, 1.0, 2.0))
    depth, scale = widget.children[0].children
    assert (depth.description, depth.value, scale.description, scale.value) == ("depth", 30, "scale s", 1.0)
    assert [label for label, _ in scale.options] == ["0.5", "1", "2"]
    shown = widget.children[1].children[depth.index].children[scale.index]
    assert shown._dom_classes == ("wn-frame-1-1",) and bytes(shown.value[:4]) == b"\x89PNG"
    plt.close("all")
    assert len(iv.WIDGET_DEPTHS) * len(iv.WIDGET_SCALES) <= ww.MAX_FRAMES
    assert models.DEPTH in iv.WIDGET_DEPTHS and 1.0 in iv.WIDGET_SCALES  # the widget's opening frame
    assert iv.scale_label(math.sqrt(2.0)) == "√2" and iv.scale_label(0.5) == "0.5"


def test_running_mean_and_plateau_steps():
    assert np.allclose(iv.running_mean([1, 2, 3, 4], window=2), [1.5, 2.5, 3.5])
    loss = np.r_[np.full(50, 2.3), np.linspace(2.3, 1.0, 20)]
    # steps 1–51 are 2.3; the 4-step mean ending at step 52 is 2.3 − 0.068/4, off by more than 0.01
    assert iv.plateau_steps(loss, level=2.3, band=0.01, window=4) == 51
    assert iv.plateau_steps(np.full(30, 2.3), level=2.3, band=0.01, window=4) == 30
    assert iv.plateau_steps(np.full(30, 1.0), level=2.3, band=0.01, window=4) == 0
    with pytest.raises(ValueError, match="window"):
        iv.running_mean([1.0], window=0)
