"""Log-scale gain in wnlib.experiments: the ``weightnorm_init_log_gain`` variant builds, initializes and
trains; adding it changed neither the grid nor the cache key of any existing run; the comparison's runs
are committed with the book's other runs (wnlib.experiments.log_gain)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
import torch

from wnbook import files
from wnlib import experiments as ex
from wnlib.experiments import __main__ as cli
from wnlib.experiments import log_gain as lg
from wnlib.experiments import training

CACHE = files.committed_cache()
TINY = {"epochs": 1, "max_batches": 3, "init_batch_size": 100}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: see tests/conftest.py


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any run that is not in the cache fails instead of training."""

    def refuse(config, **kwargs):
        raise AssertionError(f"{config} is not in the committed cache {CACHE}")

    monkeypatch.setattr(training, "fit", refuse)


def _weight_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "weight_v")]


# --------------------------------------------------------------------------------------------------
# The variant is a variant: outside the six, with the rate of the one it varies
# --------------------------------------------------------------------------------------------------


def test_the_variant_is_not_among_the_six_and_not_in_any_default_grid():
    assert lg.LOG_GAIN in ex.VARIANTS and lg.LOG_GAIN not in ex.PARAMETERIZATIONS
    assert len(ex.PARAMETERIZATIONS) == 6 and set(ex.PALETTE) == set(ex.PARAMETERIZATIONS)
    from wnlib.experiments.results import _ALL as ALL

    assert lg.LOG_GAIN not in ALL
    configs, _, _ = cli._prepare(cli.parse_args(["--param", "all", "--device", "cpu"]))
    assert [c.param for c in configs] == list(ex.PARAMETERIZATIONS)
    variant = ex.get_parameterization(lg.LOG_GAIN)
    base = ex.get_parameterization(variant.variant_of)
    assert variant.log_gain and not base.log_gain and variant.variant_of == lg.BASELINE
    # the one respect in which it differs
    assert (
        replace(variant, name=base.name, label=base.label, color=base.color, log_gain=False, variant_of=None)
        == base
    )


@pytest.mark.parametrize("preset", list(ex.PRESETS))
def test_the_variant_takes_its_base_learning_rate(preset):
    config = ex.make_config(preset, lg.LOG_GAIN, 3)
    assert config == replace(ex.make_config(preset, lg.BASELINE, 3), param=lg.LOG_GAIN)
    assert ex.make_config(preset, lg.LOG_GAIN, lr=0.01).lr == 0.01


def test_the_cli_takes_the_variant_and_names_it_in_its_help(capsys):
    args = cli.parse_args(["--param", lg.BASELINE, lg.LOG_GAIN, "--seeds", "0", "1", "--device", "cpu"])
    configs, _, _ = cli._prepare(args)
    assert [(c.param, c.seed) for c in configs] == [
        (p, s) for s in (0, 1) for p in (lg.BASELINE, lg.LOG_GAIN)
    ]
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    assert lg.LOG_GAIN in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------------------------------
# Building, initializing, training
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "shape"), [("convnet", (1, 40)), ("mlp", (1, 8, 8)), ("convnet", (1, 8, 8))]
)
def test_every_weight_layer_stores_log_gain(arch, shape):
    model = ex.build_model(arch, shape, 10, lg.LOG_GAIN)
    layers = _weight_layers(model)
    names = [n for n, _ in model.named_parameters()]
    assert layers and all(hasattr(m, "weight_s") for m in layers)
    assert sum(n.endswith("weight_s") for n in names) == len(layers)
    assert not any(n.endswith("_g") for n in names)
    plain = ex.build_model(arch, shape, 10, lg.BASELINE)
    assert [p.shape for p in model.parameters()] == [p.shape for p in plain.parameters()]


def test_data_dependent_init_sets_s_to_the_log_of_the_gain_it_chooses():
    """The same data-dependent init (§3) as the plain gain: the same network function and g = eˢ equal to
    the plain model's g, layer by layer; and the first layer's pre-activations standardized."""
    x = ex.load_dataset("mnist1d").x_train[:500]
    models = {}
    for p in (lg.BASELINE, lg.LOG_GAIN):
        torch.manual_seed(0)
        models[p] = ex.build_model("convnet", (1, 40), 10, p)
        ex.initialize(models[p], p, x)
    for plain, log in zip(
        _weight_layers(models[lg.BASELINE]), _weight_layers(models[lg.LOG_GAIN]), strict=True
    ):
        torch.testing.assert_close(torch.exp(log.weight_s), plain.weight_g, rtol=1e-5, atol=0)
        torch.testing.assert_close(log.weight, plain.weight, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        t = models[lg.LOG_GAIN][0](x)
        torch.testing.assert_close(t.mean((0, 2)), torch.zeros(t.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(t.std((0, 2), unbiased=False), torch.ones(t.shape[1]), atol=1e-3, rtol=0)
        torch.testing.assert_close(models[lg.LOG_GAIN](x), models[lg.BASELINE](x), rtol=1e-4, atol=1e-4)


def test_an_adam_step_moves_s_and_a_short_run_trains():
    data = ex.load_dataset("mnist1d")
    torch.manual_seed(0)
    model = ex.build_model("convnet", data.input_shape, 10, lg.LOG_GAIN)
    ex.initialize(model, lg.LOG_GAIN, data.x_train[:200])
    s0 = [m.weight_s.detach().clone() for m in _weight_layers(model)]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    loss = torch.nn.functional.cross_entropy(model(data.x_train[:100]), data.y_train[:100])
    loss.backward()
    optimizer.step()
    for m, before in zip(_weight_layers(model), s0, strict=True):
        assert m.weight_s.grad is not None and torch.isfinite(m.weight_s.grad).all()
        assert not torch.equal(m.weight_s, before)

    config = ex.make_config("cpu-small", lg.LOG_GAIN, 0, **{**TINY, "max_batches": 10})
    trained, result = ex.fit(config, device="cpu", quiet=True)
    assert len(result.epochs) == 1 and not result.diverged
    # after 10 steps, better than chance on the test set: error below 90%, cross-entropy below log 10
    assert result.epochs[0].test_error < 0.9 and result.epochs[0].test_loss < math.log(10)
    assert all(hasattr(m, "weight_s") for m in _weight_layers(trained))


def test_summaries_label_the_variant(tmp_path):
    config = ex.make_config("cpu-small", lg.LOG_GAIN, 0, **TINY)
    results = [ex.train(config, device="cpu", quiet=True, cache_dir=str(tmp_path))]
    results.append(
        ex.train(replace(config, param=lg.BASELINE), device="cpu", quiet=True, cache_dir=str(tmp_path))
    )
    rows = ex.summarize(results)
    assert [r["param"] for r in rows] == [lg.BASELINE, lg.LOG_GAIN]
    assert rows[1]["label"] == ex.VARIANTS[lg.LOG_GAIN].label
    assert ex.train(config, device="cpu", quiet=True, cache_dir=str(tmp_path)).cached


# --------------------------------------------------------------------------------------------------
# Cache keys: unchanged for every existing run; the comparison's runs committed
# --------------------------------------------------------------------------------------------------


def _committed_classification_runs() -> list[tuple[Path, dict]]:
    """(file, stored run) of every committed run of the classification experiments."""
    names = {f.name for f in fields(ex.TrainConfig)}
    out = []
    for path in sorted((CACHE / "results").glob("*.json")):
        stored = json.loads(path.read_text())
        if isinstance(stored.get("config"), dict) and set(stored["config"]) == names:
            out.append((path, stored))
    return out


def test_every_committed_classification_run_is_still_found_under_its_key():
    """The key of each committed run, recomputed from its stored configuration by today's code, is its
    file's name: the variant added no field to the configuration and changed no existing key."""
    runs = _committed_classification_runs()
    params = {stored["config"]["param"] for _, stored in runs}
    assert set(ex.PARAMETERIZATIONS) <= params  # the chapter's six are among them
    for path, stored in runs:
        config = ex.TrainConfig(**stored["config"])
        assert asdict(config) == stored["config"]
        key = training.cache_key(config, torch.device(stored["device"]), stored["world_size"])
        assert path.name == f"{key}.json"
        assert training.cached_result(config, device="cpu", cache_dir=str(CACHE)) is not None


def test_the_comparison_is_committed_and_its_baseline_is_the_chapters_runs(no_training):
    runs = lg.runs(CACHE, quiet=True)
    assert [r.config for r in runs] == lg.configs() and all(r.cached for r in runs)
    assert {r.device for r in runs} == {"cpu"} and {r.world_size for r in runs} == {1}
    base = {r.config.seed: r for r in runs if r.config.param == lg.BASELINE}
    log = {r.config.seed: r for r in runs if r.config.param == lg.LOG_GAIN}
    assert sorted(base) == sorted(log) == list(lg.SEEDS)
    for seed in lg.SEEDS:
        assert log[seed].config == replace(base[seed].config, param=lg.LOG_GAIN)
        assert [(e.lr, e.beta1) for e in log[seed].epochs] == [(e.lr, e.beta1) for e in base[seed].epochs]
    # the baseline runs are the chapter's main grid's: the same configurations, the same cache entries
    main = {ex.make_config("cpu-small", lg.BASELINE, s) for s in lg.SEEDS}
    assert {r.config for r in base.values()} == main


@pytest.mark.slow
def test_a_committed_log_gain_run_is_reproduced_by_training_it_again(retrain_matches_cache):
    """Retrain seed 0 of the log-gain runs in full (about 15 s on one core) and compare, as for the
    chapter's other runs: its first epoch to float precision (the cache is genuine), the final test error
    within a point (float rounding on another CPU grows over 20 epochs into a different final network).

    Like the chapter's runs they were trained with one thread and torch's default CPU kernels (not the
    notebooks' AVX2 environment, under which the first epoch already differs in the fourth digit)."""
    retrain_matches_cache(ex.make_config(lg.PRESET, lg.LOG_GAIN, lg.SEEDS[0]), CACHE)
