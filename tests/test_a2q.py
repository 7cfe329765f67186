"""The A2Q / A2Q+ accumulator bounds, checked empirically in a simulated P-bit register."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from wnlib import a2q

CASES = [(4, False), (4, True), (8, False), (3, True), (2, False)]  # (input bits N, signed inputs)


def random_q(seed: int, out: int = 6, fan_in: int = 24, qmax: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-qmax - 1, qmax + 1, (out, fan_in), generator=gen)


def zero_sum_q(seed: int, out: int = 6, fan_in: int = 24) -> torch.Tensor:
    """Integer weights whose rows sum to 0 (the fixed point of A2Q+'s zero-centering)."""
    q = random_q(seed, out, fan_in)
    q[:, -1] = 0
    q[:, -1] = -q.sum(1)
    return q


def random_inputs(seed: int, n: int, fan_in: int, bits: int, signed: bool) -> torch.Tensor:
    lo, hi = a2q.input_range(bits, signed)
    return torch.randint(lo, hi + 1, (n, fan_in), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# The bounds' formulas
# --------------------------------------------------------------------------------------------------

# (P, N, A2Q T unsigned, A2Q T signed, A2Q+ T), rounded to 0.1, as tabulated in the research notes
TABLE = [
    (32, 8, 8388608.0, 16777216.0, 16843009.0),
    (16, 8, 128.0, 256.0, 257.0),
    (16, 4, 2047.9, 4095.9, 4368.9),
    (14, 4, 511.9, 1023.9, 1092.1),
    (12, 4, 127.9, 255.9, 272.9),
    (12, 8, 8.0, 16.0, 16.1),
]


@pytest.mark.parametrize("p, n, unsigned, signed, plus", TABLE)
def test_bound_values(p, n, unsigned, signed, plus):
    assert round(a2q.a2q_l1_bound(p, n), 1) == unsigned
    assert round(a2q.a2q_l1_bound(p, n, signed_input=True), 1) == signed
    assert round(a2q.a2q_plus_l1_bound(p, n), 1) == plus
    assert a2q.a2q_l1_bound(p, n) == (2 ** (p - 1) - 1) / 2**n  # the exact form
    assert a2q.a2q_plus_l1_bound(p, n) == (2**p - 2) / (2**n - 1)


@pytest.mark.parametrize("n, signed", CASES)
@pytest.mark.parametrize("seed", range(5))
def test_accumulator_bits_are_the_smallest_p_the_bounds_allow_and_match_the_closed_forms(seed, n, signed):
    q = random_q(seed) // (seed + 1)  # a spread of norms
    l1 = int(q.abs().sum(1).max())
    p = a2q.a2q_accumulator_bits(q, n, signed)
    assert l1 <= a2q.a2q_l1_bound(p, n, signed) and l1 > a2q.a2q_l1_bound(p - 1, n, signed)
    alpha = math.log2(l1) + n - int(signed)  # brevitas' test helper: ⌈α + φ(α) + 1⌉
    assert p == math.ceil(alpha + math.log2(1 + 2**-alpha) + 1)
    p_plus = a2q.a2q_plus_accumulator_bits(q, n)
    assert l1 <= a2q.a2q_plus_l1_bound(p_plus, n) and l1 > a2q.a2q_plus_l1_bound(p_plus - 1, n)
    assert p_plus == math.ceil(math.log2(l1 * (2**n - 1) + 2))


# --------------------------------------------------------------------------------------------------
# The register and the exact minimum
# --------------------------------------------------------------------------------------------------


def test_accumulate_wraps_at_each_add_and_counts():
    acc = a2q.accumulate(torch.tensor([[7, 7, -7]]), torch.tensor([[15, 15, 15]]), acc_bits=8)
    # 105, then 210 → −46 (one wrap), then −46 − 105 = −151 → 105 (a second wrap): the final sum fits
    assert acc.value.tolist() == [[105]] and acc.exact.tolist() == [[105]]
    assert acc.overflows.tolist() == [[2]] and acc.overflowed.all() and not acc.wrong.any()


@pytest.mark.parametrize("n, signed", CASES)
def test_register_value_is_the_exact_sum_modulo_2_to_the_p(n, signed):
    q, x = random_q(0), random_inputs(1, 50, 24, n, signed)
    for p in (6, 9, 12):
        acc = a2q.accumulate(q, x, p)
        assert acc.value.shape == (50, 6)
        assert torch.equal(acc.exact, x @ q.T)
        half = 2 ** (p - 1)
        assert torch.equal(acc.value, torch.remainder(acc.exact + half, 2 * half) - half)
        assert torch.equal(acc.wrong, (acc.exact < -half) | (acc.exact >= half))
        assert not (acc.wrong & ~acc.overflowed).any()  # a wrong result always came from a wrap


def test_worst_case_inputs_are_the_extremes_over_every_input():
    # exhaustive for 2-bit inputs and 4 weights: the worst cases bound every partial sum of every input
    q = torch.tensor([[3, -2, 1, -4], [0, 2, 2, -1]])
    for signed in (False, True):
        lo, hi = a2q.accumulator_range(q, 2, signed)
        values = a2q.input_range(2, signed)
        xs = torch.tensor(list(itertools.product(range(values[0], values[1] + 1), repeat=4)))
        partial = (xs.unsqueeze(1) * q).cumsum(-1)  # (inputs, out, prefix)
        assert torch.equal(partial.amax((0, 2)), hi) and torch.equal(partial.amin((0, 2)), lo)


@pytest.mark.parametrize("n, signed", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_min_accumulator_bits_is_exact_on_worst_case_inputs(seed, n, signed):
    q = random_q(seed)
    p = a2q.min_accumulator_bits(q, n, signed)
    x = a2q.worst_case_inputs(q, n, signed)
    assert x.shape == (6, 2, 24)
    assert a2q.accumulate(q, x, p, per_channel=True).overflows.sum() == 0
    assert a2q.accumulate(q, x, p - 1, per_channel=True).overflows.sum() > 0
    assert a2q.accumulate(q, random_inputs(seed, 200, 24, n, signed), p).overflows.sum() == 0
    assert p <= a2q.a2q_accumulator_bits(q, n, signed)  # the A2Q bound is sufficient


@pytest.mark.parametrize("n, signed", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_a2q_bound_guarantees_no_overflow_in_any_order(seed, n, signed):
    q = random_q(seed)
    p = a2q.a2q_accumulator_bits(q, n, signed)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(seed))
    for order in (torch.arange(24), perm, perm.flip(0)):
        qo = q[:, order]
        x = a2q.worst_case_inputs(qo, n, signed)
        assert a2q.accumulate(qo, x, p, per_channel=True).overflows.sum() == 0
        assert a2q.accumulate(qo, random_inputs(seed, 200, 24, n, signed), p).overflows.sum() == 0


@pytest.mark.parametrize("n, signed", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_a2q_plus_bound_guarantees_no_overflow_for_zero_sum_weights(seed, n, signed):
    # stated for unsigned inputs; with Σq = 0 the same argument holds for signed inputs (range width 2^N − 1)
    q = zero_sum_q(seed)
    assert torch.all(q.sum(1) == 0)
    p = a2q.a2q_plus_accumulator_bits(q, n)
    assert a2q.min_accumulator_bits(q, n, signed) <= p <= a2q.a2q_accumulator_bits(q, n, signed)
    x = a2q.worst_case_inputs(q, n, signed)
    assert a2q.accumulate(q, x, p, per_channel=True).overflows.sum() == 0


def test_a2q_plus_bound_needs_zero_sum():
    # all-positive weights at the A2Q+ budget overflow: the relaxed bound is only for centered weights
    q = torch.full((1, 20), 7)  # ‖q‖₁ = 140
    p = a2q.a2q_plus_accumulator_bits(q, 4)
    assert a2q.accumulate(q, a2q.worst_case_inputs(q, 4), p, per_channel=True).overflows.sum() > 0


# --------------------------------------------------------------------------------------------------
# The quantizer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["a2q", "a2q+"])
@pytest.mark.parametrize("acc_bits", [16, 12, 10, 8])
def test_layer_integer_weights_respect_the_bound_during_training(mode, acc_bits):
    torch.manual_seed(0)
    layer = a2q.AccumulatorAwareLinear(64, 16, mode=mode, acc_bits=acc_bits, input_bits=4)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    x = torch.randint(0, 16, (32, 64)).float()
    for _ in range(20):  # push the weights up: the bound must hold at every step
        q = layer.integer_weight()
        if mode == "a2q":
            assert q.abs().sum(1).max() <= layer.l1_bound
        else:  # positive and negative parts each within T/2
            assert q.clamp_min(0).sum(1).max() <= layer.l1_bound / 2
            assert (-q).clamp_min(0).sum(1).max() <= layer.l1_bound / 2
        assert a2q.min_accumulator_bits(q, 4) <= acc_bits
        assert a2q.accumulate(q, a2q.worst_case_inputs(q, 4), acc_bits, per_channel=True).overflows.sum() == 0
        opt.zero_grad()
        (-layer(x).abs().mean()).backward()
        assert layer.v.grad is not None and layer.g.grad is not None and layer.log_s.grad is not None
        opt.step()


def test_layer_forward_is_the_integer_dot_product():
    torch.manual_seed(0)
    layer = a2q.AccumulatorAwareLinear(8, 3, mode="plain")
    x = torch.randint(0, 16, (5, 8))
    y = layer(x.float())
    exact = a2q.accumulate(layer.integer_weight(), x, acc_bits=32).value
    torch.testing.assert_close(y, exact * layer.weight_scale().detach() + layer.bias.detach())
    assert layer.integer_weight().abs().max() <= 7


def test_bad_input_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        a2q.AccumulatorAwareLinear(4, 2, mode="l2")
    with pytest.raises(ValueError, match="mode 'a2q' needs acc_bits"):
        a2q.AccumulatorAwareLinear(4, 2, mode="a2q")
    with pytest.raises(ValueError, match="acc_bits must be an integer >= 2, got 1"):
        a2q.a2q_l1_bound(1, 4)
    with pytest.raises(ValueError, match="input_bits must be an integer >= 1, got True"):
        a2q.a2q_plus_l1_bound(12, True)
    with pytest.raises(ValueError, match="q must hold integers"):
        a2q.min_accumulator_bits(torch.tensor([[0.5, 1.0]]), 4)
    with pytest.raises(ValueError, match=r"q must be an \(out, in\) matrix"):
        a2q.worst_case_inputs(torch.ones(3, dtype=torch.int64), 4)
    with pytest.raises(TypeError, match="q must be a torch.Tensor of integers"):
        a2q.a2q_accumulator_bits([[1, 2]], 4)
    with pytest.raises(
        ValueError, match=r"x has shape \(2, 5\) but q has shape \(3, 4\): expected \(\.\.\., 4\)"
    ):
        a2q.accumulate(torch.ones(3, 4), torch.ones(2, 5), 8)
    too_wide = r"acc_bits must be <= 62 \(the register is simulated in int64\), got 64"
    with pytest.raises(ValueError, match=too_wide):
        a2q.accumulate(torch.ones(3, 4), torch.ones(2, 4), 64)
    with pytest.raises(ValueError, match=r"per_channel inputs must have shape \(3, k, 4\)"):
        a2q.accumulate(torch.ones(3, 4), torch.ones(2, 4), 8, per_channel=True)


# --------------------------------------------------------------------------------------------------
# Optional cross-check against brevitas (skipped when it is not importable)
# --------------------------------------------------------------------------------------------------


def test_bounds_match_brevitas():
    ops = pytest.importorskip("brevitas.function.ops")
    pre = pytest.importorskip("brevitas.core.scaling.pre_scaling")

    class Fake:  # just enough of A2Q+'s pre-scaling module to call its bound
        def __init__(self, p):
            self.accumulator_bit_width = lambda: torch.tensor(float(p))

    plus = pre.AccumulatorAwareZeroCenterParameterPreScaling.calc_max_l1_norm
    for p, n, signed in itertools.product((8, 10, 12, 16, 32), (2, 4, 8), (False, True)):
        theirs = ops.get_upper_bound_on_l1_norm(torch.tensor(float(p)), torch.tensor(float(n)), signed)
        assert math.isclose(float(theirs), a2q.a2q_l1_bound(p, n, signed), rel_tol=1e-6)
        theirs_plus = plus(Fake(p), torch.tensor(float(n)), False)
        assert math.isclose(float(theirs_plus), a2q.a2q_plus_l1_bound(p, n), rel_tol=1e-6)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(a2q).failed == 0
