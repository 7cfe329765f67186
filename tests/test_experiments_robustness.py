"""The experiments' cache and CLI never lose or poison a run (issue 10), and the paper preset's learning
rates are the paper's (§5.1, issue 13).

- a cache entry that does not validate is a miss: retrained, atomically replaced, reported in one line;
- bad arguments fail up front (status 2, one line on stderr) before any data is loaded or any training;
- every place a run writes to is checked before training;
- a diverged run is marked, stored as strict JSON and shown as diverged.

Runs are tiny (digits, one epoch of two minibatches).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from wnbook import files
from wnbook.chapters import experiments as vx
from wnlib import experiments as ex
from wnlib.experiments import __main__ as cli
from wnlib.experiments import cache as cache_mod
from wnlib.experiments import training as train_mod

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--preset", "cpu-digits", "--param", "normal", "--epochs", "1", "--max-batches", "2", "--quiet"]
COMMITTED = files.committed_cache()


def strict_json(text: str):
    """json.loads that refuses NaN and ±Infinity (not JSON)."""

    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def cli_run(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main([*TINY, *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def stored(tmp_path, capsys) -> Path:
    """A tmp cache holding one valid entry of the TINY run; returns the entry's file."""
    rc, _, err = cli_run(capsys, "--cache-dir", str(tmp_path))
    assert rc == 0 and err == ""
    (file,) = (tmp_path / "results").glob("*.json")
    return file


# --------------------------------------------------------------------------------------------------
# 1. A cache entry that does not validate is a miss, retrained and atomically replaced
# --------------------------------------------------------------------------------------------------


def _damage(file: Path, kind: str) -> None:
    entry = json.loads(file.read_text())
    if kind == "empty object":
        file.write_text("{}")
    elif kind == "empty list":
        file.write_text("[]")
    elif kind == "missing field":
        del entry["device"]
        file.write_text(json.dumps(entry))
    elif kind == "missing epoch field":
        del entry["epochs"][0]["test_error"]
        file.write_text(json.dumps(entry))
    elif kind == "no epochs":
        entry["epochs"] = []
        file.write_text(json.dumps(entry))
    elif kind == "not UTF-8":
        file.write_bytes(b"\xff\xfe\x00garbage\x80")
    elif kind == "truncated":
        file.write_text(file.read_text()[:50])
    elif kind == "other config":
        entry["config"]["seed"] = 7
        file.write_text(json.dumps(entry))
    elif kind == "other device":
        entry["device"] = "cuda"
        file.write_text(json.dumps(entry))
    elif kind == "other version":
        entry["wnlib_version"] = "0.0.1"
        file.write_text(json.dumps(entry))
    elif kind == "empty directory":
        file.unlink()
        file.mkdir()
    elif kind == "directory":
        file.unlink()
        file.mkdir()
        (file / "inside.txt").write_text("x")
    else:
        raise AssertionError(kind)


DAMAGE = [
    "empty object",
    "empty list",
    "missing field",
    "missing epoch field",
    "no epochs",
    "not UTF-8",
    "truncated",
    "other config",
    "other device",
    "other version",
    "empty directory",
    "directory",
]


@pytest.mark.parametrize("kind", DAMAGE)
def test_an_invalid_cache_entry_is_retrained_replaced_and_reported_in_one_line(stored, capsys, kind):
    good = strict_json(stored.read_text())
    _damage(stored, kind)
    rc, out, err = cli_run(capsys, "--cache-dir", str(stored.parents[1]))
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"note: cache entry {stored} "), err
    assert "retrained and replaced" in lines[0]
    assert "(cached)" not in out and "## Summary" in out
    # replaced by a valid entry of the same run, which the next run reads back without a word
    assert stored.is_file()
    again = strict_json(stored.read_text())
    assert again["config"] == good["config"] and again["epochs"][0]["epoch"] == 1
    rc, out, err = cli_run(capsys, "--cache-dir", str(stored.parents[1]))
    assert rc == 0 and err == "" and "(cached)" in out
    if kind == "directory":  # moved aside, not deleted
        assert [p.name for p in stored.parent.glob("*.invalid.*/*")] == [stored.name]


@pytest.mark.parametrize("kind", ["empty object", "no epochs", "other config", "not UTF-8"])
def test_the_library_treats_an_invalid_entry_as_a_miss_with_a_warning(stored, kind, monkeypatch):
    config = ex.make_config("cpu-digits", "normal", 0, epochs=1, max_batches=2)
    cache = str(stored.parents[1])
    assert train_mod.cached_result(config, device="cpu", cache_dir=cache) is not None
    _damage(stored, kind)
    with pytest.warns(ex.CacheEntryInvalid, match="treated as a miss"):
        assert train_mod.cached_result(config, device="cpu", cache_dir=cache) is None
    with pytest.warns(ex.CacheEntryInvalid):
        result = ex.train(config, device="cpu", quiet=True, cache_dir=cache)
    assert not result.cached and len(result.epochs) == 1
    assert ex.train(config, device="cpu", quiet=True, cache_dir=cache).cached


def test_a_run_without_epochs_is_never_a_result():
    config = ex.make_config("cpu-digits", "normal", 0, epochs=2)
    run = ex.RunResult(config, [ex.EpochResult(1, 1.0, 0.5, 1.0, 0.5, 0.1, 0.9, 1.0, 0.1)], "cpu", 1, "x", 0)
    with pytest.raises(ValueError, match="no epochs"):
        ex.RunResult.from_dict({**run.to_dict(), "epochs": []})
    with pytest.raises(ValueError, match="1 epochs of 2, and the run did not diverge"):
        ex.RunResult.from_dict(run.to_dict())
    with pytest.raises(ValueError, match="missing field"):
        ex.RunResult.from_dict({"config": run.to_dict()["config"]})


def test_an_entry_is_written_atomically_in_its_own_directory(tmp_path, monkeypatch):
    file = cache_mod.save_result("k", {"a": 1}, tmp_path)
    replaced = []
    real = os.replace

    def recording(src, dst):
        replaced.append((Path(src), Path(dst)))
        return real(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", recording)
    cache_mod.save_result("k", {"a": 2}, tmp_path)
    ((src, dst),) = replaced
    assert dst == file and src.parent == file.parent and src != file
    assert json.loads(file.read_text()) == {"a": 2}

    def failing(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        cache_mod.save_result("k", {"a": 3}, tmp_path)
    assert json.loads(file.read_text()) == {"a": 2}  # the old entry intact, no temporary file left
    assert sorted(p.name for p in file.parent.iterdir()) == ["k.json"]


def test_an_invalid_timing_table_is_measured_again(tmp_path):
    kw = {"repeats": 1, "quiet": True, "cache_dir": tmp_path, "max_batches": 2, "init_batch_size": 100}
    rows = ex.benchmark_epochs("cpu-digits", ["normal"], **kw)
    (file,) = (tmp_path / "results").glob("*.json")
    file.write_text('{"rows": []}')
    with pytest.warns(ex.CacheEntryInvalid, match="measured again"):
        again = ex.benchmark_epochs("cpu-digits", ["normal"], **kw)
    assert [r["param"] for r in again] == [r["param"] for r in rows] == ["normal"]
    assert strict_json(file.read_text())["rows"][0]["param"] == "normal"


def test_every_committed_entry_validates_and_keeps_its_key():
    """The stricter reading accepts every run the Experiments chapter reads, and the keys did not move
    (cpu-small's rates are unchanged; the file of normal, seed 0 is where it always was)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ex.CacheEntryInvalid)
        runs = [train_mod.cached_result(c, device="cpu", cache_dir=str(COMMITTED)) for c in vx.configs()]
    assert all(r is not None and r.cached and not r.diverged for r in runs)
    config = ex.make_config("cpu-small", "normal", 0)
    assert train_mod.cache_key(config, torch.device("cpu"), 1) == "aed795796434b192f6dd214d"


# --------------------------------------------------------------------------------------------------
# 2. Arguments checked up front: status 2 and one line, before any data is loaded
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded although the arguments are invalid")

    monkeypatch.setattr(train_mod, "load_dataset", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0"], r"argument --width: expected a positive finite number, got '0'"),
        (["--width", "-2"], r"argument --width: expected a positive finite number, got '-2'"),
        (["--lr", "-0.1"], r"argument --lr: expected a positive finite number, got '-0.1'"),
        (["--lr", "nan"], r"argument --lr: expected a positive finite number, got 'nan'"),
        (["--lr", "inf"], r"argument --lr: expected a positive finite number"),
        (["--threads", "0"], r"argument --threads: expected a positive integer, got '0'"),
        (["--max-batches", "0"], r"argument --max-batches: expected a positive integer, got '0'"),
        (["--batch-size", "0"], r"argument --batch-size: expected a positive integer"),
        (["--epochs", "-1"], r"argument --epochs: expected a positive integer"),
        (["--arch", "paper_cnn"], r"dataset digits: architecture paper_cnn needs at least 12 positions"),
        (["--dataset", "svhn"], r"valid datasets"),
    ],
)
def test_bad_arguments_fail_up_front_in_one_line(tmp_path, capsys, no_data, args, message):
    rc, out, err = cli_run(capsys, "--cache-dir", str(tmp_path), *args)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_cuda_without_cuda_fails_up_front(tmp_path, capsys, no_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, out, err = cli_run(capsys, "--cache-dir", str(tmp_path), "--device", "cuda")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "device 'cuda': CUDA is not available here" in err and "use device 'cpu'" in err
    with pytest.raises(ValueError, match="CUDA is not available"):
        ex.fit(ex.make_config("cpu-digits", "normal", epochs=1), device="cuda")


def test_a_batch_larger_than_the_split_fails_after_loading_before_training(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built although the batch cannot fit")

    monkeypatch.setattr(train_mod, "build_model", refuse)
    rc, out, err = cli_run(capsys, "--cache-dir", str(tmp_path), "--batch-size", "1438")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "batch_size 1438 is larger than the training split of digits" in err
    assert "1437 training examples" in err and "at most 1437" in err
    rc, _, err = cli_run(
        capsys, "--cache-dir", str(tmp_path), "--batch-size", "1200", "--split", "validation"
    )
    assert rc == 2 and "validation split: 1150 training examples" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 0}, "width must be a positive finite number, got 0"),
        ({"lr": math.nan}, "lr must be a positive finite number, got nan"),
        ({"max_batches": 0}, "max_batches must be a positive integer, got 0"),
        ({"epochs": 2.5}, "epochs must be a positive integer, got 2.5"),
        ({"beta2": 1.0}, r"beta2 must be a number in \[0, 1\), got 1.0"),
        ({"init_scale": math.inf}, "init_scale must be a positive finite number"),
        ({"arch": "paper_cnn"}, "dataset digits: architecture paper_cnn needs at least 12"),
    ],
)
def test_a_config_checks_its_fields(overrides, message):
    with pytest.raises(ValueError, match=message):
        ex.make_config("cpu-digits", "normal", **overrides)


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_the_static_input_shapes_are_the_data_sets(name):
    assert ex.load_dataset(name).input_shape == ex.INPUT_SHAPES[name]


# --------------------------------------------------------------------------------------------------
# 3. Where a run writes is checked before training
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained although the output cannot be written")

    monkeypatch.setattr(cli, "fit", refuse)
    monkeypatch.setattr(cli, "train", refuse)


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--cache-dir", "{blocked}"], "--cache-dir"),
        (["--cache-dir", "{blocked}", "--no-cache"], "--cache-dir"),
        (["--cache-dir", "{ok}", "--save-model", "{blocked}"], "--save-model"),
        (["--cache-dir", "{ok}", "--json", "{blocked}/r.json"], "--json"),
        (["--cache-dir", "{ok}", "--json", "{ok}"], "--json"),
    ],
)
def test_an_unwritable_output_fails_before_training(tmp_path, capsys, no_training, args, what):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")  # nothing, not even root, can create a directory below a file
    args = [a.format(blocked=blocked / "sub", ok=tmp_path / "ok") for a in args]
    rc, out, err = cli_run(capsys, *args)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {what}: ")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_cache_dir_fails_before_training(tmp_path, capsys, no_training):
    (tmp_path / "results").mkdir()
    (tmp_path / "results").chmod(0o500)
    try:
        rc, _, err = cli_run(capsys, "--cache-dir", str(tmp_path), "--no-cache")
    finally:
        (tmp_path / "results").chmod(0o700)
    assert rc == 2 and "error: --cache-dir: cannot write to" in err


def test_the_default_cache_dir_is_checked_too(tmp_path, capsys, no_training, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    monkeypatch.setenv("WNLIB_CACHE", str(blocked))
    rc, _, err = cli_run(capsys)
    assert rc == 2 and "error: the cache directory ($WNLIB_CACHE or ~/.cache/wnlib): cannot write" in err


# --------------------------------------------------------------------------------------------------
# 4. A diverged run: marked, strict JSON, shown as diverged
# --------------------------------------------------------------------------------------------------


def test_a_diverged_run_is_marked_stored_as_strict_json_and_shown(tmp_path, capsys):
    out_json = tmp_path / "runs.json"
    args = ["--cache-dir", str(tmp_path), "--lr", "1e30", "--epochs", "3", "--json", str(out_json)]
    rc, out, err = cli_run(capsys, *args)
    assert rc == 0, err
    assert "## normal, seed 0 (diverged in epoch 1: the training loss became non-finite)" in out
    assert "| normal | 1 | 1 | nan |" in out and "1 of 1 runs diverged" in out
    (file,) = (tmp_path / "results").glob("*.json")
    for text in (file.read_text(), out_json.read_text()):
        assert "NaN" not in text and "Infinity" not in text
        data = strict_json(text)
        entry = data[0] if isinstance(data, list) else data
        assert entry["diverged"] is True and entry["epochs"][0]["train_loss"] is None
        json.dumps(data, allow_nan=False)
    # read back: the marker, NaN for the non-finite numbers
    config = ex.make_config("cpu-digits", "normal", 0, epochs=3, max_batches=2, lr=1e30)
    back = train_mod.cached_result(config, device="cpu", cache_dir=str(tmp_path))
    assert back is not None and back.diverged and math.isnan(back.epochs[0].train_loss)
    assert len(back.epochs) == 1 < config.epochs
    rc, out, _ = cli_run(capsys, *args)
    assert "(cached) (diverged in epoch 1" in out
    summary = {r["param"]: r for r in ex.summarize([back])}
    assert summary["normal"]["diverged"] == 1 and math.isnan(summary["normal"]["test_error_mean"])


def test_a_stored_diverged_marker_must_agree_with_the_losses():
    config = ex.make_config("cpu-digits", "normal", 0, epochs=1)
    run = ex.RunResult(config, [ex.EpochResult(1, 1.0, 0.5, 1.0, 0.5, 0.1, 0.9, 1.0, 0.1)], "cpu", 1, "x", 0)
    assert run.to_dict()["diverged"] is False
    with pytest.raises(ValueError, match="marked diverged=True"):
        ex.RunResult.from_dict({**run.to_dict(), "diverged": True})


# --------------------------------------------------------------------------------------------------
# 5. The paper preset's learning rates are the paper's (§5.1)
# --------------------------------------------------------------------------------------------------


def test_the_paper_preset_uses_the_papers_best_learning_rates():
    """§5.1: searched {3e-4, 1e-3, 3e-3, 1e-2}; 0.003 best for weight norm, batch norm and mean-only BN,
    0.0003 for the normal parameterization; weight norm + mean-only BN takes the weight-norm rate."""
    expected = {
        "normal": 0.0003,
        "weightnorm": 0.003,
        "weightnorm_init": 0.003,
        "batchnorm": 0.003,
        "meanonly_bn": 0.003,
        "weightnorm_meanonly": 0.003,
    }
    assert ex.PAPER_LEARNING_RATES == expected
    assert {p: ex.make_config("paper", p).lr for p in expected} == expected
    assert ex.make_config("paper", "normal", lr=0.001).lr == 0.001
    doc = ex.presets.__doc__
    assert "0.003 for" in doc and "0.0003 for the normal" in doc and "weight-norm rate" in doc


def test_the_cpu_presets_rates_are_unchanged():
    assert ex.CPU_LEARNING_RATES == {
        "normal": 0.003,
        "weightnorm": 0.01,
        "weightnorm_init": 0.003,
        "batchnorm": 0.003,
        "meanonly_bn": 0.01,
        "weightnorm_meanonly": 0.01,
    }


def test_cli_hands_vae_and_dqn_presets_to_their_own_clis(monkeypatch):
    import types

    from wnlib.experiments import __main__ as cli

    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(list(argv)) or 0)
    monkeypatch.setitem(sys.modules, "wnlib.experiments.fake_task", fake)
    monkeypatch.setattr(cli, "OTHER_TASKS", {"vae-": "wnlib.experiments.fake_task"})
    assert cli.main(["--preset", "vae-small", "--seeds", "0"]) == 0
    assert cli.main(["--preset=vae-paper"]) == 0
    assert calls == [["--preset", "vae-small", "--seeds", "0"], ["--preset=vae-paper"]]
    assert cli._other_task(["--preset", "cpu-small"]) is None


def test_vae_preset_is_reachable_from_the_main_cli(capsys):
    from wnlib.experiments import __main__ as cli

    assert cli.main(["--preset", "vae-small", "--epochs", "0"]) == 2  # the VAE CLI's own validation
