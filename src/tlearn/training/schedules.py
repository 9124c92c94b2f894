"""Learning-rate schedules as one pure function of the step, so every phase and resume agree.

`lr_factor` multiplies each parameter group's base rate; `LambdaLR` applies it per optimizer step.
- cosine: linear warm-up, then half a cosine down to 1% of the rate (the usual default);
- onecycle: rise over the first 30% of the steps from 4% to the rate, then a cosine down to ~0;
- step: x0.1 at 1/2 and 3/4 of the steps;
- constant: the rate throughout;
- exponential: the rate for `decay_after` epochs, then x0.9 per epoch (the classic Keras recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

FLOOR = 0.01  # cosine ends at 1% of the base rate rather than 0: the last epochs still learn


def lr_factor(
    schedule: str,
    step: int,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    decay_after: int = 3,
) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `total_steps`."""
    total = max(total_steps, 1)
    t = min(step, total - 1) / max(total - 1, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
    if schedule == "exponential":
        epoch = step // max(steps_per_epoch, 1)
        return 0.9 ** max(0, epoch - decay_after + 1) if epoch >= decay_after else 1.0
    if schedule == "onecycle":
        peak = 0.3
        if t < peak:
            return 0.04 + 0.96 * t / peak
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - peak) / (1 - peak)))
    if schedule == "cosine":
        warm = min(warmup_epochs * steps_per_epoch, total // 2)
        if step < warm:
            return (step + 1) / (warm + 1)
        u = (step - warm) / max(total - warm - 1, 1)
        return FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))
    raise ValueError(f"unknown schedule {schedule!r}")


@dataclass(frozen=True)
class ScheduleFn:
    """`lr_factor` with its options bound: what `LambdaLR` calls per step (and saves in checkpoints)."""

    schedule: str
    total_steps: int
    steps_per_epoch: int
    warmup_epochs: int = 0
    decay_after: int = 3

    def __call__(self, step: int) -> float:
        return lr_factor(
            self.schedule,
            step,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            warmup_epochs=self.warmup_epochs,
            decay_after=self.decay_after,
        )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    decay_after: int = 3,
) -> torch.optim.lr_scheduler.LambdaLR:
    fn = ScheduleFn(schedule, epochs * steps_per_epoch, steps_per_epoch, warmup_epochs, decay_after)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def retarget(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> None:
    """Make the schedule end after `epochs` epochs instead (the time budget shortened the phase):
    the rest of the run follows the same curve compressed, so the rate still comes down at the end."""
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.lr_lambdas = [
            replace(fn, total_steps=epochs * fn.steps_per_epoch) if isinstance(fn, ScheduleFn) else fn
            for fn in scheduler.lr_lambdas
        ]
