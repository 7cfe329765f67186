"""Tests of the computations behind the Implementation chapter (wnbook.chapters.implementation)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wnlib
from wnbook import benchmarks
from wnbook.chapters import implementation as vi
from wnlib import bench


def test_bf16_running_sum_stalls_and_float32_accumulation_does_not():
    acc = vi.bf16_norm_errors()
    running, pairwise, ours = (acc.errors[k] for k in (vi.RUNNING_BF16, vi.PAIRWISE_BF16, vi.WNLIB_F32))
    assert running[-1] > 0.5  # ‖w‖ off by more than half at L = 16384
    assert np.all(ours < vi.BF16_UNIT_ROUNDOFF)
    assert np.all(pairwise > 3 * ours)
    assert np.all(running[acc.lengths >= 1024] > 100 * ours[acc.lengths >= 1024])
    # deterministic: the same seed gives the same errors
    again = vi.bf16_norm_errors()
    for name, errors in acc.errors.items():
        np.testing.assert_array_equal(again.errors[name], errors)


def test_bf16_lengths_must_be_powers_of_two():
    with pytest.raises(ValueError, match="powers of two"):
        vi.bf16_norm_errors(lengths=(100,))


def test_eps_response_is_eq4_above_eps_and_capped_below():
    eps = 1e-5
    radii = np.array([0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1.0, 10.0])
    out = vi.eps_response(radii, eps=eps, g=2.0)
    assert out["w_norm"][0] == 0.0 and np.isfinite(out["gain"]).all()
    above = radii >= eps
    # ‖v‖ ≥ eps: exactly the paper's formulas, ‖w‖ = g and gain g/‖v‖ (eq. 4), to rounding
    np.testing.assert_allclose(out["w_norm"][above], 2.0, rtol=1e-14)
    np.testing.assert_allclose(out["gain"][above], 2.0 / radii[above], rtol=1e-14)
    # ‖v‖ < eps: the norm is held at eps, so ‖w‖ = g‖v‖/eps and the gain is capped at g/eps
    np.testing.assert_allclose(out["w_norm"][~above], 2.0 * radii[~above] / eps, rtol=1e-14)
    np.testing.assert_allclose(out["gain"][~above], 2.0 / eps, rtol=1e-14)


def test_eps_response_default_eps_caps_at_g_over_eps():
    out = vi.eps_response(np.array([0.0, 1e-13]), eps=1e-12)
    np.testing.assert_allclose(out["gain"], 1e12, rtol=1e-12)
    np.testing.assert_allclose(out["w_norm"], [0.0, 0.1], rtol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_scaled_linear_equals_materialized(dtype, tol):
    res = vi.scaled_vs_materialized(dtype=dtype)
    assert res["path"] == "ScaledLinearFunctionBackward"
    assert all(res[k] < tol for k in ("y", "∇x", "∇v", "∇g", "∇b"))


@pytest.mark.parametrize(
    "rows, d_in, d_out",
    [(513, 512, 512), (8, 64, 32)],  # a tall batch; a weight below SCALED_LINEAR_MIN_NUMEL
)
def test_tall_batches_and_small_layers_materialize_w(rows, d_in, d_out):
    res = vi.scaled_vs_materialized(rows=rows, d_in=d_in, d_out=d_out, dtype=torch.float64)
    assert res["path"] != "ScaledLinearFunctionBackward"
    assert all(res[k] < 1e-13 for k in ("y", "∇x", "∇v", "∇g", "∇b"))


def test_scaled_linear_threshold_is_the_constant():
    assert wnlib.functional.SCALED_LINEAR_MIN_NUMEL == 2**18
    assert vi.scaled_vs_materialized(rows=4, d_in=512, d_out=512)["path"] == "ScaledLinearFunctionBackward"
    assert vi.scaled_vs_materialized(rows=4, d_in=512, d_out=511)["path"] != "ScaledLinearFunctionBackward"


def test_saved_for_backward_counts_weight_sized_tensors():
    torch.manual_seed(0)
    x = torch.randn(4, 512, requires_grad=True)
    v = torch.randn(512, 512, requires_grad=True)  # 2**18 weights: linear scales the output
    g = torch.rand(512, requires_grad=True)
    cases = {
        "naive": vi.saved_for_backward(
            lambda: F.linear(x, g[:, None] * v / torch.linalg.vector_norm(v, dim=1, keepdim=True)), [x, v, g]
        ),
        "op": vi.saved_for_backward(lambda: F.linear(x, wnlib.functional.weight_norm(v, g)), [x, v, g]),
        "scaled": vi.saved_for_backward(lambda: wnlib.functional.linear(x, v, g), [x, v, g]),
    }
    text, counts = vi.saved_table(cases, v.shape)
    assert [counts[k]["weight_sized"] for k in cases] == [2, 1, 0]
    assert "scaled" in text
    # the op itself (PyTorch's fused node here, with wnlib's second-order hook) saves v (the parameter),
    # g (a keep-dim view of it) and the norms, not w
    node, op_only = vi.autograd_node(lambda: wnlib.functional.weight_norm(v, g), [v, g])
    assert node == "WeightNormInterfaceBackward0"
    assert [s.shape for s in op_only] == [(512, 512), (512, 1), (512, 1)]
    assert [s.is_input for s in op_only] == [True, True, False]


FUSED, OURS = "WeightNormInterfaceBackward0", "_EagerWeightNormBackward"


@pytest.mark.parametrize(
    "v, dim, node, norm_dtype",
    [
        (torch.ones(3, 4, dtype=torch.float64), 0, FUSED, torch.float64),
        (torch.ones(3, 4, dtype=torch.float32), -1, FUSED, torch.float32),
        (torch.tensor([[1.0, 0.0], [1e-13, 0.0]], dtype=torch.float64), 0, OURS, torch.float64),
        (torch.zeros(3, 4, dtype=torch.float64), 0, OURS, torch.float64),
        (torch.ones(3, 4, dtype=torch.bfloat16), 0, OURS, torch.float32),
        (torch.ones(3, 4, 2, dtype=torch.float64), 1, OURS, torch.float64),
    ],
)
def test_autograd_node_names_the_path_and_holds_v_g_and_the_norms(v, dim, node, norm_dtype):
    v = v.clone().requires_grad_()
    g = torch.ones(v.shape[dim], dtype=v.dtype, requires_grad=True)
    name, saved = vi.autograd_node(lambda: wnlib.functional.weight_norm(v, g, dim), [v, g])
    assert name == node  # PyTorch's fused node (first or last axis, float32/64, every norm ≥ eps), or ours
    assert [s.is_input for s in saved] == [True, True, False]  # v, g, the norms; never w
    assert saved[0].shape == tuple(v.shape) and saved[2].dtype == norm_dtype
    assert "input" in vi.describe_saved(saved) and "new" in vi.describe_saved(saved)


def test_fused_kernels_dispatch_fewer_ops_and_agree_with_weight_norm_function():
    torch.manual_seed(0)
    v = torch.randn(64, 32, requires_grad=True)
    g = torch.rand(64, requires_grad=True)
    grad_w = torch.randn(64, 32)
    fused = vi.aten_ops(lambda: torch.autograd.grad(wnlib.functional.weight_norm(v, g), (v, g), grad_w))
    ours = vi.aten_ops(
        lambda: torch.autograd.grad(
            wnlib.functional.WeightNormFunction.apply(v, g, 0, 1e-12)[0], (v, g), grad_w
        )
    )
    assert "_weight_norm_interface" in fused and "_weight_norm_interface" not in ours
    assert len(fused) < len(ours)
    for dtype, dim in ((torch.float64, 0), (torch.float64, -1), (torch.float32, 0), (torch.float32, -1)):
        res = vi.paths_agree(dim=dim, dtype=dtype)
        assert res["path"] == "WeightNormInterfaceBackward0"
        assert all(res[k] < 8 * torch.finfo(dtype).eps for k in ("w", "∇v", "∇g")), res


def test_conv_transpose_g_scales_one_output_channel_only_with_dim_1():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    ours = wnlib.nn.ConvTranspose2d(4, 6, 3)
    theirs = torch.nn.utils.parametrizations.weight_norm(nn.ConvTranspose2d(4, 6, 3))
    assert vi.output_channels_scaled(ours, ours.weight_g, 2, x) == [2]
    g_theirs = theirs.parametrizations.weight.original0
    before = g_theirs.detach().clone()
    assert vi.output_channels_scaled(theirs, g_theirs, 0, x) == list(range(6))
    assert torch.equal(g_theirs, before)  # restored


def _results(ratios: dict[str, list[float]], noise: float = 0.01) -> dict[str, dict[str, dict]]:
    names = ["plain", "wnlib", "torch parametrizations", "torch legacy"]
    return {
        case: {
            n: {"time": 1e-3 * t, "ratio": t / r[0], "noise": noise * (i > 0), "peak": 2**20 * (i + 1)}
            for i, (n, t) in enumerate(zip(names, r, strict=True))
        }
        for case, r in ratios.items()
    }


def test_read_bench_parses_what_the_benchmark_writes(tmp_path):
    text = bench.table(
        _results(
            {
                "Linear 256×1024→1024": [2.0, 2.1, 2.5, 2.6],
                "Linear 64×4096→4096": [4.0, 4.8, 4.4, 5.0],
                "Conv2d 32×64→64, 32×32, 3×3": [10.0, 10.5, 11.0, 12.0],
            }
        ),
        "Some CPU, 2 threads; torch 2.13.0",
        15,
    )
    path = tmp_path / "bench_cpu.md"
    path.write_text(text)
    table = benchmarks.read_bench(path)
    assert table.where == "Some CPU, 2 threads; torch 2.13.0"
    assert table.columns == benchmarks.BENCH_COLUMNS
    assert [r.case for r in table.rows] == [
        "Linear 256×1024→1024",
        "Linear 64×4096→4096",
        "Conv2d 32×64→64, 32×32, 3×3",
    ]
    row = table.rows[0]
    assert row.plain_ms == pytest.approx(2.0)
    assert row.ratios == {"wnlib": 1.05, "torch parametrizations": 1.25, "torch legacy": 1.3}
    assert row.peak_mib == {"plain": 1.0, "wnlib": 2.0, "torch parametrizations": 3.0, "torch legacy": 4.0}
    assert row.noise == {"wnlib": 0.01, "torch parametrizations": 0.01, "torch legacy": 0.01}
    report = benchmarks.target_report(table).splitlines()
    assert report[0].endswith("(target ≤ 1.10×): met")
    assert report[1].endswith("(target ≤ 1.15×): NOT met")  # 1.20 > 1.15
    assert report[2].endswith("faster")  # 1.05 vs torch's 1.25
    assert report[3].endswith("slower")  # 1.20 vs torch's 1.10 on the 64×4096 row
    assert [benchmarks.versus_torch(r) for r in table.rows] == ["faster", "slower", "faster"]
    assert benchmarks.faster_torch(table.rows[1]) == "torch parametrizations"
    fig = vi.plot_bench(table)
    plt.close(fig)


def test_read_bench_refuses_other_columns(tmp_path):
    text = bench.table(_results({"Linear 256×1024→1024": [2.0, 2.1, 2.5, 2.6]}), "here", 5)
    old = text.replace(" | peak MiB: plain / wnlib / torch parametrizations / torch legacy |", " |")
    path = tmp_path / "old.md"
    path.write_text(old)
    with pytest.raises(ValueError, match="unexpected columns"):
        benchmarks.read_bench(path)


def test_bench_columns_match_the_benchmark_header():
    header = bench.table(_results({"Linear 256×1024→1024": [2.0, 2.1, 2.5, 2.6]}), "here", 5).splitlines()[2]
    assert tuple(c.strip() for c in header.strip().strip("|").split("|")) == benchmarks.BENCH_COLUMNS


def test_target_report_names_missing_rows(tmp_path):
    path = tmp_path / "quick.md"
    path.write_text(bench.table(_results({"Linear 256×1024→1024": [2.0, 2.1, 2.5, 2.6]}), "here", 5))
    report = benchmarks.target_report(benchmarks.read_bench(path))
    assert "Linear 64×4096→4096: wnlib ≤ 1.15× plain — not in this table" in report


def test_gpu_table_shown_only_when_measured(tmp_path):
    missing = vi.gpu_bench_markdown(tmp_path / "bench_gpu.md")
    assert "No GPU measurements yet" in missing.data
    (tmp_path / "bench_gpu.md").write_text("| GPU table |\n")
    assert vi.gpu_bench_markdown(tmp_path / "bench_gpu.md").data == "| GPU table |\n"


def test_figures_draw():
    for fig in (vi.plot_eps(), vi.plot_bf16(vi.bf16_norm_errors(lengths=(64, 128, 256)))):
        assert len(fig.axes) >= 1
        plt.close(fig)
    plt.close("all")


def test_eps_widget_one_frame_per_power_of_ten():
    box = vi.eps_widget(value=1e-5)
    (slider,) = box.children[0].children
    assert slider.description == "eps"
    assert [label for label, _ in slider.options] == [f"1e-{k:02d}" for k in range(9, 0, -1)]
    view = box.children[1]
    assert view.selected_index == 4 and view.children[4]._dom_classes == ("wn-frame-4",)  # eps = 1e-5
    assert "eps = 1e-05" in vi.draw_eps_frame(1e-5)._suptitle.get_text()
    with pytest.raises(ValueError, match="not among its options"):
        vi.eps_widget(value=3e-4)
    plt.close("all")


def test_short_headers_replace_only_the_header_row(tmp_path):
    path = tmp_path / "bench_cpu.md"
    path.write_text(bench.table(_results({"Linear 256×1024→1024": [2.0, 2.1, 2.5, 2.6]}), "here", 5))
    text = benchmarks.short_header_markdown(path)
    assert "parametrizations" not in text
    assert "| " + " | ".join(benchmarks.SHORT_COLUMNS) + " |" in text
    assert text.splitlines()[4:] == path.read_text().splitlines()[4:]  # the rows are untouched
    assert len(benchmarks.SHORT_COLUMNS) == len(benchmarks.BENCH_COLUMNS)


def test_a_gap_within_the_noise_is_a_tie(tmp_path):
    path = tmp_path / "tie.md"
    results = _results({"Linear 32×256→256": [1.0, 1.22, 1.25, 1.20]}, noise=0.03)
    path.write_text(bench.table(results, "here", 5))
    (row,) = benchmarks.read_bench(path).rows
    assert benchmarks.faster_torch(row) == "torch legacy"
    assert benchmarks.versus_torch(row) == "tie"  # 1.22 vs 1.20, noise 0.03 + 0.03


def test_every_mode_matches_the_naive_twin():
    assert vi.gradient_penalty_vs_naive() < 1e-12  # float64, second order
    assert vi.per_sample_grads_vs_loop() < 1e-12  # float64, vmap(grad)
    assert vi.channels_last_vs_naive() < 1e-5  # float32
    checks = vi.torch_fused_gradgradcheck()
    assert checks["wnlib, dim=0"] and checks["wnlib, dim=1"]
    assert not checks["torch._weight_norm, dim=0"] and not checks["torch._weight_norm, dim=1"]


@pytest.mark.slow
def test_full_graph_compile_matches_the_naive_twin():
    assert vi.compiled_vs_naive() < 1e-5


def test_naive_twin_uses_the_model_s_own_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(wnlib.nn.Linear(3, 4), nn.ReLU(), wnlib.nn.Linear(4, 2))
    twin = vi.naive_twin(model)
    x = torch.randn(5, 3)
    torch.testing.assert_close(twin(x), model(x))
    twin(x).sum().backward()
    assert model[0].weight_v.grad is not None and model[2].weight_g.grad is not None


def test_conv_peak_excess_is_the_unrecorded_release_of_the_input_gradient():
    peaks = vi.peak_memory_rechecked("Conv2d 32×64→64, 32×32, 3×3", repeats=2)
    assert list(peaks) == list(bench.VARIANTS)
    grad_x_mib = 32 * 64 * 32 * 32 * 4 / 2**20
    low = min(min(m) for m in peaks.values())
    assert abs(peaks["plain"][0] - low - grad_x_mib) < 0.3  # the first measurement misses the release
    for measured in peaks.values():
        assert all(min(abs(m - low), abs(m - low - grad_x_mib)) < 0.3 for m in measured)
    with pytest.raises(ValueError, match="no benchmark case"):
        vi.peak_memory_rechecked("Conv3d")
