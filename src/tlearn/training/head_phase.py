"""Phase 1 of fine-tuning (warm-up): a new head trains on cached features of the frozen base.

The base is frozen, so its output never changes: the head trains on the features of the clean
training images, their mirror images and K augmented views, in seconds, until the validation loss
stops improving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.threads import torch_threads
from tlearn.data.labelled import LabelledImages
from tlearn.models.classifier import HeadSpec, build_head
from tlearn.models.tta import mirror_logits
from tlearn.training.config import FinetuneConfig
from tlearn.training.epoch import Batch, global_batches, loss_denominator, train_one_epoch, validation_result
from tlearn.training.loop import PhaseResult, run_epochs
from tlearn.training.optim import make_step
from tlearn.training.views import FeatureSet

HEAD_BATCH = 64
EpochCallback = Callable[[dict[str, Any]], None]


def train_head(
    head: nn.Sequential,
    feats: FeatureSet,
    data: LabelledImages,
    ft: FinetuneConfig,
    *,
    seed: int,
    class_weight: torch.Tensor | None,
    mirror: bool,
    checkpoint: Path | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> PhaseResult:
    """Train the head on cached features (clean, mirror and augmented views of the training images)."""
    x, y = _training_rows(feats, data)
    val = data.split.val
    vx = torch.from_numpy(feats.clean[val])
    vx_mirror = torch.from_numpy(feats.mirror[val]) if (mirror and feats.mirror is not None) else None
    vy = torch.from_numpy(data.labels[val])
    dev = distributed.device()
    val_share = distributed.shard(np.arange(len(vy)))
    with distributed.moved(head, dev), torch_threads(1):  # small matrices: one thread is fastest
        step = make_step(
            distributed.wrap(head), list(head.parameters()), ft, train_modules=[head], epochs=ft.head_epochs,
            steps_per_epoch=-(-len(x) // HEAD_BATCH), class_weight=class_weight, lr=ft.head_lr,
        )  # fmt: skip

        def batches() -> Iterator[Batch]:
            for batch in global_batches(torch.randperm(len(x)).numpy(), HEAD_BATCH):
                share = distributed.shard(batch)
                idx = torch.from_numpy(share.items)
                denominator = loss_denominator(y[torch.from_numpy(batch)], step.weight)
                yield Batch(x[idx], y[idx], y[idx], share, len(batch), denominator)

        def validate() -> tuple[float, float] | None:
            if not len(vy):
                return None
            head.eval()
            idx = torch.from_numpy(val_share.items)
            with torch.no_grad():
                logits = head(vx[idx].to(dev))
                if vx_mirror is not None:
                    logits = mirror_logits(logits, head(vx_mirror[idx].to(dev)))
            return validation_result(logits, vy[idx], val_share)

        return run_epochs(
            phase="head", model=head, optimizer=step.optimizer, scheduler=step.scheduler, epochs=ft.head_epochs,
            patience=ft.patience, train_epoch=lambda e: train_one_epoch(step, batches(), images=len(x)),
            validate=validate, seed=seed, checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip


def _training_rows(feats: FeatureSet, data: LabelledImages) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training row (clean, mirror, views) and its label."""
    train = data.split.train
    rows = [feats.clean[train], *([feats.mirror[train]] if feats.mirror is not None else []), feats.views]
    owners = np.concatenate([train] * (2 if feats.mirror is not None else 1) + [feats.view_owner])
    return torch.from_numpy(np.concatenate(rows)), torch.from_numpy(data.labels[owners])


def seeded_head(spec: HeadSpec, seed: int) -> nn.Sequential:
    """A new head whose initial weights depend on the seed only (not on what ran before in the process)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_head(spec)


def class_weights(data: LabelledImages, mode: str) -> torch.Tensor | None:
    """Inverse class frequency in the training part ("balanced"), or None."""
    if mode != "balanced":
        return None
    counts = np.bincount(data.labels[data.split.train], minlength=len(data.classes)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)
