"""What fine-tuning would cost on this machine, measured: the seconds `--method auto` sets against its budget.

One small batch through each candidate cut (the frozen bottom as it runs, once per cached view, and one
training step of the top) and one training step of the whole network give the cost per image; the
estimate adds the cached views, the epochs and the final evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from tlearn.core.precision import autocast
from tlearn.core.timing import Deadline
from tlearn.data.labelled import LabelledImages
from tlearn.models.backbones import Backbone
from tlearn.models.classifier import FeatureTrunk
from tlearn.models.cut import cut_trunk, eval_mode, top_input
from tlearn.training.config import TrainConfig

FINETUNE_EPOCHS = 12  # what auto fine-tunes for unless --epochs says otherwise
TIMING_BATCH = 8
# What the timed steps leave out: making augmented views, the head phase, validation each epoch, data
# movement. Measured with benchmarks/flowers.py: fine-tuning took 1.75x the sum of its timed steps.
ESTIMATE_OVERHEAD = 1.75


def forward_speed(module: nn.Module, size: tuple[int, int], batch: int = 16) -> float:
    x = torch.rand(batch, 3, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        module(x[:2])
        start = time.perf_counter()
        module(x)
    return batch / max(time.perf_counter() - start, 1e-6)


@dataclass(frozen=True)
class FinetuneCosts:
    total: dict[str, float]  # "1", "2", "3", "all" stages unfrozen -> seconds for all the epochs
    per_epoch: dict[str, float]  # the same keys -> seconds each epoch adds


def finetune_estimates(backbone: Backbone, data: LabelledImages, cfg: TrainConfig) -> FinetuneCosts:
    """Seconds to fine-tune with the last 1, 2, 3 and all stages unfrozen, timed on this machine.

    For each cut, one small batch through the frozen bottom (as it runs: once per cached view, in the
    run's precision) and one training step of the top give the cost per image; whole-network
    training is timed the same way. The estimate adds the cached views, the epochs and the final
    evaluation of the test images.
    """
    epochs = cfg.finetune.epochs or FINETUNE_EPOCHS
    n_train, n_val, n_test = len(data.split.train), len(data.split.val), len(data.split.test)
    rows = (n_train + n_val) * 2 + n_train * cfg.views_for("finetune")
    trunk = FeatureTrunk(backbone.model)
    with eval_mode(trunk):  # timing must not touch BatchNorm statistics
        fixed, per_epoch = _timed_steps(backbone, trunk, n_train, n_test, rows, cfg)
    return FinetuneCosts(
        total={k: (fixed[k] + epochs * per_epoch[k]) * ESTIMATE_OVERHEAD for k in fixed},
        per_epoch={k: v * ESTIMATE_OVERHEAD for k, v in per_epoch.items()},
    )


def _timed_steps(
    backbone: Backbone, trunk: FeatureTrunk, n_train: int, n_test: int, rows: int, cfg: TrainConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """Per key: the seconds paid once (cached views, final evaluation) and the seconds per epoch."""
    prep = backbone.preprocessing
    x = torch.rand(TIMING_BATCH, 3, *prep.input_size).contiguous(memory_format=torch.channels_last)
    full_step = _seconds_per_image(partial(_train_step, trunk, x), trunk)
    evaluation = 2 * n_test * full_step / 3
    fixed, per_epoch = {"all": evaluation}, {"all": n_train * full_step}
    for n in (1, 2, 3):
        cut = cut_trunk(trunk, backbone.stages[-n:], input_size=prep.input_size)
        if cut is None:
            fixed[str(n)], per_epoch[str(n)] = fixed["all"], per_epoch["all"]
            continue
        with torch.inference_mode(), autocast(cfg.precision):
            a = cut.bottom(x)
        bottom = _seconds_per_image(partial(cut.bottom, x), None, precision=cfg.precision)
        a = top_input(a.float().clone())
        top = _seconds_per_image(partial(_train_step, cut.top, a), cut.top)
        fixed[str(n)], per_epoch[str(n)] = rows * bottom + evaluation, n_train * top
    trunk.zero_grad(set_to_none=True)
    return fixed, per_epoch


FINISH_FIXED_S = 15.0  # calibration, the bundle, the report and its pictures


def finish_seconds(module: nn.Module, size: tuple[int, int], data: LabelledImages, deadline: Deadline) -> float:
    """What a run needs after training: the final network on the validation and test images (and their
    mirror images), then the bundle and report. 0 without a budget (nothing to keep it for)."""
    if deadline.seconds is None:
        return 0.0
    images = len(data.split.val) + len(data.split.test)
    return 2 * images / forward_speed(module, size) + FINISH_FIXED_S


def _train_step(module: nn.Module, x: torch.Tensor) -> None:
    module(x).sum().backward()


def _seconds_per_image(step: Callable[[], Any], module: nn.Module | None, *, precision: str = "fp32") -> float:
    """Wall time of `step` per image of the timing batch: one warm-up call, one timed. The estimate need
    not be exact: the epoch loop measures the real epochs and fits the rest into the time budget."""
    grad = module is not None
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx, autocast(precision if not grad else "fp32"):
        step()
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
    return elapsed / TIMING_BATCH
