"""Accumulator-aware quantization (A2Q, A2Q+): overflow bounds, accumulator simulation, quantizers.

A quantized layer computes each output as an integer dot product Σ_i q_i x_i of N-bit inputs x and
integer weights q, accumulated in a P-bit two's-complement register. If a partial sum leaves
[−2^(P−1), 2^(P−1) − 1] the register wraps around and the output is wrong. Colbert et al. bound the
L1 norm of each output channel's integer weights so that this cannot happen for *any* input:

- A2Q (Colbert, Pappalardo & Petri-Koenig 2023, as implemented in brevitas'
  ``get_upper_bound_on_l1_norm``): ‖q‖₁ ≤ (2^(P−1) − 1) · 2^(𝟙signed(x) − N)   (:func:`a2q_l1_bound`),
  since ``|Σ q_i x_i|`` ≤ ‖q‖₁ · max|x| and max|x| = 2^N − 1 < 2^N (unsigned) or 2^(N−1) (signed).
- A2Q+ (Colbert et al. 2024; the form in brevitas' zero-centered quantizer, for unsigned inputs):
  ‖q‖₁ ≤ (2^P − 2)/(2^N − 1) for zero-centered weights   (:func:`a2q_plus_l1_bound`). With Σq = 0
  the positive and negative parts each have L1 norm ‖q‖₁/2, so Σ q_i x_i ∈ ±(‖q‖₁/2)(2^N − 1) for
  x ∈ [0, 2^N − 1] (this derivation is ours; tests/test_a2q.py checks the bound empirically). The
  same argument holds for signed inputs, whose range also has width 2^N − 1 (also ours, also tested).

Both are sufficient conditions; :func:`min_accumulator_bits` is the exact smallest safe P for given
integer weights (from the inputs at the extremes matching each weight's sign, :func:`worst_case_inputs`),
and :func:`accumulate` simulates the register, counting overflows.

The quantizer :class:`AccumulatorAwareLinear` follows A2Q: w = g·v/‖v‖₁
(:func:`wnlib.variants.l1_weight_norm`, or the zero-centered form for A2Q+),
q = clip(round_to_zero(w/s)), with g clamped to s·T so that ‖q‖₁ ≤ ‖w/s‖₁ = ``|g|/s`` ≤ T: rounding
toward zero and clipping only shrink magnitudes. The Quantization chapter (``book/a2q``) trains it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from wnlib.variants import centered_l1_weight_norm, l1_weight_norm, zero_center

__all__ = [
    "Accumulation",
    "AccumulatorAwareLinear",
    "Mode",
    "a2q_accumulator_bits",
    "a2q_l1_bound",
    "a2q_plus_accumulator_bits",
    "a2q_plus_l1_bound",
    "accumulate",
    "accumulator_range",
    "input_range",
    "min_accumulator_bits",
    "round_ste",
    "round_to_zero_ste",
    "worst_case_inputs",
]

#: The quantizer of :class:`AccumulatorAwareLinear`, ``"plain"``, ``"a2q"`` or ``"a2q+"``.
Mode = Literal["plain", "a2q", "a2q+"]
_MODES = ("plain", "a2q", "a2q+")


# --------------------------------------------------------------------------------------------------
# Bounds
# --------------------------------------------------------------------------------------------------


def _check_bits(name: str, bits: object, low: int = 1) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {bits!r}")
    return bits


def input_range(input_bits: int, signed_input: bool = False) -> tuple[int, int]:
    """(x_min, x_max) of N-bit integers: [0, 2^N − 1] unsigned, [−2^(N−1), 2^(N−1) − 1] signed."""
    n = _check_bits("input_bits", input_bits)
    return (-(2 ** (n - 1)), 2 ** (n - 1) - 1) if signed_input else (0, 2**n - 1)


def a2q_l1_bound(acc_bits: int, input_bits: int, signed_input: bool = False) -> float:
    """A2Q's largest safe ‖q‖₁ per output channel: T = (2^(P−1) − 1) · 2^(𝟙signed(x) − N).

    Example:
        >>> a2q_l1_bound(16, 8), a2q_l1_bound(16, 8, signed_input=True)
        (127.99609375, 255.9921875)
    """
    p, n = _check_bits("acc_bits", acc_bits, 2), _check_bits("input_bits", input_bits)
    return (2 ** (p - 1) - 1) * 2.0 ** (int(signed_input) - n)


def a2q_plus_l1_bound(acc_bits: int, input_bits: int) -> float:
    """A2Q+'s largest safe ‖q‖₁ for zero-centered weights and unsigned inputs: (2^P − 2)/(2^N − 1).

    Example:
        >>> round(a2q_plus_l1_bound(12, 4) / a2q_l1_bound(12, 4), 3)  # the budget A2Q+ gains at N = 4
        2.133
    """
    p, n = _check_bits("acc_bits", acc_bits, 2), _check_bits("input_bits", input_bits)
    return (2**p - 2) / (2**n - 1)


def _l1_per_channel(q: Tensor) -> list[int]:
    q = _check_integer_weights(q)
    return q.abs().sum(1).tolist()


def a2q_accumulator_bits(q: Tensor, input_bits: int, signed_input: bool = False) -> int:
    """The smallest P with ‖q_c‖₁ ≤ :func:`a2q_l1_bound` (P, N) for every output channel c.

    Exact integer arithmetic: ‖q‖₁·2^(N−𝟙signed) ≤ 2^(P−1) − 1 ⇔ P = bit_length(‖q‖₁·2^(N−𝟙signed)) + 1,
    the same number as brevitas' ⌈α + φ(α) + 1⌉ with α = log₂‖q‖₁ + N − 𝟙signed, φ(α) = log₂(1 + 2^−α).
    """
    shift = _check_bits("input_bits", input_bits) - int(signed_input)
    return max((l1 << shift).bit_length() + 1 for l1 in _l1_per_channel(q))


def a2q_plus_accumulator_bits(q: Tensor, input_bits: int) -> int:
    """The smallest P with ‖q_c‖₁ ≤ :func:`a2q_plus_l1_bound` (P, N) for every channel c:
    ⌈log₂(‖q‖₁·(2^N − 1) + 2)⌉, computed exactly as bit_length(‖q‖₁·(2^N − 1) + 1)."""
    m = 2 ** _check_bits("input_bits", input_bits) - 1
    return max(max((l1 * m + 1).bit_length() for l1 in _l1_per_channel(q)), 2)


def _as_integers(t: Tensor, name: str = "q") -> Tensor:
    """``t`` as int64, or a clear error: it must be a non-empty tensor of integers (any dtype)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integers, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{name} must hold integers (quantized values), but some entries are fractional")
    return t.to(torch.int64)


def _check_integer_weights(q: Tensor) -> Tensor:
    if isinstance(q, Tensor) and q.ndim != 2:
        raise ValueError(f"q must be an (out, in) matrix of integer weights, got shape {tuple(q.shape)}")
    return _as_integers(q, "q")


def worst_case_inputs(q: Tensor, input_bits: int, signed_input: bool = False) -> Tensor:
    """For every output channel, the two inputs that make its dot product largest and smallest.

    Shape (out, 2, in), for :func:`accumulate` with ``per_channel=True``: [c, 0] has x_i = x_max
    where q_ci > 0 and x_min elsewhere (the largest Σ q x), [c, 1] the reverse (the smallest). Every
    partial sum of any other input in range lies between these two sums, as 0 is in the input range.
    """
    q = _check_integer_weights(q)
    lo, hi = input_range(input_bits, signed_input)
    up = torch.where(q > 0, hi, lo)
    down = torch.where(q > 0, lo, hi)
    return torch.stack([up, down], dim=1)


def accumulator_range(q: Tensor, input_bits: int, signed_input: bool = False) -> tuple[Tensor, Tensor]:
    """(smallest, largest) value Σ_i q_ci x_ci can take over N-bit inputs, per output channel."""
    x = worst_case_inputs(q, input_bits, signed_input)
    sums = (x * _check_integer_weights(q).unsqueeze(1)).sum(-1)
    return sums[:, 1], sums[:, 0]


def min_accumulator_bits(q: Tensor, input_bits: int, signed_input: bool = False) -> int:
    """The exact smallest P for which no N-bit input overflows any channel's P-bit register.

    From :func:`accumulator_range`: the largest sum must be ≤ 2^(P−1) − 1 and the smallest ≥ −2^(P−1).
    Always ≤ :func:`a2q_accumulator_bits` (the A2Q bound is sufficient, not necessary).

    Example:
        >>> q = torch.tensor([[7, -8, 3], [0, 1, -1]])
        >>> min_accumulator_bits(q, 4), a2q_accumulator_bits(q, 4)
        (9, 10)
    """
    lo, hi = accumulator_range(q, input_bits, signed_input)
    need_hi = max(int(h).bit_length() for h in hi.clamp_min(0))
    need_lo = max(int(-x - 1).bit_length() for x in lo.clamp_max(-1))
    return 1 + max(need_hi, need_lo)


# --------------------------------------------------------------------------------------------------
# The register
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accumulation:
    """Integer dot products through a P-bit two's-complement register.

    value: the register's final content (..., out); exact: the true sums; overflows: how many adds of
    each dot product wrapped around; overflowed: whether any did; wrong: value ≠ exact.
    """

    value: Tensor
    exact: Tensor
    overflows: Tensor

    @property
    def overflowed(self) -> Tensor:
        return self.overflows > 0

    @property
    def wrong(self) -> Tensor:
        return self.value != self.exact


def _wrap(t: Tensor, acc_bits: int) -> Tensor:
    half = 2 ** (acc_bits - 1)
    return torch.remainder(t + half, 2 * half) - half


def accumulate(q: Tensor, x: Tensor, acc_bits: int, per_channel: bool = False) -> Accumulation:
    """Σ_i q_ci x_i for every output channel c, accumulated in a P-bit two's-complement register.

    The products are exact (a multiplier wide enough for them); the register wraps around at *each
    add*, in input order i = 0, 1, …, and every add whose exact result left [−2^(P−1), 2^(P−1) − 1] is
    counted. The final content is the exact sum modulo 2^P either way (two's complement is modular),
    so ``wrong`` is the same as wrapping once at the end; ``overflows`` also counts partial sums that
    wrapped and came back.

    Args:
        q: integer weights (out, in) (an integer tensor, or a float tensor holding integers).
        x: integer inputs (..., in), the same for every channel; with ``per_channel``, (out, k, in):
            k inputs for each channel (as from :func:`worst_case_inputs`).
        acc_bits: P.
        per_channel: whether x holds separate inputs for each channel.

    Returns:
        An :class:`Accumulation` with tensors of shape (..., out); (k, out) with ``per_channel``.

    Example:
        >>> acc = accumulate(torch.tensor([[7, 7]]), torch.tensor([[15, 15]]), acc_bits=8)
        >>> acc.exact.item(), acc.value.item(), acc.overflows.item()
        (210, -46, 1)
    """
    q, x, p = _check_integer_weights(q), _as_integers(x, "x"), _check_bits("acc_bits", acc_bits, 2)
    if p > 62:
        raise ValueError(f"acc_bits must be <= 62 (the register is simulated in int64), got {p}")
    if x.ndim == 0 or x.shape[-1] != q.shape[1]:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but q has shape {tuple(q.shape)}: expected (..., {q.shape[1]})"
        )
    if per_channel and (x.ndim != 3 or x.shape[0] != q.shape[0]):
        raise ValueError(
            f"per_channel inputs must have shape ({q.shape[0]}, k, {q.shape[1]}), got {tuple(x.shape)}"
        )
    products = x * q.unsqueeze(1) if per_channel else x.unsqueeze(-2) * q  # (..., out, in)
    half = 2 ** (p - 1)
    acc = torch.zeros(products.shape[:-1], dtype=torch.int64)
    overflows = torch.zeros_like(acc)
    for i in range(products.shape[-1]):
        s = acc + products[..., i]
        overflows += (s < -half) | (s >= half)
        acc = _wrap(s, p)
    if per_channel:  # (out, k) -> (k, out), like a batch of k inputs
        acc, overflows = acc.T, overflows.T
        products = products.transpose(0, 1)
    return Accumulation(value=acc, exact=products.sum(-1), overflows=overflows)


# --------------------------------------------------------------------------------------------------
# Quantizers
# --------------------------------------------------------------------------------------------------


def round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def round_to_zero_ste(x: Tensor) -> Tensor:
    """trunc(x) forward (rounds toward 0, so ``|trunc(x)| ≤ |x|``), identity backward."""
    return x + (torch.trunc(x) - x).detach()


class AccumulatorAwareLinear(nn.Module):
    """A dense layer with integer weights, quantized per output channel, optionally accumulator-aware.

    Modes:
        - ``"plain"``: q = clip(round(v/s)) with s = max|v|/(2^(b−1) − 1) per channel (no guarantee);
        - ``"a2q"``: w = g·v/‖v‖₁, q = clip(round_to_zero(w/s)), g clamped to ±s·T with
          T = :func:`a2q_l1_bound` (P, N), so ‖q‖₁ ≤ T for every channel (A2Q);
        - ``"a2q+"``: the same with v zero-centered per channel
          (:func:`~wnlib.variants.centered_l1_weight_norm`) and T = :func:`a2q_plus_l1_bound` (P, N)
          (A2Q+): positive and negative parts each ≤ T/2.

    The forward computes x (q·s)ᵀ + b on inputs x already on their quantization grid; gradients pass
    the rounding by the straight-through estimator. s is learned in the log domain (as in brevitas).

    Example:
        >>> layer = AccumulatorAwareLinear(64, 8, mode="a2q", acc_bits=10, input_bits=4)
        >>> bool(layer.integer_weight().abs().sum(1).max() <= a2q_l1_bound(10, 4))
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mode: Mode = "a2q",
        acc_bits: int | None = None,
        input_bits: int = 4,
        weight_bits: int = 4,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode != "plain" and acc_bits is None:
            raise ValueError(f"mode {mode!r} needs acc_bits (the accumulator width P the bound is for)")
        self.mode, self.acc_bits = mode, acc_bits
        self.input_bits = _check_bits("input_bits", input_bits)
        self.weight_bits = _check_bits("weight_bits", weight_bits, 2)
        w = nn.Linear(in_features, out_features).weight.detach()
        self.v = nn.Parameter(w.clone())
        self.bias = nn.Parameter(torch.zeros(out_features))
        qmax = 2 ** (self.weight_bits - 1) - 1
        self.log_s = nn.Parameter((w.abs().amax(1) / qmax).log())
        u = zero_center(w, 0) if mode == "a2q+" else w
        self.g = nn.Parameter(u.abs().sum(1))

    @property
    def l1_bound(self) -> float:
        """T for this layer's mode (inf for ``"plain"``)."""
        if self.mode == "plain":
            return math.inf
        if self.mode == "a2q":
            return a2q_l1_bound(self.acc_bits, self.input_bits)
        return a2q_plus_l1_bound(self.acc_bits, self.input_bits)

    def weight_scale(self) -> Tensor:
        """s per output channel, shape (out,)."""
        if self.mode == "plain":
            return (self.v.abs().amax(1) / (2 ** (self.weight_bits - 1) - 1)).detach().clamp_min(1e-12)
        return self.log_s.exp()

    def int_weight(self) -> Tensor:
        """q as a float tensor of integers, differentiable by the straight-through estimator."""
        lo, hi = -(2 ** (self.weight_bits - 1)), 2 ** (self.weight_bits - 1) - 1
        s = self.weight_scale()
        if self.mode == "plain":
            return round_ste(self.v / s[:, None]).clamp(lo, hi)
        t = s * (self.l1_bound * (1 - 2**-20))  # float32 rounding of w/s must not push ‖q‖₁ past T
        g = torch.maximum(torch.minimum(self.g, t), -t)  # |g|/s ≤ T
        op = centered_l1_weight_norm if self.mode == "a2q+" else l1_weight_norm
        return round_to_zero_ste(op(self.v, g, 0) / s[:, None]).clamp(lo, hi)

    def integer_weight(self) -> Tensor:
        """q as int64 (out, in), detached: what the integer hardware stores."""
        return self.int_weight().detach().round().to(torch.int64)

    def forward(self, x: Tensor) -> Tensor:
        return x @ (self.int_weight() * self.weight_scale()[:, None]).T + self.bias

    def extra_repr(self) -> str:
        p = f", acc_bits={self.acc_bits}" if self.mode != "plain" else ""
        return (
            f"in_features={self.v.shape[1]}, out_features={self.v.shape[0]}, mode={self.mode!r}{p}, "
            f"input_bits={self.input_bits}, weight_bits={self.weight_bits}"
        )
