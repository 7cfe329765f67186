"""The Experiments chapter (wnbook.chapters.experiments): its committed cache is complete and genuine, and the
statistics behind its statements are computed right."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from wnbook import files
from wnbook.chapters import experiments as vx
from wnbook.style import LABELS
from wnlib import experiments as ex
from wnlib.experiments import EpochResult, RunResult, training

CACHE = files.committed_cache()
REGENERATE = (
    "is missing from the committed cache book/wnbook/data/experiments (a new wnlib version, results "
    "format or preset changes the cache key): delete the folder and re-execute book/experiments.ipynb "
    "(about 15 minutes on 2 CPU cores), then commit the folder and the notebook"
)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any run that is not in the cache fails instead of training."""

    def refuse(config, **kwargs):
        raise AssertionError(f"{config} {REGENERATE}")

    monkeypatch.setattr(training, "fit", refuse)


@pytest.fixture(scope="module")
def cached() -> dict:
    return {
        "main": vx.main_grid(CACHE),
        "lr": vx.lr_grid(CACHE),
        "ablation": vx.beta1_ablation(CACHE),
    }


def test_committed_cache_holds_every_run_and_nothing_else(no_training):
    main, lr_runs = vx.main_grid(CACHE), vx.lr_grid(CACHE)
    ablation, costs = vx.beta1_ablation(CACHE), vx.epoch_costs(CACHE)
    assert len(main) == len(ex.PARAMETERIZATIONS) * len(vx.SEEDS)
    assert all(len(runs) == len(ex.PARAMETERIZATIONS) * len(vx.LR_SEEDS) for runs in lr_runs.values())
    assert len(ablation) == len(vx.SEEDS)
    assert [row["param"] for row in costs] == list(ex.PARAMETERIZATIONS)
    every = [*main, *ablation, *(r for runs in lr_runs.values() for r in runs)]
    assert all(r.cached for r in every)
    assert {r.config for r in every} == set(vx.configs())
    assert {r.device for r in every} == {"cpu"} and {r.world_size for r in every} == {1}
    # the runs (each once), the timing table, the log-gain runs (their baseline is the chapter's) and the
    # VAE (§5.2) and DQN (§5.4) chapters' runs, which share the cache directory: nothing unused is committed
    from wnlib.experiments import dqn, log_gain, vae

    vae_runs = len(vae.VAE_PRESETS["vae-small"]["seeds"]) * len(vae.VAE_PARAMS)
    dqn_runs = (len(dqn.DQN_PRESETS["dqn-small"]["seeds"]) + 1) * len(dqn.DQN_PARAMS)  # + the paper's rates
    log_gain_runs = len(set(log_gain.configs()) - set(vx.configs()))
    expected = len(vx.configs()) + 1 + log_gain_runs + vae_runs + dqn_runs
    assert len(list((CACHE / "results").glob("*.json"))) == expected


def test_the_cache_key_holds_no_path_or_machine(tmp_path):
    """The committed files are found from any checkout: the key is the configuration, the device type, the
    number of ranks and the versions, nothing else."""
    config = ex.make_config(vx.PRESET, "normal", 0)
    key = training.cache_key(config, torch.device("cpu"), 1)
    assert (CACHE / "results" / f"{key}.json").exists()
    assert training.cached_result(config, device="cpu", cache_dir=str(tmp_path)) is None


@pytest.mark.slow
def test_a_cached_run_is_reproduced_by_training_it_again(retrain_matches_cache):
    """Retrain the cheapest cached configuration in full (about 10-15 s on one core) and compare.

    Its first epoch must match to float precision (the cache is genuine: nothing else produces that
    fingerprint); the final error only within a point, because a change at the level of float rounding
    (another CPU, or a change in the core) grows over 20 epochs of training into a different final
    network, about as different as another seed's.
    """
    config = ex.make_config(vx.PRESET, "normal", 0)
    stored = training.cached_result(config, device="cpu", cache_dir=str(CACHE))
    assert stored is not None, f"{config} {REGENERATE}"
    retrain_matches_cache(config, CACHE)


# --------------------------------------------------------------------------------------------------
# Statistics on synthetic runs
# --------------------------------------------------------------------------------------------------


def fake_run(param: str, seed: int, test_errors: list[float], train_losses: list[float] | None = None):
    config = ex.make_config(vx.PRESET, param, seed, epochs=len(test_errors))
    losses = train_losses or [1.0] * len(test_errors)
    epochs = [
        EpochResult(i + 1, loss, 0.0, 0.0, err, 0.001, 0.9, 1.0, 0.1)
        for i, (err, loss) in enumerate(zip(test_errors, losses, strict=True))
    ]
    return RunResult(config, epochs, "cpu", 1, "test", 0.0)


def test_difference_is_mean_minus_mean_with_the_standard_error():
    runs = [fake_run("normal", s, [e]) for s, e in enumerate([0.04, 0.05, 0.06])]
    runs += [fake_run("batchnorm", s, [e]) for s, e in enumerate([0.02, 0.02, 0.02])]
    d = vx.difference(runs, "batchnorm", "normal")
    assert d.mean_a == pytest.approx(2.0) and d.mean_b == pytest.approx(5.0)
    assert d.diff == pytest.approx(-3.0)
    assert d.se == pytest.approx(math.sqrt(1.0**2 / 3))  # std of (4, 5, 6) is 1; of (2, 2, 2) is 0
    assert d.a_better and not d.within_noise and d.verdict() == "batchnorm lower"
    close = vx.difference(runs, "normal", "normal")
    assert close.diff == 0 and close.within_noise and close.verdict() == "within noise"


def test_compare_ranks_only_the_five_rows_of_table_1():
    errors = {"normal": 0.05, "weightnorm": 0.01, "weightnorm_init": 0.04, "batchnorm": 0.02}
    errors |= {"meanonly_bn": 0.03, "weightnorm_meanonly": 0.06}
    runs = [fake_run(p, s, [e + 0.001 * s]) for p, e in errors.items() for s in range(3)]
    rows = {r["param"]: r for r in vx.compare(runs)}
    assert rows["weightnorm"]["rank"] is None and math.isnan(rows["weightnorm"]["paper_error"])
    assert [rows[p]["rank"] for p in ("batchnorm", "meanonly_bn", "weightnorm_init", "normal")] == [
        1,
        2,
        3,
        4,
    ]
    assert rows["weightnorm_meanonly"]["rank"] == 5 and rows["weightnorm_meanonly"]["paper_rank"] == 1
    assert rows["normal"]["error_mean"] == pytest.approx(5.1)
    assert vx.ranking(runs)[0] == "weightnorm"
    lines = vx.comparison_markdown(list(rows.values())).splitlines()
    # the key columns first (they stay on screen at phone width): the parameterization, its error here
    assert lines[0].startswith("| parameterization | test error here | rank here |")
    weight_norm = next(line for line in lines if line.startswith("| weight norm |"))
    assert weight_norm.startswith("| weight norm | 1.10 ± 0.10 % | — |") and weight_norm.endswith("| — | — |")


def test_mean_curve_pads_a_diverged_run_and_faster_compares_means():
    a = fake_run("weightnorm", 0, [0.5, 0.2, 0.1], [1.0, 0.5, 0.2])
    stopped = RunResult(a.config, a.epochs[:1], "cpu", 1, "test", 0.0)
    curve = vx.mean_curve([a, stopped])
    np.testing.assert_allclose(curve, [0.5, 0.2, 0.1])
    b = fake_run("normal", 0, [0.5, 0.2, 0.1], [0.9, 0.6, 0.1])
    assert vx.faster([a, b], "weightnorm", "normal").tolist() == [False, True, False]


# --------------------------------------------------------------------------------------------------
# The chapter's figures draw from the committed cache
# --------------------------------------------------------------------------------------------------


def test_figures_and_widget_draw(cached):
    rows = vx.compare(cached["main"])
    fig = vx.plot_comparison(rows, "title")
    vx.add_seeds(fig.axes[1], cached["main"], rows)
    figs = [
        fig,
        vx.plot_curves(cached["main"], "title"),
        vx.plot_lr_sensitivity(cached["lr"], "title"),
        vx.plot_lr_curves(cached["lr"], "title"),
    ]
    assert all(len(f.axes) >= 1 for f in figs)
    plt.close("all")


def test_lr_widget_has_a_frame_per_parameterization_and_rate(cached):
    """Every (parameterization, rate) of the cached grid is a frame; the initial one is the one asked for."""
    import ipywidgets as widgets

    widget = vx.lr_widget(cached["lr"], "normal", 0.03)
    choose, rate = widget.children[0].children
    assert choose.value == "normal" and rate.value == 0.03
    assert [label for label, _ in choose.options] == [LABELS[p] for p in ex.PARAMETERIZATIONS]
    assert [value for _, value in rate.options] == list(vx.LEARNING_RATES)
    view = widget.children[1]
    assert len(view.children) == len(ex.PARAMETERIZATIONS)
    assert all(len(stack.children) == len(vx.LEARNING_RATES) for stack in view.children)
    shown = view.children[view.selected_index]
    shown = shown.children[shown.selected_index]
    assert isinstance(shown, widgets.Image) and shown._dom_classes == ("wn-frame-0-3",)
    assert plt.get_fignums() == []  # every frame's figure was closed after it was stored


def test_lr_frame_refuses_a_rate_or_parameterization_not_in_the_grid(cached):
    with pytest.raises(ValueError, match="lr 0.1 is not in the learning-rate grid"):
        vx.lr_frame(cached["lr"], "normal", 0.1)
    with pytest.raises(ValueError, match="param 'bogus' is not among"):
        vx.lr_frame(cached["lr"], "bogus", 0.03)


def test_lr_grid_contains_the_main_grid_at_the_preset_rates(cached):
    """The preset's rate of each parameterization is one of the grid's: those runs are shared."""
    rates = ex.PRESETS[vx.PRESET]["learning_rates"]
    main = {(r.config.param, r.config.seed): r for r in cached["main"]}
    for p, lr in rates.items():
        assert lr in vx.LEARNING_RATES
        for r in cached["lr"][lr]:
            if r.config.param == p:
                assert r.config == main[(p, r.config.seed)].config
                assert r.final_test_error == main[(p, r.config.seed)].final_test_error
