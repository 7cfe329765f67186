"""Tests of wnlib.experiments: data, parameterizations, models, schedule, training, cache, CLI, DDP.

Everything runs on the offline data sets (digits, MNIST-1D) with a few minibatches; the downloads are
tested with small fake files and unreachable URLs, never the network.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import wnlib
from wnlib import experiments as ex
from wnlib.experiments import __main__ as cli
from wnlib.experiments import data as data_mod
from wnlib.experiments import training as train_mod
from wnlib.experiments.models import GaussianNoise

PARAMS = list(ex.PARAMETERIZATIONS)
TINY = {"epochs": 1, "max_batches": 4, "init_batch_size": 100}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: see tests/conftest.py


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "train_shape", "test_shape"),
    [("digits", (1437, 1, 8, 8), (360, 1, 8, 8)), ("mnist1d", (4000, 1, 40), (1000, 1, 40))],
)
def test_offline_datasets_shapes_and_standardization(name, train_shape, test_shape):
    d = ex.load_dataset(name)
    assert tuple(d.x_train.shape) == train_shape and tuple(d.x_test.shape) == test_shape
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.input_shape == train_shape[1:] and d.num_classes == 10
    assert set(d.y_train.tolist()) == set(range(10)) and set(d.y_test.tolist()) <= set(range(10))
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_offline_datasets_are_deterministic(name):
    """The same arrays from a fresh generation (not just the in-process memo), and the global random
    generators untouched (mnist1d's generator seeds them)."""
    a = ex.load_dataset(name)
    data_mod._LOADERS[name].cache_clear()
    np.random.seed(123)
    random.seed(123)
    b = ex.load_dataset(name)
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)
    assert random.random() == random.Random(123).random()
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_validation_split_holds_out_the_end_of_the_training_set():
    d = ex.load_dataset("mnist1d")
    v = ex.load_dataset("mnist1d", split="validation")
    assert len(v.y_train) == 3200 and len(v.y_test) == 800
    assert torch.equal(v.x_test, d.x_train[3200:]) and torch.equal(v.x_train, d.x_train[:3200])


def _fake_table(monkeypatch, name, remote):
    monkeypatch.setitem(data_mod.REMOTE_FILES, name, (remote,))


def test_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    directory = tmp_path / "data" / "cifar10"
    directory.mkdir(parents=True)
    fake = directory / "cifar-10-python.tar.gz"
    fake.write_bytes(b"not the CIFAR-10 archive")
    good = hashlib.sha256(fake.read_bytes()).hexdigest()
    url = ("http://127.0.0.1:9/cifar-10-python.tar.gz",)
    _fake_table(monkeypatch, "cifar10", data_mod.RemoteFile(fake.name, url, "0" * 64))
    with pytest.raises(ex.ChecksumError, match=r"SHA256 .* must have 0000"):
        ex.load_dataset("cifar10", cache=tmp_path)
    # right SHA-256, wrong MD5: still an error
    _fake_table(monkeypatch, "cifar10", data_mod.RemoteFile(fake.name, url, good, md5="0" * 32))
    with pytest.raises(ex.ChecksumError, match="MD5"):
        ex.load_dataset("cifar10", cache=tmp_path)
    # both right: verification passes (the archive itself is then unreadable, which is another error)
    md5 = hashlib.md5(fake.read_bytes()).hexdigest()
    data_mod.verify(fake, data_mod.RemoteFile(fake.name, url, good, md5))


def test_missing_download_says_how_to_get_the_file(tmp_path, monkeypatch):
    url = "http://127.0.0.1:9/train-images-idx3-ubyte.gz"  # nothing listens on the discard port
    remote = data_mod.RemoteFile("train-images-idx3-ubyte.gz", (url,), "0" * 64)
    _fake_table(monkeypatch, "mnist", remote)
    target = tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    with pytest.raises(ex.DownloadError) as info:
        ex.load_dataset("mnist", cache=tmp_path)
    message = str(info.value)
    assert url in message and str(target) in message and "by hand" in message
    assert not target.exists() and not target.with_name(target.name + ".part").exists()
    with pytest.raises(ex.DownloadError, match="download=False"):
        ex.load_dataset("mnist", cache=tmp_path, download=False)


def test_download_is_verified_then_parsed(tmp_path, monkeypatch):
    """A fake 'download' (the downloader monkeypatched) of tiny IDX files goes through verification."""
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    import gzip

    def idx(a: np.ndarray) -> bytes:
        head = bytes([0, 0, 8, a.ndim]) + b"".join(n.to_bytes(4, "big") for n in a.shape)
        return gzip.compress(head + a.tobytes(), mtime=0)

    blobs = {
        "train-images-idx3-ubyte.gz": idx(images),
        "train-labels-idx1-ubyte.gz": idx(labels),
        "t10k-images-idx3-ubyte.gz": idx(images),
        "t10k-labels-idx1-ubyte.gz": idx(labels),
    }
    table = tuple(
        data_mod.RemoteFile(n, (f"http://example.invalid/{n}",), hashlib.sha256(b).hexdigest())
        for n, b in blobs.items()
    )
    monkeypatch.setitem(data_mod.REMOTE_FILES, "mnist", table)
    monkeypatch.setattr(data_mod, "_download", lambda url, target: target.write_bytes(blobs[target.name]))
    d = ex.load_dataset("mnist", cache=tmp_path)
    assert tuple(d.x_train.shape) == (2, 1, 28, 28) and d.y_test.tolist() == [3, 7]


def test_cifar10_archive_is_read_scaled_and_whitened(tmp_path, monkeypatch):
    """A small fake archive in CIFAR-10's python format; the real ZCA is tested below (on 3072 features
    its eigendecomposition alone takes seconds), here a stand-in records what it was fitted on."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(0)
    archive = tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
            blob = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    _fake_table(monkeypatch, "cifar10", data_mod.RemoteFile(archive.name, ("http://127.0.0.1:9/",), sha))
    fitted = []

    class RecordingZCA:
        def fit(self, x):
            fitted.append(x)
            return self

        def apply(self, x):
            return x - 1.0

    monkeypatch.setattr(data_mod, "ZCA", RecordingZCA)
    d = ex.load_dataset("cifar10", cache=tmp_path)
    assert tuple(d.x_train.shape) == (20, 3, 32, 32) and tuple(d.x_test.shape) == (4, 3, 32, 32)
    assert d.y_train.tolist() == [0, 1, 2, 9] * 5
    (x_fit,) = fitted
    assert x_fit.shape == (20, 3, 32, 32) and x_fit.min() >= -127.5 / 128 and x_fit.max() <= 127.5 / 128
    # fitted on the paper's scaling (x − 127.5)/128, then applied to it
    torch.testing.assert_close(d.x_train, torch.from_numpy(x_fit - 1.0))


def test_zca_whitens_random_data():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    x = (rng.normal(size=(20000, 12)) @ mixing + 5.0).reshape(20000, 3, 2, 2)
    zca = ex.ZCA(regularization=1e-10).fit(x)
    white = zca.apply(x).reshape(len(x), -1).astype(np.float64)
    assert np.abs(white.mean(0)).max() < 1e-5
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(12), atol=1e-6)
    # the paper's ε = 1e-5 shrinks only directions of variance ~ε (here the smallest is ~2e-3)
    zca = ex.ZCA(regularization=1e-5).fit(x)
    white = zca.apply(x).reshape(len(x), -1).astype(np.float64)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(12), atol=1e-2)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-10)  # ZCA: the symmetric whitening
    np.testing.assert_allclose(zca.invert(zca.apply(x)), x, rtol=1e-4, atol=1e-4)
    assert zca.apply(x[:5]).shape == (5, 3, 2, 2)
    with pytest.raises(ValueError, match="fitted on 12 features"):
        zca.apply(np.zeros((3, 5)))


# --------------------------------------------------------------------------------------------------
# Parameterizations and models
# --------------------------------------------------------------------------------------------------


def test_palette_has_one_colour_per_parameterization():
    assert set(ex.PALETTE) == set(PARAMS) and len(set(ex.PALETTE.values())) == len(PARAMS)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize(
    ("arch", "shape", "width"),
    [
        ("mlp", (1, 40), 0.25),
        ("convnet", (1, 40), 0.5),
        ("convnet", (1, 8, 8), 0.5),
        ("paper_cnn", (1, 40), 1 / 12),
        ("paper_cnn", (3, 32, 32), 1 / 12),
    ],
)
def test_models_build_initialize_and_give_logits(param, arch, shape, width):
    torch.manual_seed(0)
    model = ex.build_model(arch, shape, 10, param, width=width)
    x = torch.randn(32, *shape)
    ex.initialize(model, param, x)
    assert model(x).shape == (32, 10)
    model.eval()
    assert model(x[:3]).shape == (3, 10)
    p = ex.get_parameterization(param)
    kinds = {type(m).__name__ for m in model.modules()}
    normed = any(wnlib.is_weight_normed(m) for m in model.modules())
    assert normed == (p.weight_norm and not p.fold)
    assert any(k.startswith("BatchNorm") for k in kinds) == (p.normalizer == "batch")
    assert ("MeanOnlyBatchNorm" in kinds) == (p.normalizer == "mean_only")


def test_normal_parameterization_is_the_initialized_weightnorm_model_folded():
    shape, x = (1, 40), torch.randn(200, 1, 40)
    torch.manual_seed(1)
    wn = ex.build_model("convnet", shape, 10, "weightnorm_init")
    torch.manual_seed(1)
    normal = ex.build_model("convnet", shape, 10, "normal")
    ex.initialize(wn, "weightnorm_init", x)
    ex.initialize(normal, "normal", x)
    names = {n for n, _ in normal.named_parameters()}
    assert not any(n.endswith(("_g", "_v")) for n in names) and "0.weight" in names
    torch.testing.assert_close(normal(x), wn(x), rtol=1e-5, atol=1e-5)
    # the data-dependent init standardized the first layer's pre-activations (eq. 5-6)
    t = normal[0](x)
    torch.testing.assert_close(t.mean((0, 2)), torch.zeros(t.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.std((0, 2), unbiased=False), torch.ones(t.shape[1]), atol=1e-4, rtol=0)


def test_paper_cnn_matches_the_papers_network():
    model = ex.build_model("paper_cnn", (3, 32, 32), 10, "weightnorm")
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96] * 3 + [192] * 6
    assert [c.kernel_size for c in convs] == [(3, 3)] * 7 + [(1, 1)] * 2
    assert [c.padding for c in convs] == [(1, 1)] * 6 + [(0, 0)] * 3
    assert isinstance(model[0], GaussianNoise) and model[0].sigma == 0.15
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 2
    assert {m.negative_slope for m in model if isinstance(m, nn.LeakyReLU)} == {0.1}
    assert isinstance(model[-1], nn.Linear) and model[-1].out_features == 10
    small = ex.build_model("paper_cnn", (3, 32, 32), 10, "weightnorm", width=1 / 6)
    assert [m.out_channels for m in small if isinstance(m, nn.Conv2d)][::3] == [16, 32, 32]


def test_gaussian_noise_only_in_training():
    noise, x = GaussianNoise(0.15), torch.zeros(10000)
    assert abs(noise(x).std().item() - 0.15) < 0.01
    assert torch.equal(noise.eval()(x), x)


# --------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------


def test_schedule_matches_the_papers_per_epoch_formula():
    """One step per epoch, 200 epochs: lr = lr0·min(2 − e/100, 1), β1 = 0.9 then 0.5 (paper's code)."""
    s = ex.AdamSchedule(lr=0.003, total_steps=200, decay_start=0.5)
    for e in range(200):
        assert s.lr_at(e) == pytest.approx(0.003 * min(2 - e / 100, 1.0), rel=1e-12)
        assert s.beta1_at(e) == (0.9 if e < 100 else 0.5)


def test_schedule_values_at_given_steps():
    s = ex.AdamSchedule(lr=0.01, total_steps=1000, decay_start=0.6, beta1=0.9, beta1_decay=0.5)
    assert s.decay_step == 600
    assert [s.lr_at(t) for t in (0, 599, 600, 800, 999)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.005, 0.01 / 400]
    )
    assert [s.beta1_at(t) for t in (0, 599, 600, 999)] == [0.9, 0.9, 0.5, 0.5]
    no_decay = ex.AdamSchedule(lr=0.01, total_steps=10, decay_start=1.0)
    assert no_decay.lr_at(9) == 0.01 and no_decay.beta1_at(9) == 0.9
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, 0.99))
    s.apply(opt, 800)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005) and opt.param_groups[0]["betas"] == (0.5, 0.99)
    with pytest.raises(ValueError, match="decay_start"):
        ex.AdamSchedule(lr=0.1, total_steps=10, decay_start=1.5)


# --------------------------------------------------------------------------------------------------
# Training and the cache
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("param", PARAMS)
def test_a_tiny_run_decreases_the_loss(param):
    config = ex.make_config("cpu-small", param, seed=0, epochs=3, max_batches=8, init_batch_size=200)
    model, result = ex.fit(config, device="cpu", quiet=True, threads=1)
    losses = [e.train_loss for e in result.epochs]
    assert len(result.epochs) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    data = ex.load_dataset("mnist1d")
    loss, error = ex.evaluate(model, data.x_test, data.y_test)
    assert (loss, error) == pytest.approx((result.epochs[-1].test_loss, result.epochs[-1].test_error))
    assert error < 0.8  # chance is 0.9
    last = result.epochs[-1]
    assert last.lr == pytest.approx(config.lr / (3 * 8 - round(0.5 * 24))) and last.beta1 == 0.5


def test_training_is_reproducible_for_a_seed():
    config = ex.make_config("cpu-digits", "batchnorm", seed=3, **TINY)
    a = ex.fit(config, device="cpu", quiet=True)[1]
    b = ex.fit(config, device="cpu", quiet=True)[1]
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    c = ex.fit(ex.make_config("cpu-digits", "batchnorm", seed=4, **TINY), device="cpu", quiet=True)[1]
    assert c.epochs[0].train_loss != a.epochs[0].train_loss


def test_cache_hit_returns_identical_results_without_retraining(tmp_path, monkeypatch):
    config = ex.make_config("cpu-small", "weightnorm_init", seed=0, **TINY)
    first = ex.train(config, quiet=True, cache_dir=tmp_path, device="cpu")
    assert not first.cached and len(list((tmp_path / "results").glob("*.json"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the result is cached")

    monkeypatch.setattr(train_mod, "fit", no_training)
    second = ex.train(config, quiet=True, cache_dir=tmp_path, device="cpu")
    assert second.cached and second == first and second.to_markdown() == first.to_markdown()
    # the environment variable selects the same cache
    monkeypatch.setenv("WNLIB_CACHE", str(tmp_path))
    assert ex.train(config, quiet=True, device="cpu").cached
    # any change of configuration is a different key
    with pytest.raises(AssertionError, match="trained although"):
        ex.train(ex.make_config("cpu-small", "weightnorm_init", seed=1, **TINY), quiet=True, device="cpu")


def test_results_tables():
    config = ex.make_config("cpu-small", "normal", seed=0, epochs=2)
    rows = [ex.EpochResult(e, 1.0 / e, 0.5, 1.0, 0.1 * e, 0.003, 0.9, 2.0, 0.1) for e in (1, 2)]
    runs = [
        ex.RunResult(ex.make_config("cpu-small", p, seed=s, epochs=2), rows, "cpu", 1, "0", 0.0)
        for s in (0, 1)
        for p in ("weightnorm", "normal")
    ]
    runs[0].epochs = [rows[0], ex.EpochResult(2, 0.4, 0.5, 1.0, 0.3, 0.003, 0.9, 3.0, 0.1)]
    summary = {r["param"]: r for r in ex.summarize(runs)}
    assert list(summary) == ["normal", "weightnorm"]  # the parameterizations' order
    assert summary["weightnorm"]["test_error_mean"] == pytest.approx(25.0)
    assert summary["weightnorm"]["test_error_std"] == pytest.approx(np.std([30.0, 20.0], ddof=1))
    costs = {r["param"]: r for r in ex.epoch_costs(runs)}
    assert costs["weightnorm"]["relative_to_normal"] == pytest.approx(2.25 / 2.0)
    table = ex.markdown_table(ex.summarize(runs), ["param", "test_error_mean"])
    assert table.splitlines()[:3] == ["| param | test_error_mean |", "|---|---|", "| normal | 20 |"]
    assert ex.RunResult.from_dict(runs[0].to_dict()) == runs[0]
    assert ex.curves(runs)["normal"] == [[0.1, 0.2], [0.1, 0.2]]
    assert "| 1 |" in runs[1].to_markdown() and config.epochs == 2


def test_run_grid_orders_runs_seed_by_seed(tmp_path):
    results = ex.run_grid(
        "cpu-digits", ["normal", "weightnorm_meanonly"], [0, 1], quiet=True, cache_dir=tmp_path, **TINY
    )
    assert [(r.config.param, r.config.seed) for r in results] == [
        ("normal", 0),
        ("weightnorm_meanonly", 0),
        ("normal", 1),
        ("weightnorm_meanonly", 1),
    ]
    again = ex.run_grid(
        "cpu-digits", ["normal", "weightnorm_meanonly"], [0, 1], quiet=True, cache_dir=tmp_path, **TINY
    )
    assert all(r.cached for r in again) and again == results


def test_benchmark_epochs_times_each_parameterization_and_caches(tmp_path, monkeypatch):
    kw = {"repeats": 2, "quiet": True, "cache_dir": tmp_path, "max_batches": 2, "init_batch_size": 100}
    rows = ex.benchmark_epochs("cpu-small", ["normal", "batchnorm"], **kw)
    assert [r["param"] for r in rows] == ["normal", "batchnorm"]
    assert all(0 < r["min_seconds"] <= r["median_seconds"] for r in rows)
    assert rows[0]["min_relative_to_normal"] == 1.0
    monkeypatch.setattr(train_mod, "fit", None)  # a second call must not train
    assert ex.benchmark_epochs("cpu-small", ["normal", "batchnorm"], **kw) == rows


# --------------------------------------------------------------------------------------------------
# Presets, names, CLI
# --------------------------------------------------------------------------------------------------


def test_presets():
    paper = ex.make_config("paper", "weightnorm_meanonly")
    assert (paper.dataset, paper.arch, paper.epochs, paper.batch_size) == ("cifar10", "paper_cnn", 200, 100)
    assert (paper.decay_start, paper.init_batch_size, paper.beta1, paper.beta1_decay) == (0.5, 500, 0.9, 0.5)
    small = ex.make_config("cpu-small", "batchnorm", seed=2, epochs=3)
    assert (small.dataset, small.seed, small.epochs) == ("mnist1d", 2, 3)
    assert small.lr == ex.CPU_LEARNING_RATES["batchnorm"]
    assert ex.make_config("cpu-small", "batchnorm", lr=0.5).lr == 0.5
    assert set(ex.CPU_LEARNING_RATES) == set(ex.PAPER_LEARNING_RATES) == set(PARAMS)


@pytest.mark.parametrize(
    ("call", "valid"),
    [
        (lambda: ex.load_dataset("imagenet"), "digits, mnist1d, mnist, cifar10"),
        (lambda: ex.get_parameterization("layernorm"), ", ".join(PARAMS)),
        (lambda: ex.make_config("gpu-huge"), "cpu-small, cpu-digits, paper"),
        (lambda: ex.build_model("resnet", (1, 40), 10), "mlp, convnet, paper_cnn"),
        (lambda: ex.make_config("cpu-small", dataset="svhn"), "digits, mnist1d"),
        (lambda: ex.make_config("cpu-small", "bn"), "normal, weightnorm"),
    ],
)
def test_bad_names_list_the_valid_ones(call, valid):
    with pytest.raises(ValueError, match="unknown") as info:
        call()
    assert valid in str(info.value)


def test_cli_runs_and_rejects_bad_names(tmp_path, capsys):
    args = ["--preset", "cpu-digits", "--param", "weightnorm", "meanonly_bn", "--epochs", "1"]
    args += [
        "--max-batches",
        "2",
        "--quiet",
        "--cache-dir",
        str(tmp_path),
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "## weightnorm, seed 0" in out and "## Summary" in out and "| meanonly_bn | 1 |" in out
    assert (tmp_path / "r.json").exists()
    assert cli.main([*args, "--seeds", "0"]) == 0
    assert "(cached)" in capsys.readouterr().out
    assert cli.main(["--preset", "tiny"]) == 2
    assert "valid presets: cpu-small, cpu-digits, paper" in capsys.readouterr().err
    assert cli.main(["--param", "weight_norm"]) == 2
    assert "valid parameterizations: normal" in capsys.readouterr().err
    assert cli.main(["--dataset", "svhn"]) == 2
    assert "valid datasets" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Data-parallel
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run_ends_with_identical_parameters(tmp_path):
    """torchrun, 2 CPU processes (gloo): one tiny epoch; both ranks hold the same model afterwards."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
    ]
    cmd += ["--master_port", str(_free_port()), "-m", "wnlib.experiments", "--preset", "cpu-small"]
    cmd += ["--param", "weightnorm_meanonly", "--epochs", "1", "--max-batches", "4", "--device", "cpu"]
    cmd += ["--quiet", "--threads", "1", "--cache-dir", str(tmp_path), "--save-model", str(tmp_path / "m")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## Summary" in done.stdout
    states = [torch.load(tmp_path / "m" / f"weightnorm_meanonly_seed0_rank{r}.pt") for r in (0, 1)]
    assert states[0].keys() == states[1].keys() and any(k.endswith("weight_g") for k in states[0])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # it trained: the parameters moved away from a fresh single-process initialization
    torch.manual_seed(0)
    fresh = ex.build_model("convnet", (1, 40), 10, "weightnorm_meanonly")
    assert not torch.equal(fresh.state_dict()["0.weight_v"], states[0]["0.weight_v"])
    assert Path(tmp_path / "m").is_dir()
