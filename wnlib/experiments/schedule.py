"""The paper's Adam schedule: constant learning rate, then a linear decay to zero with β1 lowered.

The paper's CIFAR-10 code (Salimans & Kingma 2016, §5.1) trains 200 epochs and, at the start of each
epoch e, sets lr = lr₀·min(2 − e/100, 1) and β1 = 0.9 for e < 100, 0.5 after: the rate is constant for
the first half, then decays linearly towards 0 over the second half, while Adam's momentum drops from
0.9 to 0.5 in one step when the decay begins. :class:`AdamSchedule` is the same schedule evaluated at
every optimizer step instead of every epoch, with the decay's start as a fraction of training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "AdamSchedule",
]


@dataclass(frozen=True)
class AdamSchedule:
    """Learning rate and β1 at each of ``total_steps`` optimizer steps.

    Attributes:
        lr: the constant rate lr₀ before the decay.
        total_steps: the number of optimizer steps in the whole run.
        decay_start: the fraction of training after which the rate decays linearly to 0
            (the paper: 100 of 200 epochs, 0.5). 1.0 means no decay.
        beta1: Adam's β1 before the decay (paper: 0.9).
        beta1_decay: β1 during the decay (paper: 0.5).
    """

    lr: float
    total_steps: int
    decay_start: float = 0.5
    beta1: float = 0.9
    beta1_decay: float = 0.5

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(f"decay_start must be in [0, 1], got {self.decay_start}")

    @property
    def decay_step(self) -> int:
        """The first step of the decay."""
        return round(self.decay_start * self.total_steps)

    def lr_at(self, step: int) -> float:
        """lr₀ before the decay, then lr₀·(T − step)/(T − S): lr₀ at S, falling to lr₀/(T − S) at T − 1."""
        start = self.decay_step
        if step < start:
            return self.lr
        return self.lr * max(self.total_steps - step, 0) / (self.total_steps - start)

    def beta1_at(self, step: int) -> float:
        """β1 before the decay, ``beta1_decay`` from its first step on."""
        return self.beta1 if step < self.decay_step else self.beta1_decay

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every parameter group of an Adam optimizer to this step's rate and β1."""
        lr, beta1 = self.lr_at(step), self.beta1_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
            group["betas"] = (beta1, group["betas"][1])
