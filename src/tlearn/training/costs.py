"""What fine-tuning would cost on this machine, measured: the seconds `--method auto` sets against its budget.

One small batch through each candidate cut (the frozen bottom as it runs, once per cached view; the top
in inference, which gives the head phase its features; one training step of the top) and one training
step of the whole network give the cost per image, and making a few real inputs (an eval crop and an
augmented view of a training image) gives the cost of the inputs; the estimate adds the cached views,
the head phase's features, the epochs and the final evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from tlearn.core.timing import Deadline
from tlearn.data.labelled import LabelledImages
from tlearn.models.backbones import Backbone
from tlearn.models.classifier import FeatureTrunk
from tlearn.models.cut import cut_trunk, eval_mode, frozen, top_input
from tlearn.training.config import TrainConfig
from tlearn.training.top_phase import bottom_runner
from tlearn.training.views import plan_views

FINETUNE_EPOCHS = 12  # what auto fine-tunes for unless --epochs says otherwise
TIMING_BATCH = 8
INPUT_SAMPLE = 4  # training images whose eval crop and augmented view are made to time the inputs
# What an epoch's timed step leaves out: validation each epoch, data movement, the optimizer. On
# eurosat_rgb200 (3 stages) an epoch took 11.1 s against 6.3 s timed; the inputs and cached views,
# timed on real images, came within 15% of what they cost (benchmarks/suite.py, 2026-12-01).
EPOCH_OVERHEAD = 1.75


def forward_speed(module: nn.Module, size: tuple[int, int], batch: int = 16) -> float:
    x = torch.rand(batch, 3, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        module(x[:2])
        start = time.perf_counter()
        module(x)
    return batch / max(time.perf_counter() - start, 1e-6)


@dataclass(frozen=True)
class FinetuneCosts:
    total: dict[str, float]  # "1", "2", "3", "all" stages unfrozen -> seconds for all the epochs and `views`
    per_epoch: dict[str, float]  # the same keys -> seconds each epoch adds
    per_view: dict[str, float]  # the same keys -> seconds each cached augmented view (of every training image) adds
    views: int  # the augmented views per training image `total` counts


def finetune_estimates(backbone: Backbone, data: LabelledImages, cfg: TrainConfig) -> FinetuneCosts:
    """Seconds to fine-tune with the last 1, 2, 3 and all stages unfrozen, timed on this machine.

    For each cut, one small batch through the frozen bottom (as it runs: once per cached view, in float32
    on the engine `boundary_activations` uses) and one training step of the top give the cost per image; whole-network
    training is timed the same way. The estimate adds the cached views, the epochs and the final
    evaluation of the test images.
    """
    epochs = cfg.finetune.epochs or FINETUNE_EPOCHS
    n_train, n_val, n_test = len(data.split.train), len(data.split.val), len(data.split.test)
    clean, views = (n_train + n_val) * 2, cfg.views_for("finetune")
    clean_input = _seconds_per_input(data, backbone, cfg, augmented=False)
    view_input = _seconds_per_input(data, backbone, cfg, augmented=True)
    trunk = FeatureTrunk(backbone.model)
    with eval_mode(trunk):  # timing must not touch BatchNorm statistics
        fixed, per_epoch, per_row = _timed_steps(backbone, trunk, n_train, n_test, clean, view_input, cfg)
    fixed = {k: v + clean * clean_input for k, v in fixed.items()}
    per_view = {k: n_train * (per_row[k] + view_input) for k in fixed}
    return FinetuneCosts(
        total={k: fixed[k] + views * per_view[k] + epochs * per_epoch[k] * EPOCH_OVERHEAD for k in fixed},
        per_epoch={k: v * EPOCH_OVERHEAD for k, v in per_epoch.items()},
        per_view=per_view,
        views=views,
    )


def _timed_steps(
    backbone: Backbone,
    trunk: FeatureTrunk,
    n_train: int,
    n_test: int,
    rows: int,
    view_input: float,
    cfg: TrainConfig,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Per key: the seconds paid once (the `rows` clean and mirror inputs cached, the final evaluation),
    the seconds per epoch, and the network's seconds per cached row (what each augmented view adds)."""
    prep = backbone.preprocessing
    x = torch.rand(TIMING_BATCH, 3, *prep.input_size).contiguous(memory_format=torch.channels_last)
    full_step = _seconds_per_image(partial(_train_step, trunk, x), trunk)
    full_forward = _seconds_per_image(partial(trunk, x), None)
    evaluation = 2 * n_test * full_step / 3
    # End to end, the head phase's features come from the whole frozen network, and every epoch makes
    # its augmented images anew.
    fixed = {"all": rows * full_forward + evaluation}
    per_epoch = {"all": n_train * (full_step + view_input)}
    per_row = {"all": full_forward}
    for n in (1, 2, 3):
        cut = cut_trunk(trunk, backbone.stages[-n:], input_size=prep.input_size)
        if cut is None:
            fixed[str(n)], per_epoch[str(n)], per_row[str(n)] = fixed["all"], per_epoch["all"], per_row["all"]
            continue
        runner = bottom_runner(cut, prep)  # the bottom as boundary_activations runs it
        with frozen(trunk):  # the stem is not a submodule of the bottom
            a = top_input(torch.from_numpy(runner(x.contiguous())))  # the first call exports it: not timed
        bottom = _seconds_per_image(partial(runner, x.contiguous()), None)
        top = _seconds_per_image(partial(_train_step, cut.top, a), cut.top)
        top_forward = _seconds_per_image(partial(cut.top, a), None)  # the head phase's features
        per_row[str(n)] = bottom + top_forward
        fixed[str(n)], per_epoch[str(n)] = rows * per_row[str(n)] + evaluation, n_train * top
    trunk.zero_grad(set_to_none=True)
    return fixed, per_epoch, per_row


FINISH_FIXED_S = 15.0  # calibration, the bundle, the report and its pictures


def finish_seconds(module: nn.Module, size: tuple[int, int], data: LabelledImages, deadline: Deadline) -> float:
    """What a run needs after training: the final network on the validation and test images (and their
    mirror images), then the bundle and report. 0 without a budget (nothing to keep it for)."""
    if deadline.seconds is None:
        return 0.0
    images = len(data.split.val) + len(data.split.test)
    return 2 * images / forward_speed(module, size) + FINISH_FIXED_S


def _seconds_per_input(data: LabelledImages, backbone: Backbone, cfg: TrainConfig, *, augmented: bool) -> float:
    """Seconds to make one model input from decoded pixels (an eval crop or an augmented view), timed on
    a few training images: on small pictures enlarged to the network's size this costs as much as the
    frozen bottom does."""
    sample = data.split.train[:INPUT_SAMPLE]
    if not len(sample):
        return 0.0
    plan = plan_views(data, backbone.preprocessing, cfg, mirror=False, views=1 if augmented else 0)
    position = {int(i): j for j, i in enumerate(data.split.train)}
    rows = [plan.fixed + position[int(i)] if augmented else int(i) for i in sample]
    plan.inputs[rows[0]]()  # warm-up: the first call decodes the image and builds the transform's state
    for r in rows:
        data.pixels[plan.image_of(r)]  # decoded before timing: decoding is paid once, whatever the views
    start = time.perf_counter()
    for r in rows:
        plan.inputs[r]()
    return (time.perf_counter() - start) / len(rows)


def _train_step(module: nn.Module, x: torch.Tensor) -> None:
    module(x).sum().backward()


def _seconds_per_image(step: Callable[[], Any], module: nn.Module | None) -> float:
    """Wall time of `step` per image of the timing batch: one warm-up call, one timed. The estimate need
    not be exact: the epoch loop measures the real epochs and fits the rest into the time budget."""
    grad = module is not None
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx:
        step()
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
    return elapsed / TIMING_BATCH
