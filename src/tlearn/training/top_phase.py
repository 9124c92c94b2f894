"""Phase 2 of fine-tuning on a cut network: the frozen bottom runs once, the top stages train.

When only the last stages are unfrozen, the part below them computes the same thing for the same
pixels at every epoch. `boundary_activations` runs it once per image, mirror image and augmented view
(kept in memory as float16); `train_top` trains the top stages and the head on those activations, each
epoch showing every training image in one of its cached versions, in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.preprocessing import Preprocessing
from tlearn.core.progress import Progress, no_progress
from tlearn.data.labelled import LabelledImages
from tlearn.models.backbones import Stage
from tlearn.models.classifier import Classifier, Normalize
from tlearn.models.cut import Cut, eval_mode, frozen, top_input
from tlearn.models.tta import mirror_logits
from tlearn.training.config import FinetuneConfig, TrainConfig
from tlearn.training.epoch import Batch, global_batches, loss_denominator, train_one_epoch, validation_result
from tlearn.training.features import Runner, input_batches
from tlearn.training.loop import EpochPlan, PhaseResult, run_epochs
from tlearn.training.optim import make_step, param_groups
from tlearn.training.views import FeatureSet, plan_views

EpochCallback = Callable[[dict[str, Any]], None]


def boundary_activations(
    cut: Cut,
    classifier: Classifier,
    data: LabelledImages,
    prep: Preprocessing,
    cfg: TrainConfig,
    *,
    mirror: bool,
    progress: Progress = no_progress,
) -> FeatureSet:
    """The frozen bottom's output for every image, mirror image and augmented view (float16, in memory)."""
    data.pixels.load()
    plan = plan_views(data, prep, cfg, mirror=mirror, views=cfg.views_for("finetune"))
    total = len(plan.inputs)
    progress("boundary", 0, total)

    def compute(items: np.ndarray) -> np.ndarray:
        runner = bottom_runner(cut, prep)
        chunks, done = [], 0
        for x in input_batches([plan.inputs[i] for i in items], cfg.batch_size):
            chunks.append(runner(x).astype(np.float16))
            done += len(x)
            progress("boundary", min(total, done * distributed.world().size), total)
        return np.concatenate(chunks)

    with distributed.moved(classifier, distributed.device()), frozen(classifier):
        return plan.rows(distributed.map_in_parts(total, compute))


def bottom_runner(cut: Cut, prep: Preprocessing) -> Runner:
    """The frozen bottom as the feature extractor runs a network: in float32 (ONNX Runtime on a CPU), so
    the top trains on the activations the saved network computes. A bottom in bf16 made the top learn
    from activations the bundle never sees: the saved network scored up to 6 points below its epoch."""
    embed = nn.Sequential(Normalize(prep.mean, prep.std), cut.bottom)
    return Runner(embed, "auto" if distributed.device().type == "cpu" else "torch")


def top_features(cut: Cut, acts: FeatureSet, *, batch_size: int) -> FeatureSet:
    """Pooled features from cached boundary activations (what the frozen network would output)."""
    dev = distributed.device()
    size = batch_size * 2

    def run(a: np.ndarray) -> np.ndarray:
        if not len(a):
            return np.zeros((0, 0), np.float32)

        def compute(items: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                cut.top.eval()
                out = [
                    cut.top(_activations(a[items[s : s + size]], dev)).float().cpu().numpy()
                    for s in range(0, len(items), size)
                ]
            return np.concatenate(out)

        return distributed.map_in_parts(len(a), compute)

    with distributed.moved(cut.top, dev):
        return FeatureSet(
            run(acts.clean), run(acts.mirror) if acts.mirror is not None else None, run(acts.views), acts.view_owner
        )


def _activations(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Cached (float16) activations as the top's float input on `dev`."""
    x = torch.from_numpy(a).to(dev, non_blocking=True).float()
    return top_input(x)


def train_top(
    classifier: Classifier,
    cut: Cut,
    acts: FeatureSet,
    data: LabelledImages,
    stages: Sequence[Stage],
    ft: FinetuneConfig,
    *,
    cfg: TrainConfig,
    lr: float,
    class_weight: torch.Tensor | None = None,
    loop: EpochPlan,
) -> PhaseResult:
    """Train the top stages and the head on the cached activations of the training images."""
    dev = distributed.device()
    with distributed.moved(classifier, dev):
        train_idx = data.split.train
        # Freeze first: DistributedDataParallel registers the parameters that train when it wraps.
        groups = param_groups(classifier, stages, lr=lr, decay=ft.lr_decay, weight_decay=ft.weight_decay)
        step = make_step(
            distributed.wrap(_TopAndHead(cut.top, classifier.head)),
            groups,
            ft, train_modules=[cut.top, classifier.head], epochs=loop.epochs,
            steps_per_epoch=-(-len(train_idx) // cfg.batch_size), class_weight=class_weight, precision=cfg.precision,
        )  # fmt: skip
        k = cfg.views_for("finetune")
        versions = [acts.clean[train_idx]] + ([acts.mirror[train_idx]] if acts.mirror is not None else [])
        versions += [acts.views[j::k] for j in range(k)] if k else []  # views are stored image by image
        labels = data.labels[train_idx]

        def batches(epoch: int) -> Iterator[Batch]:
            for batch in global_batches(np.random.permutation(len(train_idx)), cfg.batch_size):
                share = distributed.shard(batch)
                pick = (share.items + epoch) % len(versions)  # each image cycles through its versions
                a = np.stack([versions[v][j] for v, j in zip(pick, share.items, strict=True)])
                y = torch.from_numpy(labels[share.items])
                yield Batch(_activations(a, dev), y, y, share, len(batch), loss_denominator(labels[batch], step.weight))

        return run_epochs(
            model=classifier, optimizer=step.optimizer, scheduler=step.scheduler, patience=ft.patience,
            train_epoch=lambda e: train_one_epoch(step, batches(e), images=len(train_idx)),
            validate=_validation(classifier.head, cut, acts, data), **loop.options(),
        )  # fmt: skip


def _validation(
    head: nn.Module, cut: Cut, acts: FeatureSet, data: LabelledImages
) -> Callable[[], tuple[float, float] | None]:
    """Validation on this rank's share of the cached clean (and mirror) activations, with the bundle's TTA."""
    val_idx = data.split.val
    val_share = distributed.shard(np.arange(len(val_idx)))
    dev = distributed.device()

    def validate() -> tuple[float, float] | None:
        if not len(val_idx):
            return None
        head.eval()
        mine = val_idx[val_share.items]
        with torch.inference_mode(), eval_mode(cut.top):
            logits = head(cut.top(_activations(acts.clean[mine], dev)))
            if acts.mirror is not None:
                logits = mirror_logits(logits, head(cut.top(_activations(acts.mirror[mine], dev))))
        return validation_result(logits, torch.from_numpy(data.labels[mine]), val_share)

    return validate


class _TopAndHead(nn.Module):
    """Cached activations -> logits: what DistributedDataParallel wraps in phase 2 on a cut."""

    def __init__(self, top: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.top = top
        self.head = head

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(a))
