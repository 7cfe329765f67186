"""Tests of the computations behind the Implementation chapter (wnlib.viz.implementation)."""

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
from wnlib import bench
from wnlib.viz import implementation as vi


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


def test_eps_response_matches_eq4_and_is_finite_at_zero():
    radii = np.array([0.0, 1e-9, 1e-3, 1.0, 10.0])
    out = vi.eps_response(radii, eps=1e-12, g=2.0)
    assert out["w_norm"][0] == 0.0 and np.isfinite(out["gain"]).all()
    np.testing.assert_allclose(out["gain"][0], 2.0 / 1e-6, rtol=1e-9)  # capped at g/√eps
    np.testing.assert_allclose(out["w_norm"][2:], 2.0, rtol=1e-6)  # ‖w‖ = g away from zero
    np.testing.assert_allclose(out["gain"][2:], 2.0 / radii[2:], rtol=1e-6)  # gain g/‖v‖ (eq. 4)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_scaled_linear_equals_materialized(dtype, tol):
    res = vi.scaled_vs_materialized(dtype=dtype)
    assert res["path"] == "ScaledLinearFunctionBackward"
    assert all(res[k] < tol for k in ("y", "∇x", "∇v", "∇g", "∇b"))


def test_tall_batches_materialize_w():
    res = vi.scaled_vs_materialized(rows=80, d_in=64, dtype=torch.float64)
    assert res["path"] != "ScaledLinearFunctionBackward"
    assert all(res[k] < 1e-13 for k in ("y", "∇x", "∇v", "∇g", "∇b"))


def test_saved_for_backward_counts_weight_sized_tensors():
    torch.manual_seed(0)
    x = torch.randn(4, 16, requires_grad=True)
    v = torch.randn(32, 16, requires_grad=True)
    g = torch.rand(32, requires_grad=True)
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
    # the op itself saves v (the parameter), g and the norms
    op_only = vi.saved_for_backward(lambda: wnlib.functional.weight_norm(v, g), [v, g])
    assert [s.shape for s in op_only] == [(32, 16), (32,), (32,)]
    assert op_only[0].is_input and op_only[1].is_input and not op_only[2].is_input


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


def _results(ratios: dict[str, list[float]]) -> dict[str, dict[str, dict]]:
    names = ["plain", "wnlib", "torch parametrizations", "torch legacy"]
    return {
        case: {
            n: {"time": 1e-3 * t, "peak": 2**20 * (i + 1)}
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
    )
    path = tmp_path / "bench_cpu.md"
    path.write_text(text)
    table = vi.read_bench(path)
    assert table.where == "Some CPU, 2 threads; torch 2.13.0"
    assert [r.case for r in table.rows] == [
        "Linear 256×1024→1024",
        "Linear 64×4096→4096",
        "Conv2d 32×64→64, 32×32, 3×3",
    ]
    row = table.rows[0]
    assert row.plain_ms == pytest.approx(2.0)
    assert row.ratios == {"wnlib": 1.05, "torch parametrizations": 1.25, "torch legacy": 1.3}
    assert row.peak_mib == {"plain": 1.0, "wnlib": 2.0, "torch parametrizations": 3.0, "torch legacy": 4.0}
    report = vi.target_report(table).splitlines()
    assert report[0].endswith("(target ≤ 1.10×): met")
    assert report[1].endswith("(target ≤ 1.15×): NOT met")  # 1.20 > 1.15
    assert report[3].endswith("NOT met")  # 1.20 vs torch's 1.10 on the 64×4096 row
    fig = vi.plot_bench(table)
    plt.close(fig)


def test_target_report_names_missing_rows(tmp_path):
    path = tmp_path / "quick.md"
    path.write_text(bench.table(_results({"Linear 256×1024→1024": [2.0, 2.1, 2.5, 2.6]}), "here"))
    report = vi.target_report(vi.read_bench(path))
    assert "Linear 64×4096→4096: wnlib ≤ 1.15× plain — not in this table" in report


def test_gpu_table_shown_only_when_measured(tmp_path):
    missing = vi.gpu_bench_markdown(tmp_path / "bench_gpu.md")
    assert "No GPU measurements yet" in missing.data
    (tmp_path / "bench_gpu.md").write_text("| GPU table |\n")
    assert vi.gpu_bench_markdown(tmp_path / "bench_gpu.md").data == "| GPU table |\n"


def test_figures_draw():
    for fig in (vi.plot_eps((1e-12, 1e-4)), vi.plot_bf16(vi.bf16_norm_errors(lengths=(64, 128, 256)))):
        assert len(fig.axes) >= 1
        plt.close(fig)
    widget = vi.eps_widget()
    assert widget.children[0].description == "eps"
    plt.close("all")
