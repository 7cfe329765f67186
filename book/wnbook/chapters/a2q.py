"""The Quantization chapter's runs: a 4-bit MLP on the digits data with P-bit accumulators.

A2Q (Colbert et al. 2023) and A2Q+ (Colbert et al. 2024) train quantized networks whose integer dot
products provably fit a P-bit accumulator, by L1 weight normalization with a bounded gain
(:class:`wnlib.a2q.AccumulatorAwareLinear`). This module trains three versions of a 64-32-10 MLP on
scikit-learn's bundled 8×8 digits, with 4-bit unsigned inputs and hidden codes and 4-bit weights:

- ``"plain"``: per-channel 4-bit quantization-aware training, no accumulator constraint (one model,
  evaluated at every P);
- ``"post-hoc"``: the plain model with A2Q's constraint for P applied after training (no retraining);
- ``"a2q"`` and ``"a2q+"``: one model per P, trained under that P's constraint.

Each model is then run with every dot product accumulated in a simulated P-bit two's-complement
register (:func:`wnlib.a2q.accumulate`): the overflows on the test set and on the worst-case inputs of
every channel, the accuracy the register gives, and the fraction of weights that are exactly 0.
Everything is seeded, full-batch and small (seconds on one thread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wnbook.datasets import raw_digits
from wnbook.style import PALETTE, figure
from wnlib import a2q
from wnlib._threads import torch_threads

INPUT_BITS = 4
WEIGHT_BITS = 4
ACC_BITS = (16, 14, 12, 11, 10, 9, 8)
MODES = ("plain", "post-hoc", "a2q", "a2q+")
COLORS = {
    "plain": PALETTE["normal"],
    "post-hoc": PALETTE["weightnorm_init"],
    "a2q": PALETTE["weightnorm"],
    "a2q+": PALETTE["weightnorm_meanonly"],
}
LABELS = {
    "plain": "plain 4-bit QAT",
    "post-hoc": "plain, then A2Q's constraint",
    "a2q": "A2Q (L1 WN, bounded g)",
    "a2q+": "A2Q+ (zero-centered)",
}


@dataclass(frozen=True)
class Digits:
    """4-bit integer images (n, 64) in [0, 15] and labels, split into train and test."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def digits_4bit(test_fraction: float = 0.2, seed: int = 0) -> Digits:
    """scikit-learn's digits (pixels 0–16) rounded to 4-bit unsigned codes, round(x·15/16)."""
    pixels, labels = raw_digits()
    x = torch.round(torch.as_tensor(pixels, dtype=torch.float64) * 15 / 16).to(torch.int64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    return Digits(x[train], y[train], x[test], y[test])


class QuantMLP(nn.Module):
    """64 → hidden → 10 with 4-bit weights, 4-bit unsigned inputs and 4-bit unsigned hidden codes.

    The hidden codes are a = clip(round(relu(t)/s_a), 0, 15) with a learned scale s_a (straight-through
    rounding), so both layers see N = 4-bit unsigned integers, as the accumulator bounds assume.
    """

    def __init__(self, mode: a2q.Mode, acc_bits: int | None, hidden: int = 32) -> None:
        super().__init__()
        kw = {"mode": mode, "acc_bits": acc_bits, "input_bits": INPUT_BITS, "weight_bits": WEIGHT_BITS}
        self.fc1 = a2q.AccumulatorAwareLinear(64, hidden, **kw)
        self.fc2 = a2q.AccumulatorAwareLinear(hidden, 10, **kw)
        self.log_s_a = nn.Parameter(torch.zeros(()))

    def codes(self, t: Tensor) -> Tensor:
        """The hidden layer's integer codes (as floats), straight-through."""
        return a2q.round_ste(F.relu(t) / self.log_s_a.exp()).clamp(0, 2**INPUT_BITS - 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.codes(self.fc1(x.float()))
        return self.fc2(a) * self.log_s_a.exp()

    def layers(self) -> tuple[a2q.AccumulatorAwareLinear, a2q.AccumulatorAwareLinear]:
        return self.fc1, self.fc2


@dataclass(frozen=True)
class IntegerRun:
    """The network run on integers: logits and each layer's register record."""

    logits: Tensor
    accumulations: tuple[a2q.Accumulation, a2q.Accumulation]


@torch.no_grad()
def integer_forward(model: QuantMLP, x: Tensor, acc_bits: int) -> IntegerRun:
    """The model with both layers' dot products accumulated in a P-bit register (wrapping)."""
    s_a = model.log_s_a.exp()
    acc1 = a2q.accumulate(model.fc1.integer_weight(), x, acc_bits)
    t1 = acc1.value * model.fc1.weight_scale() + model.fc1.bias
    a = model.codes(t1).to(torch.int64)
    acc2 = a2q.accumulate(model.fc2.integer_weight(), a, acc_bits)
    logits = (acc2.value * model.fc2.weight_scale() + model.fc2.bias) * s_a
    return IntegerRun(logits, (acc1, acc2))


def train(mode: a2q.Mode, acc_bits: int | None, data: Digits, steps: int = 400, seed: int = 0) -> QuantMLP:
    """Full-batch Adam on the cross-entropy, under the layer's constraint at every step (QAT)."""
    torch.manual_seed(seed)
    model = QuantMLP(mode, acc_bits)
    with torch.no_grad():  # hidden scale from the first forward: the 99th percentile maps to 15
        t = model.fc1(data.x_train.float())
        top = torch.quantile(F.relu(t).flatten(), 0.99).clamp_min(1e-3)
        model.log_s_a.fill_(float(top.log()) - math.log(2**INPUT_BITS - 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    return model


@dataclass(frozen=True)
class Result:
    """One model at one accumulator width P."""

    mode: str
    acc_bits: int
    accuracy: float  # on the test set, with the P-bit register
    exact_accuracy: float  # on the test set, with exact sums
    test_overflows: int  # test dot products (example × channel, both layers) with at least one wrap
    test_wrong: int  # of those, the ones whose final register value is wrong (the rest wrapped back)
    test_dot_products: int
    worst_case_overflows: int  # worst-case inputs (channel × {max, min}, both layers) with a wrap
    worst_case_inputs: int
    zero_fraction: float  # weights exactly 0, both layers
    max_l1_over_bound: float  # max over channels of ‖q‖₁ / T (A2Q: ≤ 1; A2Q+: parts ≤ T/2)
    min_safe_bits: int  # the exact smallest P with no possible overflow, over both layers


def project_after_training(plain: QuantMLP, acc_bits: int) -> QuantMLP:
    """A2Q applied to a trained plain model without training: same v, s and hidden scale, g = ‖v‖₁,
    so the layer clamps g to s·T (a rescaling onto the L1 ball) and rounds toward zero."""
    model = QuantMLP("a2q", acc_bits, hidden=plain.fc1.v.shape[0])
    with torch.no_grad():
        model.log_s_a.copy_(plain.log_s_a)
        for new, old in zip(model.layers(), plain.layers(), strict=True):
            new.v.copy_(old.v)
            new.bias.copy_(old.bias)
            new.log_s.copy_(old.weight_scale().log())
            new.g.copy_(old.v.abs().sum(1))
    return model


def evaluate(model: QuantMLP, data: Digits, acc_bits: int, mode: str | None = None) -> Result:
    """Overflows, accuracy and sparsity of ``model`` with P = ``acc_bits`` (``mode``: its label)."""
    run = integer_forward(model, data.x_test, acc_bits)
    exact = integer_forward(model, data.x_test, 32)  # wide enough: no overflow
    qs = [layer.integer_weight() for layer in model.layers()]
    worst = [
        a2q.accumulate(q, a2q.worst_case_inputs(q, INPUT_BITS), acc_bits, per_channel=True).overflowed
        for q in qs
    ]
    bound = (
        a2q.a2q_l1_bound(acc_bits, INPUT_BITS)
        if model.fc1.mode != "a2q+"
        else a2q.a2q_plus_l1_bound(acc_bits, INPUT_BITS)
    )
    return Result(
        mode=mode or model.fc1.mode,
        acc_bits=acc_bits,
        accuracy=float((run.logits.argmax(1) == data.y_test).double().mean()),
        exact_accuracy=float((exact.logits.argmax(1) == data.y_test).double().mean()),
        test_overflows=sum(int(a.overflowed.sum()) for a in run.accumulations),
        test_wrong=sum(int(a.wrong.sum()) for a in run.accumulations),
        test_dot_products=sum(a.value.numel() for a in run.accumulations),
        worst_case_overflows=sum(int(w.sum()) for w in worst),
        worst_case_inputs=sum(w.numel() for w in worst),
        zero_fraction=float(sum(int((q == 0).sum()) for q in qs) / sum(q.numel() for q in qs)),
        max_l1_over_bound=max(float(q.abs().sum(1).max()) for q in qs) / bound,
        min_safe_bits=max(a2q.min_accumulator_bits(q, INPUT_BITS) for q in qs),
    )


def sweep(acc_bits: tuple[int, ...] = ACC_BITS, steps: int = 400, seed: int = 0) -> list[Result]:
    """Plain QAT once (evaluated at each P, as is and projected), A2Q and A2Q+ trained once per P."""
    data = digits_4bit(seed=seed)
    with torch_threads(1):
        plain = train("plain", None, data, steps, seed)
        rows = [evaluate(plain, data, p) for p in acc_bits]
        rows += [evaluate(project_after_training(plain, p), data, p, "post-hoc") for p in acc_bits]
        for mode in ("a2q", "a2q+"):
            rows += [evaluate(train(mode, p, data, steps, seed), data, p) for p in acc_bits]
    return rows


_COLUMNS = (
    "model",
    "P",
    "acc P-bit",
    "acc exact",
    "test wrapped",
    "test wrong",
    "worst case",
    "zeros",
    "min P",
)


def format_table(rows: list[Result]) -> str:
    """The sweep as a fixed-width table, one line per (model, P); counts are out of the test's
    dot products (examples × channels, both layers) and the worst cases (channels × 2, both layers)."""
    lines = ["".join(f"{c:>13}" for c in _COLUMNS)]
    for r in rows:
        cells = (
            r.mode,
            r.acc_bits,
            f"{r.accuracy:.3f}",
            f"{r.exact_accuracy:.3f}",
            r.test_overflows,
            r.test_wrong,
            f"{r.worst_case_overflows}/{r.worst_case_inputs}",
            f"{r.zero_fraction:.2f}",
            r.min_safe_bits,
        )
        lines.append("".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


def plot_sweep(rows: list[Result]) -> plt.Figure:
    """Accuracy with the P-bit register, the fraction of test dot products that overflowed, and the
    fraction of zero weights, against P."""
    fig, axes = figure(ncols=3, height=2.9)
    for mode in MODES:
        mine = sorted((r for r in rows if r.mode == mode), key=lambda r: r.acc_bits)
        p = [r.acc_bits for r in mine]
        kw = {"color": COLORS[mode], "marker": "o", "label": LABELS[mode]}
        axes[0].plot(p, [r.accuracy for r in mine], **kw)
        axes[1].plot(p, [r.test_overflows / r.test_dot_products for r in mine], **kw)
        axes[2].plot(p, [r.zero_fraction for r in mine], **kw)
    titles = ("test accuracy, P-bit register", "test dot products that overflowed", "weights exactly 0")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel("accumulator width P (bits)")
        ax.set_ylabel("fraction")
        ax.set_title(title)
        ax.set_xticks(sorted({r.acc_bits for r in rows}))
        ax.invert_xaxis()
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(
        "The constrained models never overflow; below P = 10 the plain model's overflows cost its accuracy"
    )
    return fig
