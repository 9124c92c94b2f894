"""One epoch of training and one validation pass: the step every trained phase shares.

Every phase (the head on cached features, the top stages on cached activations, the whole network on
augmented images, the from-scratch CNN) trains by the same rule; they differ only in where their
batches come from and what module turns a batch into logits. `train_one_epoch` is that rule, as the
torchvision references write it: for each batch, forward, the loss, one optimizer step, running
totals. `validation_result` scores validation logits the same way for all of them.

Under torchrun each batch is one global batch (`--batch-size` images) split between the ranks: a
`Batch` holds this rank's share, padded to equal length, with the padding masked out of the loss and
the counts; each rank's loss is its part of the global batch's mean loss, so a step is the step one
process would take.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.distributed import Share
from tlearn.core.precision import train_autocast
from tlearn.models.backbones import set_train_mode_frozen_bn


@dataclass(frozen=True)
class Batch:
    """This rank's share of one global batch."""

    x: torch.Tensor  # inputs of the share: images, cached features or cached activations
    target: torch.Tensor  # class indices, or (n, K) soft targets when MixUp/CutMix mixed the batch
    labels: torch.Tensor  # class indices (what accuracy counts)
    share: Share
    size: int  # images in the global batch
    denominator: float  # what the global batch's mean loss divides by (see `loss_denominator`)


@dataclass(frozen=True)
class Step:
    """What one optimizer step needs: the forward module, the optimizer and its schedule, the loss."""

    net: nn.Module  # batch inputs -> logits (wrapped in DistributedDataParallel under torchrun)
    train_modules: Sequence[nn.Module]  # put in training mode (BatchNorm stays in inference mode) each epoch
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    weight: torch.Tensor | None = None  # class weights, on the training device
    label_smoothing: float = 0.0
    precision: str = "fp32"


def train_one_epoch(step: Step, batches: Iterable[Batch], *, images: int) -> tuple[float, float]:
    """Train on every batch once; (mean loss, accuracy) over the epoch's `images`, the same on every rank."""
    dev = distributed.device()
    for module in step.train_modules:
        set_train_mode_frozen_bn(module)
    total, correct = 0.0, 0
    for b in batches:
        x, target, labels = b.x.to(dev, non_blocking=True), b.target.to(dev), b.labels.to(dev)
        with train_autocast(step.precision, dev):
            logits = step.net(x)
        loss = share_loss(
            logits, target, b.share, weight=step.weight, label_smoothing=step.label_smoothing, denominator=b.denominator
        )
        optimizer_step(loss, step.optimizer, step.scheduler, step.scaler)
        total += float(loss.detach()) * b.size
        correct += share_correct(logits, labels, b.share)
    loss_sum, right = distributed.sum_across(total, correct)
    return loss_sum / images, right / images


def validation_result(logits: torch.Tensor, labels: torch.Tensor, share: Share) -> tuple[float, float]:
    """(mean loss, accuracy) over all validation images, from every rank's share: the same on every rank."""
    real = torch.from_numpy(share.real)
    losses = nn.functional.cross_entropy(logits.float().cpu(), labels, reduction="none")
    loss_sum, correct = distributed.sum_across(float(losses[real].sum()), share_correct(logits.cpu(), labels, share))
    return loss_sum / share.total, correct / share.total


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """One step on `loss`, this rank's part of the global batch's mean loss (the parts sum to it).

    DistributedDataParallel averages the gradients over the ranks, so the part is scaled by the world
    size: the average of the scaled parts' gradients is the gradient of their sum, as in one process.
    """
    optimizer.zero_grad()
    loss = loss * distributed.world().size
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:  # fp16 on a GPU: scale the loss so small gradients do not underflow
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()


def loss_denominator(labels: torch.Tensor | np.ndarray, weight: torch.Tensor | None, *, soft: bool = False) -> float:
    """What the mean loss of a whole global batch divides by, as PyTorch's cross-entropy does: the
    number of images, or with class weights (and hard targets) the sum of their classes' weights."""
    if weight is None or soft:
        return float(len(labels))
    return float(weight.cpu()[torch.as_tensor(labels)].sum())


def share_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    share: Share,
    *,
    weight: torch.Tensor | None,
    label_smoothing: float,
    denominator: float,
) -> torch.Tensor:
    """This rank's part of the global batch's mean cross-entropy: its real images' losses over the
    global batch's `denominator`. The parts of all ranks sum to the loss one process computes."""
    per_image = nn.functional.cross_entropy(
        logits.float(), target, weight=weight, label_smoothing=label_smoothing, reduction="none"
    )
    real = torch.from_numpy(share.real).to(per_image.device)
    return (per_image * real).sum() / denominator


def share_correct(logits: torch.Tensor, y: torch.Tensor, share: Share) -> int:
    """Correct predictions among this rank's real images (the padding does not count)."""
    real = torch.from_numpy(share.real).to(logits.device)
    return int(((logits.argmax(1) == y.to(logits.device)) & real).sum())


def global_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The epoch's global batches, in order: consecutive slices of the shuffled `order`."""
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
