"""End-to-end training on augmented images: phase 2 when no cut is possible, and the from-scratch CNN.

Each epoch makes a fresh random view of every training image (transforms in worker processes, so
they overlap the network) and trains the unfrozen stages and the head on them; BatchNorm stays in
inference mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import augmented_view, build_eval_transform, build_train_transform, mix_batch, view_seed
from tlearn.data.labelled import LabelledImages
from tlearn.models.backbones import Stage
from tlearn.models.classifier import Classifier
from tlearn.training.config import FinetuneConfig, TrainConfig
from tlearn.training.epoch import (
    Batch,
    Step,
    global_batches,
    loss_denominator,
    train_one_epoch,
    validation_result,
)
from tlearn.training.features import input_batches
from tlearn.training.loop import EpochPlan, PhaseResult, run_epochs
from tlearn.training.optim import make_step, param_groups

EpochCallback = Callable[[dict[str, Any]], None]


def train_network(
    classifier: Classifier,
    data: LabelledImages,
    stages: Sequence[Stage],
    ft: FinetuneConfig,
    *,
    cfg: TrainConfig,
    prep: Preprocessing,
    lr: float,
    class_weight: torch.Tensor | None = None,
    loop: EpochPlan,
) -> PhaseResult:
    """Train the unfrozen `stages` and the head end to end on augmented images (also the scratch loop)."""
    dev = distributed.device()
    with distributed.moved(classifier, dev):
        train_idx = data.split.train
        data.pixels.load()
        model = classifier.to(memory_format=torch.channels_last)
        # Freeze first: DistributedDataParallel registers the parameters that train when it wraps.
        groups = param_groups(classifier, stages, lr=lr, decay=ft.lr_decay, weight_decay=ft.weight_decay)
        step = make_step(
            distributed.wrap(_TrainForward(model)),
            groups,
            ft, train_modules=[model], epochs=loop.epochs, steps_per_epoch=-(-len(train_idx) // cfg.batch_size),
            class_weight=class_weight, precision=cfg.precision,
        )  # fmt: skip
        validate = _validation(model, data, prep)
        return run_epochs(
            model=model, optimizer=step.optimizer, scheduler=step.scheduler, patience=ft.patience,
            train_epoch=lambda e: train_one_epoch(step, _batches(data, cfg, prep, step, e), images=len(train_idx)),
            validate=validate, **loop.options(),
        )  # fmt: skip


def _batches(data: LabelledImages, cfg: TrainConfig, prep: Preprocessing, step: Step, epoch: int) -> Iterator[Batch]:
    """One epoch of augmented batches: a fresh view of every training image, seeded by image and epoch."""
    train_tf = build_train_transform(cfg.augment, prep)
    mixing = cfg.augment.has_batch_mix
    batches = global_batches(np.random.permutation(data.split.train), cfg.batch_size)
    shares = [distributed.shard(b) for b in batches]
    seeds = {int(i): view_seed(cfg.seed, int(data.sha256[i][:15], 16), 1000 + epoch) for i in data.split.train}
    views = [partial(augmented_view, data.pixels[i], train_tf, seed=seeds[int(i)]) for s in shares for i in s.items]
    # Every share but the last has len(shares[0]) images, so the inputs cut at that size are the shares.
    for batch, share, x in zip(batches, shares, input_batches(views, len(shares[0])), strict=True):
        y = torch.from_numpy(data.labels[share.items])
        target = y
        if mixing:
            x, target = mix_batch(
                x, y, num_classes=len(data.classes), mixup_alpha=cfg.augment.mixup, cutmix_alpha=cfg.augment.cutmix
            )
        denominator = loss_denominator(data.labels[batch], step.weight, soft=mixing)
        yield Batch(x, target, y, share, len(batch), denominator)


def _validation(
    model: Classifier, data: LabelledImages, prep: Preprocessing
) -> Callable[[], tuple[float, float] | None]:
    """Validation on this rank's share of the clean validation images (made once), with the bundle's TTA."""
    eval_tf = build_eval_transform(prep)
    val_idx = data.split.val
    val_share = distributed.shard(np.arange(len(val_idx)))
    mine = val_idx[val_share.items]
    val_x = torch.stack([eval_tf(data.pixels[i]) for i in mine]) if len(val_idx) else None
    val_y = torch.from_numpy(data.labels[mine])

    def validate() -> tuple[float, float] | None:
        if val_x is None:
            return None
        model.eval()
        logits = torch.cat([eval_logits(model, val_x[s : s + 64]) for s in range(0, len(val_x), 64)])
        return validation_result(logits, val_y, val_share)

    return validate


class _TrainForward(nn.Module):
    """The training forward pass as a module of its own: what DistributedDataParallel wraps."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return train_logits(self.classifier, x)


def train_logits(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Training forward pass without the test-time flip (random flips are part of the augmentation)."""
    return model.head(model.features(x.contiguous(memory_format=torch.channels_last)))


def eval_logits(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Float logits on the CPU, computed where the model is."""
    x = x.to(distributed.module_device(model), non_blocking=True)
    with torch.inference_mode():
        return model(x.contiguous(memory_format=torch.channels_last)).float().cpu()
