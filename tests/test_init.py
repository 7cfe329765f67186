"""Data-dependent initialization (eq. 5–6): statistics after init, idempotence, distributed agreement."""

import datetime
import os
import re
import socket
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import wnlib
from wnlib import nn as wnn


def preactivations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of every weight-normalized layer on x, in eval mode for dropout, train for batch norm."""
    out, handles = {}, []
    for name, m in model.named_modules():
        if wnlib.is_weight_normed(m):
            handles.append(m.register_forward_hook(lambda m, a, y, name=name: out.__setitem__(name, y)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def per_feature(y: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = y.movedim(axis, -1).reshape(-1, y.shape[axis]).double()
    return y.mean(0), y.std(0, unbiased=False)


MODELS = {
    "mlp": (
        lambda: nn.Sequential(
            wnn.Linear(10, 32), nn.ReLU(), wnn.Linear(32, 32), nn.ReLU(), wnn.Linear(32, 5)
        ),
        (256, 10),
    ),
    "conv1d": (
        lambda: nn.Sequential(wnn.Conv1d(3, 8, 3), nn.ELU(), wnn.Conv1d(8, 8, 3, padding=1)),
        (64, 3, 20),
    ),
    "conv2d": (
        lambda: nn.Sequential(wnn.Conv2d(3, 8, 3), nn.LeakyReLU(0.1), wnn.Conv2d(8, 4, 1)),
        (32, 3, 8, 8),
    ),
    "conv3d": (lambda: nn.Sequential(wnn.Conv3d(2, 4, 3), nn.Tanh(), wnn.Conv3d(4, 4, 1)), (16, 2, 5, 5, 5)),
    "convtranspose": (
        lambda: nn.Sequential(
            wnn.ConvTranspose2d(3, 6, 3, stride=2), nn.ReLU(), wnlib.weight_norm(nn.ConvTranspose2d(6, 4, 3))
        ),
        (32, 3, 5, 5),
    ),
}


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("init_scale", [1.0, 0.3])
def test_every_layer_has_zero_mean_and_init_scale_std(kind, init_scale):
    torch.manual_seed(0)
    make, shape = MODELS[kind]
    model = make()
    x = 3 * torch.randn(shape) + 1
    report = wnlib.data_dependent_init(model, x, init_scale=init_scale)
    assert [r.name for r in report] == [n for n, m in model.named_modules() if wnlib.is_weight_normed(m)]
    for name, y in preactivations(model, x).items():
        mean, std = per_feature(y, -1 if isinstance(model.get_submodule(name), nn.Linear) else 1)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
        torch.testing.assert_close(std, torch.full_like(std, init_scale), atol=1e-5, rtol=1e-5)
    for r in report:
        assert r.mean_after.abs().max() < 1e-5 and (r.std_after - init_scale).abs().max() < 1e-5


def test_second_init_changes_nothing_and_state_is_restored():
    torch.manual_seed(1)
    model = nn.Sequential(
        wnn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU(), wnn.Linear(16, 3)
    )
    model.eval()
    x = torch.randn(128, 6)
    model[0].weight_v.grad = torch.ones(16, 6)
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    wnlib.data_dependent_init(model, x)
    first = {k: p.detach().clone() for k, p in model.named_parameters()}
    wnlib.data_dependent_init(model, x)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), first[k], rtol=1e-6, atol=1e-7)
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(model[0].weight_v.grad, torch.ones(16, 6)) and model[4].weight_v.grad is None
    for k, b in model.named_buffers():
        assert torch.equal(b, buffers[k]), k
    train_model = nn.Sequential(wnn.Linear(6, 4))
    wnlib.data_dependent_init(train_model, x)
    assert train_model.training


def test_v_is_untouched_and_modules_wrapped_by_weight_norm_work():
    torch.manual_seed(2)
    model = nn.Sequential(wnlib.weight_norm(nn.Linear(5, 7)), nn.ReLU(), wnlib.weight_norm(nn.Linear(7, 2)))
    v = model[0].weight_v.detach().clone()
    wnlib.data_dependent_init(model, torch.randn(50, 5))
    assert torch.equal(model[0].weight_v.detach(), v)


def test_layer_followed_by_mean_only_bn_only_gets_g():
    torch.manual_seed(3)
    model = nn.Sequential(wnn.Linear(4, 8), wnn.MeanOnlyBatchNorm(8), nn.ReLU(), wnn.Linear(8, 2))
    with torch.no_grad():
        model[0].bias.fill_(0.25)
    x = torch.randn(200, 4) + 2
    report = wnlib.data_dependent_init(model, x)
    assert report[0].followed_by_mean_only_bn and not report[1].followed_by_mean_only_bn
    assert torch.all(model[0].bias == 0.25)  # bias kept
    t = nn.functional.linear(x, model[0].weight_v / model[0].weight_v.norm(dim=1, keepdim=True))
    torch.testing.assert_close(model[0].weight_g.detach(), 1 / t.std(0, unbiased=False), rtol=1e-5, atol=0)
    # after the batch norm (batch statistics), the features are centred with unit std
    model.train()
    with torch.no_grad():
        h = model[1](model[0](x))
    torch.testing.assert_close(h.std(0, unbiased=False), torch.ones(8), rtol=1e-4, atol=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="model has no weight-normalized layer"):
        wnlib.data_dependent_init(nn.Sequential(nn.Linear(3, 2)), torch.randn(8, 3))
    with pytest.raises(
        ValueError, match="layer '0': data-dependent init needs at least 2 values per feature"
    ):
        wnlib.data_dependent_init(nn.Sequential(wnn.Linear(3, 2)), torch.randn(1, 3))
    constant = torch.randn(16, 3)
    constant[:, :] = constant[0]
    with pytest.raises(ValueError, match=r"layer '0': feature\(s\) \[0, 1\] are constant"):
        wnlib.data_dependent_init(nn.Sequential(wnn.Linear(3, 2)), constant)
    model = nn.Sequential(wnn.Linear(3, 4), nn.ReLU(), wnn.Linear(5, 2))
    with pytest.raises(ValueError, match="failed in layer '2'"):
        wnlib.data_dependent_init(model, torch.randn(8, 3))
    with pytest.raises(RuntimeError, match="failed in layer 'conv'"):
        model = nn.Sequential(OrderedDict(conv=wnn.Conv2d(3, 4, 3)))
        wnlib.data_dependent_init(model, torch.randn(2, 5, 6, 6))
    with pytest.raises(ValueError, match="weight norm over dim=0"):
        wnlib.data_dependent_init(nn.Sequential(wnn.Linear(3, 2, dim=None)), torch.randn(8, 3))
    with pytest.raises(TypeError, match="only knows the output features of Linear, Conv"):
        wnlib.data_dependent_init(nn.Sequential(wnlib.weight_norm(nn.Embedding(4, 3))), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="init_scale must be positive"):
        wnlib.data_dependent_init(nn.Sequential(wnn.Linear(3, 2)), torch.randn(8, 3), init_scale=0)


# ---- two processes on gloo ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conv_model() -> nn.Module:
    torch.manual_seed(7)  # the same v on every rank
    return nn.Sequential(wnn.Conv1d(2, 6, 3), nn.ReLU(), nn.Flatten(), wnn.Linear(6 * 10, 3))


def norm_model() -> nn.Module:
    """BatchNorm and MeanOnlyBatchNorm between weight-normalized layers: their batch statistics matter."""
    torch.manual_seed(9)
    return nn.Sequential(
        wnn.Linear(5, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        wnn.Linear(8, 6),
        wnn.MeanOnlyBatchNorm(6),
        nn.ReLU(),
        wnn.Linear(6, 3),
    )


def norm_conv_model() -> nn.Module:
    torch.manual_seed(10)
    return nn.Sequential(
        wnn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        wnn.Conv2d(4, 4, 3, padding=1),
        wnn.MeanOnlyBatchNorm(4),
        nn.Tanh(),
        wnn.Conv2d(4, 2, 1),
    )


class FailsOnSeven(nn.Module):
    """A module that fails on a batch of 7 only: on one rank, in the middle of the init pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 7:
            raise RuntimeError("this module cannot take 7 examples")
        return x


def failing_middle_model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(wnn.Linear(5, 8), nn.BatchNorm1d(8), FailsOnSeven(), nn.ReLU(), wnn.Linear(8, 3))


def shards(*shapes_and_shifts: tuple[tuple[int, ...], float]) -> list[torch.Tensor]:
    """One batch per rank: N(shift, (1 + shift)²), so shifted shards have different distributions."""
    gen = torch.Generator().manual_seed(8)
    return [(1 + shift) * torch.randn(shape, generator=gen) + shift for shape, shift in shapes_and_shifts]


def nan_at(x: torch.Tensor, row: int) -> torch.Tensor:
    x[row] = float("nan")
    return x


SUCCEEDS = {  # name: (model, its batch on rank 0 and on rank 1)
    "conv, iid": (conv_model, lambda: shards(((40, 2, 12), 0), ((40, 2, 12), 0))),
    "batch norms, shifted shards": (norm_model, lambda: shards(((40, 5), 0), ((40, 5), 3))),
    "batch norms, iid shards": (norm_model, lambda: shards(((40, 5), 0), ((40, 5), 0))),
    "conv batch norms, shifted": (norm_conv_model, lambda: shards(((12, 2, 6, 6), 0), ((12, 2, 6, 6), 2))),
    "batch norms, 1 example on rank 1": (norm_model, lambda: shards(((40, 5), 0), ((1, 5), 3))),
    "batch norms, rank 1 empty": (norm_model, lambda: shards(((40, 5), 0), ((0, 5), 3))),
}
ONE_RANK_FAILS = {  # name: (model, batches, rank 1's error, its message)
    "NaN on rank 1": (
        norm_model,
        lambda: [shards(((40, 5), 0))[0], nan_at(torch.randn(40, 5), 3)],
        "InitError",
        r"x has 5 non-finite values",
    ),
    "rank 1 fails after the batch norm": (
        failing_middle_model,
        lambda: shards(((40, 5), 0), ((7, 5), 0)),
        "RuntimeError",
        r"data-dependent init failed in layer '2': this module cannot take 7 examples",
    ),
    "wrong shape on rank 1": (
        norm_model,
        lambda: shards(((40, 5), 0), ((40, 4), 0)),
        "ValueError",
        r"data-dependent init failed in layer '0': input has 4 features",
    ),
}
ALL_FAIL = {  # errors from the global statistics: every rank raises the same InitError
    "constant everywhere": (
        norm_model,
        lambda: [torch.full((40, 5), 0.3)] * 2,
        r"layer '0': feature\(s\) \[",
    ),
    "one value in all": (
        norm_model,
        lambda: shards(((1, 5), 0), ((0, 5), 0)),
        "needs at least 2 values per feature, got a batch giving 1",
    ),
}
SCENARIOS = {  # failures first: the ones after them show that the process group is still usable
    **{k: v[:2] for k, v in {**ONE_RANK_FAILS, **ALL_FAIL}.items()},
    **SUCCEEDS,
}


def _scenario(model: nn.Module, x: torch.Tensor) -> dict:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        report = wnlib.data_dependent_init(model, x, process_group=dist.group.WORLD)
    except Exception as e:
        unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return {"error": type(e).__name__, "message": str(e), "unchanged": unchanged}
    return {"state": model.state_dict(), "std_after": torch.cat([r.std_after for r in report])}


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        results = {name: _scenario(make(), batches()[rank]) for name, (make, batches) in SCENARIOS.items()}
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Every scenario, run once by two processes on gloo; what each rank got."""
    out = tmp_path_factory.mktemp("gloo")
    mp.start_processes(_rank_main, args=(2, free_port(), str(out)), nprocs=2, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUCCEEDS))
def test_two_processes_agree_with_single_process_on_concatenated_batch(two_ranks, name):
    make, batches = SUCCEEDS[name]
    got = [two_ranks[r][name] for r in range(2)]
    assert "error" not in got[0] and "error" not in got[1], got
    single = make()
    report = wnlib.data_dependent_init(single, torch.cat(batches()))
    for key, value in single.state_dict().items():
        assert torch.equal(got[0]["state"][key], got[1]["state"][key]), key
        torch.testing.assert_close(got[0]["state"][key], value, rtol=1e-5, atol=1e-6)
    # the report is of the global batch too: σ = 1 after init over both shards
    std_after = torch.cat([r.std_after for r in report])
    torch.testing.assert_close(got[0]["std_after"], std_after, rtol=1e-5, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ONE_RANK_FAILS))
def test_when_one_rank_fails_every_rank_raises_and_says_which(two_ranks, name):
    *_, error, message = ONE_RANK_FAILS[name]
    failing, other = two_ranks[1][name], two_ranks[0][name]
    assert failing["error"] == error and re.search(message, failing["message"]), failing
    assert other["error"] == "InitError", other
    assert other["message"].startswith(
        "data-dependent init failed on rank(s) [1] of 2, so it stops on rank 0 too"
    )
    assert failing["message"] in other["message"]  # rank 1's own message, repeated
    assert failing["unchanged"] and other["unchanged"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ALL_FAIL))
def test_errors_of_the_global_batch_are_raised_by_every_rank(two_ranks, name):
    message = ALL_FAIL[name][2]
    got = [two_ranks[r][name] for r in range(2)]
    assert got[0] == got[1] and got[0]["error"] == "InitError" and re.search(message, got[0]["message"]), got
    assert got[0]["unchanged"]
