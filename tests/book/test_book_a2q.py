"""Checks behind the Quantization chapter's runs (wnbook.chapters.a2q); fast, CPU only."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from wnbook.chapters import a2q as demo
from wnlib import a2q


@pytest.fixture(scope="module")
def data():
    return demo.digits_4bit()


def test_digits_are_4bit_codes_split_without_overlap(data):
    assert data.x_train.shape == (1438, 64) and data.x_test.shape == (359, 64)
    for x in (data.x_train, data.x_test):
        assert x.dtype == torch.int64 and x.min() == 0 and x.max() == 15
    assert set(data.y_test.tolist()) == set(range(10))


@pytest.mark.parametrize("mode, acc_bits", [("plain", None), ("a2q", 10), ("a2q+", 10)])
def test_integer_forward_with_a_wide_register_is_the_float_forward(one_thread, data, mode, acc_bits):
    model = demo.train(mode, acc_bits, data, steps=20)
    with torch.no_grad():
        float_logits = model(data.x_test)
    run = demo.integer_forward(model, data.x_test, 32)
    torch.testing.assert_close(run.logits, float_logits, rtol=1e-4, atol=1e-4)
    assert not any(a.overflowed.any() for a in run.accumulations)


@pytest.mark.parametrize("mode", ["a2q", "a2q+"])
def test_constrained_models_never_overflow(one_thread, data, mode):
    for p in (12, 9):
        r = demo.evaluate(demo.train(mode, p, data, steps=20), data, p)
        assert r.test_overflows == 0 and r.worst_case_overflows == 0 and r.min_safe_bits <= p
        assert r.max_l1_over_bound <= 1
        assert r.worst_case_inputs == 2 * (32 + 10) and r.test_dot_products == 359 * (32 + 10)


def test_plain_model_overflows_exactly_below_its_safe_width(one_thread, data):
    plain = demo.train("plain", None, data, steps=20)
    p_min = demo.evaluate(plain, data, 16).min_safe_bits
    assert demo.evaluate(plain, data, p_min).worst_case_overflows == 0
    assert demo.evaluate(plain, data, p_min - 1).worst_case_overflows > 0
    projected = demo.project_after_training(plain, p_min - 3)
    r = demo.evaluate(projected, data, p_min - 3, "post-hoc")
    assert r.mode == "post-hoc" and r.worst_case_overflows == 0 and r.test_overflows == 0
    for layer in projected.layers():
        assert layer.integer_weight().abs().sum(1).max() <= a2q.a2q_l1_bound(p_min - 3, demo.INPUT_BITS)


def test_table_and_figure(one_thread, data):
    plain = demo.train("plain", None, data, steps=5)
    rows = [demo.evaluate(plain, data, p) for p in (12, 10)]
    table = demo.format_table(rows)
    assert len(table.splitlines()) == 3 and "plain" in table
    fig = demo.plot_sweep(rows)
    assert len(fig.axes) == 3
