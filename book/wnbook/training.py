"""The book's training loops: short, seeded runs whose records the chapters plot and assert on.

- :func:`lr_runs` (Theory, §2.1 of Salimans & Kingma 2016): plain SGD on the digits at several
  learning rates, recording ‖v‖ and the relative step c = ‖Δv‖/‖v‖ of the self-stabilization;
- :func:`train_curves` (Initialization, §3): Adam on a deep weight-normalized MLP from each
  initialization (torch's default, a fixed g, the data-dependent init of eq. 5–6);
- :func:`rescaled_training` and :func:`weight_decay_run` (Beyond): the scale invariance of eq. 2 as an
  effective learning rate η/‖v‖², and the equilibrium of ‖v‖ under weight decay on v.

Every loop draws its data and initial weights from fixed seeds, so a re-executed chapter gets the same
records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

import wnlib
from wnbook.datasets import digit_rows, digits
from wnbook.models import deep_mlp, digits_mlp, set_fixed_scale
from wnlib._threads import torch_threads

__all__ = [
    "INITS",
    "INIT_BATCH",
    "LRRun",
    "lr_runs",
    "rescaled_training",
    "train_curves",
    "weight_decay_run",
]

INIT_BATCH = 500  # examples in the data-dependent init batch (the paper's code uses 500 too)


@dataclass
class LRRun:
    """One SGD run of a small MLP on scikit-learn's digits at one learning rate (see :func:`lr_runs`)."""

    lr: float
    parameterization: str  # "weightnorm" or "normal"
    loss: np.ndarray  # minibatch loss per step
    final_loss: float  # cross-entropy on all 1797 digits after training
    norm_v: np.ndarray = field(default_factory=lambda: np.zeros(0))  # RMS over hidden units of ‖v‖, per step
    c: np.ndarray = field(default_factory=lambda: np.zeros(0))  # RMS over hidden units of ‖Δv‖/‖v‖
    pythagoras_error: float = float("nan")  # max over steps and units of |‖v′‖/‖v‖ − √(1+c²)|


def lr_runs(
    lrs: Sequence[float],
    parameterization: str = "weightnorm",
    steps: int = 300,
    batch_size: int = 32,
    lr_other: float = 0.1,
    seed: int = 0,
) -> list[LRRun]:
    """Plain SGD (no momentum, no weight decay) on the digits, a 64–64–10 ReLU MLP, at each of ``lrs``.

    ``lrs`` is the learning rate of the weight directions: v for weight norm (wnlib.nn.Linear), w for the
    normal parameterization; g and the biases always use ``lr_other``, because the self-stabilization of
    §2.1 protects v only (g's gradient is not projected, so nothing holds a too-large step of g back;
    these runs do not measure what g does at large rates). Same initial v (= w), same minibatches, for
    every run. Records the hidden layer's ‖v‖ and c = ‖Δv‖/‖v‖ per step (RMS over its 64 units) and
    checks ‖v′‖ = √(1 + c²)·‖v‖ at every step.
    """
    x, y = digit_rows(whole=True)
    out = []
    for lr in lrs:
        torch.manual_seed(seed)
        model = digits_mlp(parameterization)
        direction = [p for n, p in model.named_parameters() if n.endswith(("weight_v", "weight"))]
        rest = [p for n, p in model.named_parameters() if not n.endswith(("weight_v", "weight"))]
        opt = torch.optim.SGD([{"params": direction, "lr": lr}, {"params": rest, "lr": lr_other}])
        gen = torch.Generator().manual_seed(seed)
        losses, norms, cs, pyth = [], [], [], 0.0
        for _ in range(steps):
            idx = torch.randint(0, len(y), (batch_size,), generator=gen)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            if parameterization == "weightnorm":
                v = model[0].weight_v
                n0 = v.detach().norm(dim=1)
                c = lr * v.grad.norm(dim=1) / n0
            opt.step()
            losses.append(loss.item())
            if parameterization == "weightnorm":
                n1 = model[0].weight_v.detach().norm(dim=1)
                pyth = max(pyth, float((n1 / n0 - torch.sqrt(1 + c**2)).abs().max()))
                norms.append(float(n0.square().mean().sqrt()))
                cs.append(float(c.square().mean().sqrt()))
        with torch.no_grad():
            final = float(nn.functional.cross_entropy(model(x), y))
        out.append(
            LRRun(
                lr,
                parameterization,
                np.array(losses),
                final,
                np.array(norms),
                np.array(cs),
                pyth if parameterization == "weightnorm" else float("nan"),
            )
        )
    return out


INITS = ("default", "fixed", "ddi")


def train_curves(
    inits: Sequence[str] = INITS,
    depth: int = 20,
    steps: int = 300,
    batch_size: int = 100,
    lr: float = 1e-3,
    scale: float = 1.0,
    seed: int = 0,
) -> dict[str, dict[str, object]]:
    """Train the classifier ``deep_mlp(depth, out_features=10)`` on the digits with Adam from each
    initialization in ``inits`` (``default``, ``fixed``: every g = ``scale``, ``ddi``: data-dependent
    init with ``init_scale=scale``), on the same minibatches. Returns, per init, the training loss
    at every step and the final test error."""
    data = digits()
    x_train, x_test = data.x_train.flatten(1), data.x_test.flatten(1)
    y_train, y_test = data.y_train, data.y_test
    x_init = x_train[:INIT_BATCH]  # the Initialization chapter's init batch
    order = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, len(x_train), (batch_size,), generator=order) for _ in range(steps)]
    out: dict[str, dict[str, object]] = {}
    for init in inits:
        model = deep_mlp(depth, out_features=10, seed=seed)
        if init == "fixed":
            set_fixed_scale(model, scale)
        elif init == "ddi":
            wnlib.data_dependent_init(model, x_init, init_scale=scale)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for idx in batches:
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            error = (model(x_test).argmax(1) != y_test).double().mean().item()
        out[init] = {"loss": np.array(losses), "test_error": error}
    return out


def rescaled_training(
    alpha: float = 10.0,
    optimizer: Literal["sgd", "adam"] = "sgd",
    lr: float = 0.1,
    steps: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Train a ``wnlib.nn.Linear`` classifier twice: from v₀ with step η, and from α·v₀ with step
    α²η (SGD) or α·η (Adam) on v only, g and bias unchanged. Returns how far the second run's v/α
    and loss ever get from the first's (relative), which is rounding error: the runs are the same.

    For SGD: ∇f(αv) = ∇f(v)/α, so α²η·∇f(αv) = α·η∇f(v) and the second run stays at α times the
    first. The direction v/‖v‖ therefore moves as if the step were η/‖v‖²: the effective learning
    rate of the direction. Adam divides the gradient by its own running scale, so its step does not
    shrink with 1/α and the matching step is α·η, an effective rate η/‖v‖ (exactly only if Adam's eps
    is negligible; here eps = 1e-16). float64.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, 16, 8, generator=gen, dtype=torch.float64)
    ys = torch.randint(0, 3, (steps, 16), generator=gen)

    def run(scale: float, v_lr: float) -> tuple[list[Tensor], list[float]]:
        torch.manual_seed(seed)
        layer = wnlib.nn.Linear(8, 3, dtype=torch.float64)
        with torch.no_grad():
            layer.weight_v.mul_(scale)
        groups = [{"params": [layer.weight_v], "lr": v_lr}, {"params": [layer.weight_g, layer.bias]}]
        if optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=lr)
        else:
            opt = torch.optim.Adam(groups, lr=lr, eps=1e-16)
        vs, losses = [], []
        for x, y in zip(xs, ys, strict=True):
            loss = torch.nn.functional.cross_entropy(layer(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            vs.append(layer.weight_v.detach().clone())
            losses.append(loss.item())
        return vs, losses

    v_scale = alpha**2 if optimizer == "sgd" else alpha
    with torch_threads(1):
        va, la = run(1.0, lr)
        vb, lb = run(alpha, v_scale * lr)
    v_dev = max(((b / alpha - a).norm() / a.norm()).item() for a, b in zip(va, vb, strict=True))
    l_dev = max(abs(a - b) / abs(a) for a, b in zip(la, lb, strict=True))
    return {
        "max relative deviation of v": v_dev,
        "max relative deviation of loss": l_dev,
        "norm growth (first run)": (va[-1].norm() / va[0].norm()).item(),
    }


def weight_decay_run(
    lr: float = 0.5,
    weight_decay: float = 1e-3,
    steps: int = 2000,
    seed: int = 0,
    n_in: int = 16,
    n_out: int = 4,
    batch: int = 32,
    label_noise: float = 0.2,
) -> dict[str, np.ndarray]:
    """SGD on a weight-normalized linear classifier with weight decay λ on v only (not on g or bias).

    The data never repeat: each step draws a fresh batch x ~ N(0, I) labelled by a random linear
    teacher, with a fraction ``label_noise`` of labels replaced at random, so the gradient stays
    noisy. Returns per step: ``norm`` (mean over output units of ‖v_i‖, before the step), ``angle``
    (mean over units of the angle between v_i before and after the step, radians), ``grad_norm``
    (mean ‖∇_{v_i} f‖) and ``norm_identity`` (the largest relative error, over units, of
    ‖v'‖² = (1 − ηλ)²‖v‖² + η²‖∇f‖²; rounding error only).
    """
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n_out, n_in, generator=gen)
    xs = torch.randn(steps, batch, n_in, generator=gen)
    ys = (xs @ teacher.T).argmax(-1)
    flip = torch.rand(steps, batch, generator=gen) < label_noise
    ys = torch.where(flip, torch.randint(0, n_out, (steps, batch), generator=gen), ys)

    torch.manual_seed(seed)
    layer = wnlib.nn.Linear(n_in, n_out, dtype=torch.float64)
    v = layer.weight_v
    opt = torch.optim.SGD(
        [{"params": [v], "weight_decay": weight_decay}, {"params": [layer.weight_g, layer.bias]}], lr=lr
    )
    out = {k: np.empty(steps) for k in ("norm", "angle", "grad_norm", "norm_identity")}
    shrink = (1 - lr * weight_decay) ** 2
    with torch_threads(1):
        for t in range(steps):
            before = v.detach().clone()
            loss = torch.nn.functional.cross_entropy(layer(xs[t].double()), ys[t])
            opt.zero_grad()
            loss.backward()
            grad = v.grad.detach().clone()
            opt.step()
            after = v.detach()
            n0, n1, gn = before.norm(dim=1), after.norm(dim=1), grad.norm(dim=1)
            cos = ((before * after).sum(1) / (n0 * n1)).clamp(-1.0, 1.0)
            predicted = shrink * n0**2 + lr**2 * gn**2
            out["norm"][t] = n0.mean().item()
            out["angle"][t] = torch.arccos(cos).mean().item()
            out["grad_norm"][t] = gn.mean().item()
            out["norm_identity"][t] = ((n1**2 - predicted).abs() / n1**2).max().item()
    return out
