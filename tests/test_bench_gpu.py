"""The GPU benchmark ``python -m wnlib.bench_gpu``: everything in it that runs without a GPU.

Its timings need CUDA; here the table, the byte counts, the PyTorch-ops baseline, the refusal without
CUDA, and (when Triton's interpreter is on, see ``conftest.py``) one tiny pass through the whole
measurement pipeline on CPU.
"""

from __future__ import annotations

import pytest
import torch

from wnlib import bench_gpu


def test_format_table() -> None:
    text = bench_gpu.format_table(
        ["a", "b", "c", "d"], [["x", 1.23456, 0.000123, None], ["y", 2, 12345.6, 0.0]]
    )
    assert text.splitlines() == [
        "| a | b | c | d |",
        "|---|---|---|---|",
        "| x | 1.23 | 1.23e-04 | – |",
        "| y | 2 | 12346 | 0 |",
    ]
    with pytest.raises(ValueError, match="2 cells but the table has 4 columns"):
        bench_gpu.format_table(["a", "b", "c", "d"], [["x", 1]])


def test_traffic_bytes_and_bandwidth() -> None:
    # 4 slices of 8 float32: forward reads v, g and writes w, norm; backward reads ∇w, v, g, norm and
    # writes ∇v, ∇g.
    assert bench_gpu.traffic_bytes((4, 8), 0, torch.float32) == (
        (2 * 32 + 4) * 4 + 4 * 4,
        (3 * 32 + 8) * 4 + 16,
    )
    fwd, _ = bench_gpu.traffic_bytes((16384, 16384), 0, torch.bfloat16)
    assert fwd == pytest.approx(2 * 16384**2 * 2, rel=1e-3)
    assert bench_gpu.bandwidth_gbs(2e9, 1.0) == pytest.approx(2000.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,dim", [((5, 7), 0), ((4, 3, 2, 2), 1), ((6, 4), 1)], ids=str)
def test_torch_ops_baseline_is_eq2(shape: tuple, dim: int, dtype: torch.dtype) -> None:
    v = torch.randn(shape, dtype=torch.float64).to(dtype)
    g = torch.randn(bench_gpu.keepdim_shape(shape, dim), dtype=torch.float64).to(dtype)
    axes = [a for a in range(len(shape)) if a != dim]
    v64 = v.double()
    expected = g.double() * v64 / torch.sqrt((v64 * v64).sum(axes, keepdim=True) + bench_gpu.DEFAULT_EPS)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(bench_gpu.torch_ops_weight_norm(v, g, dim).double(), expected, **tol)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_refuses_to_run_without_cuda(tmp_path) -> None:
    out = tmp_path / "bench.md"
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench_gpu.main(["--quick", "--out", str(out)])
    assert not out.exists()


def test_pipeline_on_cpu_under_the_interpreter() -> None:
    """One tiny weight case and one tiny layer through the measurement code, on CPU."""
    pytest.importorskip("triton", reason="Triton is not installed")
    from wnlib.kernels import triton_wn

    if not triton_wn.interpreted():
        pytest.skip("needs TRITON_INTERPRET=1 to run the kernels on CPU")
    cpu = torch.device("cpu")
    timer = bench_gpu.Timer(cpu, repeats=1, warmup=0, flush_bytes=1024)
    rows = bench_gpu.run_weight_case(bench_gpu.WeightCase("8×16", (8, 16), 0, torch.float32), timer, cpu)
    assert [r["method"] for r in rows] == ["triton", "torch._weight_norm", "torch ops"]
    assert all(r["err"] < 1e-5 and r["fwd_ms"] > 0 and r["bwd_pct"] > 0 for r in rows)
    layers = bench_gpu.run_layer_case(bench_gpu.LayerCase(4, 16, 8, torch.float32), timer, cpu)
    assert [r["method"] for r in layers] == [
        "nn.Linear",
        "WN-Linear (triton)",
        "parametrizations.weight_norm",
    ]
    env = dict(gpu="TEST GPU", torch="t", triton="tr", cuda="c", python="p", date="d")
    text = bench_gpu.render(env, rows, layers, repeats=1)
    assert "**TEST GPU**" in text and "| 8×16 | float32 | triton |" in text
    assert "| Linear 4×16→8 | float32 | nn.Linear |" in text


def test_sweep_overrides_make_valid_plans() -> None:
    pytest.importorskip("triton", reason="Triton is not installed")
    from wnlib.kernels import triton_wn

    for case in bench_gpu.sweep_cases():
        A, S, B = triton_wn.view_3d(case.shape, case.dim)
        overrides = bench_gpu.sweep_overrides(A, S, B)
        assert len(overrides) >= 4
        plans = {triton_wn.make_plan(A, S, B, 4, 132, **o) for o in overrides}
        assert len(plans) >= 4  # distinct alternatives, not one plan many times


def test_sweep_pipeline_on_cpu_under_the_interpreter() -> None:
    pytest.importorskip("triton", reason="Triton is not installed")
    from wnlib.kernels import triton_wn

    if not triton_wn.interpreted():
        pytest.skip("needs TRITON_INTERPRET=1 to run the kernels on CPU")
    cpu = torch.device("cpu")
    timer = bench_gpu.Timer(cpu, repeats=1, warmup=0, flush_bytes=1024)
    rows = []
    for shape, dim in [((4, 40), 0), ((40, 6), 1), ((6, 10), None)]:
        case = bench_gpu.WeightCase("x".join(map(str, shape)), shape, dim, torch.float32)
        rows += bench_gpu.run_sweep_case(case, timer, cpu)
    assert rows[0]["plan"] == "default"
    assert all(r["err"] < 1e-5 for r in rows)
    env = dict(gpu="G", torch="t", triton="tr", cuda="c", python="p", date="d")
    assert "Launch-plan sweep" in bench_gpu.render(env, [], [], 1, rows)
