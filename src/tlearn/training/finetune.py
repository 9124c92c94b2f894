"""Two-phase fine-tuning, the textbook recipe with its traps closed by construction.

Phase 1 (warm-up): the base is frozen, so its output never changes: a new head (dropout, linear, an
optional hidden layer) trains on cached features of the clean images, their mirror images and K
augmented views, in seconds, until the validation loss stops improving.

Phase 2: the last N stages of the base are unfrozen and train together with the best phase-1 head, at
a low learning rate that shrinks further for earlier stages (discriminative rates). The optimizer is
built anew because what trains has changed. BatchNorm stays in inference mode in both phases: its
running statistics never move (see `set_train_mode_frozen_bn`).

Under torchrun each batch is the same global batch as in one process (`--batch-size` images), split
between the ranks; DistributedDataParallel averages the gradients, and each rank's loss is its part
of the global batch's mean loss, so a step is the step one process would take. Frozen BatchNorm needs
no synchronisation. Cached activations and features are computed in shares and gathered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.distributed import Share
from tlearn.core.precision import autocast, grad_scaler, train_autocast
from tlearn.core.preprocessing import Preprocessing
from tlearn.core.progress import Progress, no_progress
from tlearn.core.threads import torch_threads
from tlearn.data.augment import augmented_view, build_eval_transform, build_train_transform, mix_batch, view_seed
from tlearn.data.labelled import LabelledImages
from tlearn.data.scan import Pixels
from tlearn.models.backbones import Backbone, Stage, set_train_mode_frozen_bn
from tlearn.models.classifier import Classifier, HeadSpec, build_head
from tlearn.models.cut import Cut, cut_trunk, eval_mode
from tlearn.models.tta import mirror_logits
from tlearn.training.config import FinetuneConfig, TrainConfig
from tlearn.training.feature_method import FeatureSet, compute_features, feature_trunk, plan_views
from tlearn.training.features import extract_features, input_batches
from tlearn.training.fitted import Fitted
from tlearn.training.loop import (
    CHECKPOINT_FILE,
    PhaseResult,
    load_checkpoint,
    optimizer_step,
    read_history,
    run_epochs,
    write_history,
)
from tlearn.training.schedules import make_scheduler

log = logging.getLogger(__name__)

HEAD_BATCH = 64
EpochCallback = Callable[[dict[str, Any]], None]


def fit_finetune(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    out: Path,
    progress: Progress = no_progress,
    on_epoch_end: EpochCallback | None = None,
) -> Fitted:
    ft = cfg.finetune
    shell = feature_trunk(backbone, cfg.feature_layer)
    mirror = cfg.mirror
    prep = backbone.preprocessing
    checkpoint = out / CHECKPOINT_FILE
    resume = load_checkpoint(checkpoint) if cfg.resume else None
    history = distributed.from_main(lambda: read_history(out / "history.csv")) if resume else []
    earlier = [r for r in history if r["phase"] == "head"]

    spec = HeadSpec(len(data.classes), _feature_width(shell, prep.input_size), ft.hidden, ft.dropout)
    classifier = Classifier(shell.trunk, seeded_head(spec, cfg.seed), mean=prep.mean, std=prep.std, flip_tta=mirror)
    weights = class_weights(data, cfg.class_weight)
    learn = data.without_test()  # the phases never see the test images (nor spend time on them)
    epochs, lr = ft.epochs_for("finetune"), ft.lr_for("finetune")
    stages = _stages_to_unfreeze(backbone.stages, ft.unfreeze, classifier) if epochs else []
    mixing = cfg.augment.has_batch_mix
    cut = None if mixing else cut_trunk(classifier.trunk, stages, input_size=prep.input_size)
    # With a cut, the frozen bottom runs once per image and view; its output serves both phases.
    acts = boundary_activations(cut, classifier, learn, prep, cfg, mirror=mirror, progress=progress) if cut else None

    if resume is None or resume["phase"] == "head":
        if cut is not None and acts is not None:
            feats = top_features(cut, acts, batch_size=cfg.batch_size)
        else:
            feats = compute_features(
                shell, backbone, learn, views=cfg.views_for("finetune"), mirror=mirror, cfg=cfg, progress=progress
            )
        phase1 = train_head(
            classifier.head, feats, learn, ft, seed=cfg.seed, class_weight=weights, mirror=mirror,
            checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip
        earlier = phase1.rows
        resume = None
        if phase1.interrupted:
            return _finish(classifier, spec, data, cfg, prep, earlier, {"interrupted": "head"}, checkpoint)

    details: dict[str, Any] = {"head_epochs_run": len(earlier)}
    if stages:
        common = dict(
            cfg=cfg, phase="finetune", epochs=epochs, lr=lr, class_weight=weights, first_epoch=len(earlier) + 1,
            history=earlier,
            checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip
        if cut is not None and acts is not None:
            phase2 = train_top(classifier, cut, acts, learn, stages, ft, **common)  # type: ignore[arg-type]
        else:
            phase2 = train_network(classifier, learn, stages, ft, prep=prep, **common)  # type: ignore[arg-type]
        details.update(
            unfrozen=[s.name for s in stages],
            cached_below=cut.boundary if cut is not None else None,
            finetune_epochs_run=len(phase2.rows),
            best_epoch=phase2.best_epoch,
            stopped_early=phase2.stopped_early,
        )
        if phase2.interrupted:
            details["interrupted"] = "finetune"
        earlier = earlier + phase2.rows
    return _finish(classifier, spec, data, cfg, prep, earlier, details, checkpoint)


def _finish(
    classifier: Classifier,
    spec: HeadSpec,
    data: LabelledImages,
    cfg: TrainConfig,
    prep: Preprocessing,
    history: list[dict[str, Any]],
    details: dict[str, Any],
    checkpoint: Path,
) -> Fitted:
    ft = cfg.finetune
    summary = f"head {spec.hidden or 'linear'} with dropout {spec.dropout}, then "
    summary += (
        f"unfroze {', '.join(details['unfrozen'])} at lr {ft.lr_for('finetune'):g} (x{ft.lr_decay:g} per earlier stage)"
        if details.get("unfrozen")
        else "no fine-tuning of the base"
    )
    return finish_fitted(
        classifier, spec, data, prep, history, {"method": "finetune", "summary": summary, **details}, checkpoint
    )


def finish_fitted(
    classifier: Classifier,
    spec: HeadSpec,
    data: LabelledImages,
    prep: Preprocessing,
    history: list[dict[str, Any]],
    details: dict[str, Any],
    checkpoint: Path,
) -> Fitted:
    """Write the history, predict val/test with the final network, drop the checkpoint of a finished run."""
    if distributed.is_main():
        write_history(checkpoint.parent / "history.csv", history)
    classifier.eval()
    proba = {
        part: predict_images(classifier, data.pixels.subset(idx), prep)
        for part, idx in data.split.parts().items()
        if part != "train" and len(idx)
    }
    if not details.get("interrupted") and distributed.is_main():
        checkpoint.unlink(missing_ok=True)  # the run finished: the bundle replaces it
    return Fitted(classifier=classifier, head=spec, details=details, proba=proba, history=history)


# --- phase 1 -------------------------------------------------------------------------------------


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
    train = data.split.train
    rows = [feats.clean[train], *([feats.mirror[train]] if feats.mirror is not None else []), feats.views]
    owners = np.concatenate([train] * (2 if feats.mirror is not None else 1) + [feats.view_owner])
    x = torch.from_numpy(np.concatenate(rows))
    y = torch.from_numpy(data.labels[owners])
    val = data.split.val
    vx = torch.from_numpy(feats.clean[val])
    vx_mirror = torch.from_numpy(feats.mirror[val]) if (mirror and feats.mirror is not None) else None
    vy = torch.from_numpy(data.labels[val])

    dev = distributed.device()
    weight = class_weight.to(dev) if class_weight is not None else None
    val_share = distributed.shard(np.arange(len(vy)))
    with distributed.moved(head, dev), torch_threads(1):  # small matrices: one thread is fastest
        model = distributed.wrap(head)
        optimizer = torch.optim.AdamW(head.parameters(), lr=ft.head_lr, weight_decay=ft.weight_decay)
        steps = max(1, -(-len(x) // HEAD_BATCH))
        scheduler = make_scheduler(
            optimizer,
            ft.schedule,
            epochs=ft.head_epochs,
            steps_per_epoch=steps,
            warmup_epochs=ft.warmup_epochs,
            decay_after=ft.decay_after,
        )

        def train_epoch(e: int) -> tuple[float, float]:
            head.train()
            order = torch.randperm(len(x)).numpy()
            total, correct = 0.0, 0
            for start in range(0, len(x), HEAD_BATCH):
                batch = order[start : start + HEAD_BATCH]
                share = distributed.shard(batch)
                idx = torch.from_numpy(share.items)
                yb = y[idx].to(dev)
                logits = model(x[idx].to(dev))
                loss = share_loss(
                    logits, yb, share, weight=weight, label_smoothing=ft.label_smoothing,
                    denominator=loss_denominator(y[torch.from_numpy(batch)], weight),
                )  # fmt: skip
                optimizer_step(loss, optimizer, scheduler)
                total += float(loss.detach()) * len(batch)
                correct += share_correct(logits, yb, share)
            return epoch_result(total, correct, len(x))

        def validate() -> tuple[float, float] | None:
            if not len(vy):
                return None
            head.eval()
            idx = torch.from_numpy(val_share.items)
            with torch.no_grad():
                logits = head(vx[idx].to(dev))
                if vx_mirror is not None:
                    logits = mirror_logits(logits, head(vx_mirror[idx].to(dev)))
            return validation_result(logits.cpu(), vy[idx], val_share)

        return run_epochs(
            phase="head", model=head, optimizer=optimizer, scheduler=scheduler, epochs=ft.head_epochs,
            patience=ft.patience, train_epoch=train_epoch, validate=validate, seed=seed, checkpoint=checkpoint,
            resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip


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
    return int(((logits.argmax(1) == y) & real).sum())


def epoch_result(loss_sum: float, correct: int, n: int) -> tuple[float, float]:
    """(mean loss, accuracy) of an epoch over `n` images, from this rank's sums: summed over the ranks first."""
    total, right = distributed.sum_across(loss_sum, correct)
    return total / n, right / n


def validation_result(logits: torch.Tensor, y: torch.Tensor, share: Share) -> tuple[float, float]:
    """(mean loss, accuracy) over all validation images, from every rank's share: the same on every rank."""
    real = torch.from_numpy(share.real)
    losses = nn.functional.cross_entropy(logits.float(), y, reduction="none")
    loss_sum, correct = distributed.sum_across(float(losses[real].sum()), share_correct(logits, y, share))
    return loss_sum / share.total, correct / share.total


# --- phase 2 -------------------------------------------------------------------------------------


def param_groups(
    classifier: Classifier, stages: Sequence[Stage], *, lr: float, decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """One group per unfrozen stage (the last at `lr`, each earlier one x`decay`), the head at `lr`.

    Biases and normalisation weights get no weight decay (the usual AdamW practice). Everything not
    in a group is frozen (requires_grad False).
    """
    named = dict(classifier.trunk.backbone.named_parameters())
    for p in classifier.parameters():
        p.requires_grad_(False)
    groups: list[dict[str, Any]] = []
    for depth, stage in enumerate(reversed(stages)):
        params = [named[n] for n in stage.params if n in named]
        groups += _split_decay(params, lr=lr * decay**depth, weight_decay=weight_decay, name=stage.name)
    groups += _split_decay(list(classifier.head.parameters()), lr=lr, weight_decay=weight_decay, name="head")
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def _split_decay(params: list[nn.Parameter], *, lr: float, weight_decay: float, name: str) -> list[dict[str, Any]]:
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name} (no decay)"})
    return groups


def _training_tools(
    classifier: Classifier,
    stages: Sequence[Stage],
    ft: FinetuneConfig,
    cfg: TrainConfig,
    *,
    lr: float,
    epochs: int,
    train_images: int,
    class_weight: torch.Tensor | None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler | None, torch.Tensor | None]:
    """What an end-to-end phase trains with: AdamW over the unfrozen stages' groups (discriminative
    learning rates), its schedule, the grad scaler, and the class weights on the training device."""
    groups = param_groups(classifier, stages, lr=lr, decay=ft.lr_decay, weight_decay=ft.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    scheduler = make_scheduler(
        optimizer,
        ft.schedule,
        epochs=epochs,
        steps_per_epoch=max(1, -(-train_images // cfg.batch_size)),
        warmup_epochs=ft.warmup_epochs,
        decay_after=ft.decay_after,
    )
    dev = distributed.device()
    weight = class_weight.to(dev) if class_weight is not None else None
    return optimizer, scheduler, grad_scaler(cfg.precision, dev), weight


def train_network(
    classifier: Classifier,
    data: LabelledImages,
    stages: Sequence[Stage],
    ft: FinetuneConfig,
    *,
    cfg: TrainConfig,
    prep: Preprocessing,
    phase: str,
    epochs: int,
    lr: float,
    class_weight: torch.Tensor | None = None,
    first_epoch: int = 1,
    history: list[dict[str, Any]] | None = None,
    checkpoint: Path | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> PhaseResult:
    """Train the unfrozen `stages` and the head end to end on augmented images (also the scratch loop)."""
    dev = distributed.device()
    with distributed.moved(classifier, dev):
        train_idx = data.split.train
        data.pixels.load()
        optimizer, scheduler, scaler, weight = _training_tools(
            classifier, stages, ft, cfg, lr=lr, epochs=epochs, train_images=len(train_idx), class_weight=class_weight
        )
        train_tf = build_train_transform(cfg.augment, prep)
        eval_tf = build_eval_transform(prep)
        val_idx = data.split.val
        val_share = distributed.shard(np.arange(len(val_idx)))
        mine = val_idx[val_share.items]
        val_x = torch.stack([eval_tf(data.pixels[i]) for i in mine]) if len(val_idx) else None
        val_y = torch.from_numpy(data.labels[mine])
        num_classes = len(data.classes)
        mixing = cfg.augment.has_batch_mix
        model = classifier.to(memory_format=torch.channels_last)
        net = distributed.wrap(_TrainForward(model))

        def train_epoch(e: int) -> tuple[float, float]:
            set_train_mode_frozen_bn(model)
            order = np.random.permutation(train_idx)
            batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
            shares = [distributed.shard(b) for b in batches]
            views = [
                partial(
                    augmented_view,
                    data.pixels[i],
                    train_tf,
                    seed=view_seed(cfg.seed, int(data.sha256[i][:15], 16), 1000 + e),
                )
                for share in shares
                for i in share.items
            ]
            total, correct = 0.0, 0
            # Every share but the last has len(shares[0]) images, so the inputs cut at that size are the shares.
            for batch, share, x in zip(batches, shares, input_batches(views, len(shares[0])), strict=True):
                y = torch.from_numpy(data.labels[share.items])
                if mixing:
                    x, target = mix_batch(
                        x, y, num_classes=num_classes, mixup_alpha=cfg.augment.mixup, cutmix_alpha=cfg.augment.cutmix
                    )
                else:
                    target = y
                x, target, y = x.to(dev, non_blocking=True), target.to(dev), y.to(dev)
                with train_autocast(cfg.precision, dev):
                    logits = net(x)
                loss = share_loss(
                    logits, target, share, weight=weight, label_smoothing=ft.label_smoothing,
                    denominator=loss_denominator(data.labels[batch], weight, soft=mixing),
                )  # fmt: skip
                optimizer_step(loss, optimizer, scheduler, scaler)
                total += float(loss.detach()) * len(batch)
                correct += share_correct(logits, y, share)
            return epoch_result(total, correct, len(order))

        def validate() -> tuple[float, float] | None:
            if val_x is None:
                return None
            model.eval()
            logits = torch.cat([_eval_logits(model, val_x[s : s + 64]) for s in range(0, len(val_x), 64)])
            return validation_result(logits, val_y, val_share)

        return run_epochs(
            phase=phase, model=model, optimizer=optimizer, scheduler=scheduler, epochs=epochs, patience=ft.patience,
            train_epoch=train_epoch, validate=validate, seed=cfg.seed, first_epoch=first_epoch, history=history,
            checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip


class _TrainForward(nn.Module):
    """The training forward pass as a module of its own: what DistributedDataParallel wraps."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _train_logits(self.classifier, x)


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
    dev = distributed.device()
    total = len(plan.inputs)
    progress("boundary", 0, total)

    def compute(items: np.ndarray) -> np.ndarray:
        mean, std = classifier.get_buffer("mean"), classifier.get_buffer("std")
        bottom = cut.bottom.eval()
        chunks, done = [], 0
        for x in input_batches([plan.inputs[i] for i in items], cfg.batch_size):
            x = x.to(dev, non_blocking=True)
            with torch.inference_mode(), autocast(cfg.precision, dev):
                a = bottom(((x - mean) / std).contiguous(memory_format=torch.channels_last))
            chunks.append(a.to(torch.float16).cpu().numpy())
            done += len(x)
            progress("boundary", min(total, done * distributed.world().size), total)
        return np.concatenate(chunks)

    with distributed.moved(classifier, dev):  # the bottom's stem is the classifier's: move it all
        return plan.rows(distributed.map_in_parts(total, compute))


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
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def train_top(
    classifier: Classifier,
    cut: Cut,
    acts: FeatureSet,
    data: LabelledImages,
    stages: Sequence[Stage],
    ft: FinetuneConfig,
    *,
    cfg: TrainConfig,
    phase: str,
    epochs: int,
    lr: float,
    class_weight: torch.Tensor | None = None,
    first_epoch: int = 1,
    history: list[dict[str, Any]] | None = None,
    checkpoint: Path | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> PhaseResult:
    """Phase 2 on cached boundary activations: each epoch shows every training image once, in one of
    its cached versions (clean, mirror, or one of the K augmented views), in turn."""
    dev = distributed.device()
    with distributed.moved(classifier, dev):
        train_idx = data.split.train
        optimizer, scheduler, scaler, weight = _training_tools(
            classifier, stages, ft, cfg, lr=lr, epochs=epochs, train_images=len(train_idx), class_weight=class_weight
        )
        k = cfg.views_for("finetune")
        versions = [acts.clean[train_idx]] + ([acts.mirror[train_idx]] if acts.mirror is not None else [])
        versions += [acts.views[j::k] for j in range(k)] if k else []  # views are stored image by image
        labels = data.labels[train_idx]
        val_idx = data.split.val
        val_share = distributed.shard(np.arange(len(val_idx)))
        head = classifier.head
        net = distributed.wrap(_TopAndHead(cut.top, head))

        def train_epoch(e: int) -> tuple[float, float]:
            set_train_mode_frozen_bn(cut.top)
            head.train()
            order = np.random.permutation(len(train_idx))
            total, correct = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                share = distributed.shard(batch)
                pick = (share.items + e) % len(versions)  # each image cycles through its versions over the epochs
                a = np.stack([versions[v][j] for v, j in zip(pick, share.items, strict=True)])
                y = torch.from_numpy(labels[share.items]).to(dev)
                with train_autocast(cfg.precision, dev):
                    logits = net(_activations(a, dev))
                loss = share_loss(
                    logits, y, share, weight=weight, label_smoothing=ft.label_smoothing,
                    denominator=loss_denominator(labels[batch], weight),
                )  # fmt: skip
                optimizer_step(loss, optimizer, scheduler, scaler)
                total += float(loss.detach()) * len(batch)
                correct += share_correct(logits, y, share)
            return epoch_result(total, correct, len(order))

        def validate() -> tuple[float, float] | None:
            if not len(val_idx):
                return None
            head.eval()
            mine = val_idx[val_share.items]
            with torch.inference_mode(), eval_mode(cut.top):
                logits = head(cut.top(_activations(acts.clean[mine], dev)))
                if acts.mirror is not None:
                    logits = mirror_logits(logits, head(cut.top(_activations(acts.mirror[mine], dev))))
            return validation_result(logits.cpu(), torch.from_numpy(data.labels[mine]), val_share)

        return run_epochs(
            phase=phase, model=classifier, optimizer=optimizer, scheduler=scheduler, epochs=epochs,
            patience=ft.patience, train_epoch=train_epoch, validate=validate, seed=cfg.seed, first_epoch=first_epoch,
            history=history, checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip


class _TopAndHead(nn.Module):
    """Cached activations -> logits: what DistributedDataParallel wraps in phase 2 on a cut."""

    def __init__(self, top: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.top = top
        self.head = head

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(a))


def _train_logits(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Training forward pass without the test-time flip (random flips are part of the augmentation)."""
    return model.head(model.features(x.contiguous(memory_format=torch.channels_last)))


def _eval_logits(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Float logits on the CPU, computed where the model is."""
    x = x.to(distributed.module_device(model), non_blocking=True)
    with torch.inference_mode():
        return model(x.contiguous(memory_format=torch.channels_last)).float().cpu()


def predict_pixels(classifier: Classifier, pixels: Sequence[np.ndarray], prep: Preprocessing) -> np.ndarray:
    """(N, K) probabilities of decoded images, as the bundle computes them.

    The network runs as the feature extractor does: ONNX Runtime on a CPU when there are enough images
    to repay the export (three to four times faster than eager PyTorch, same outputs to ~1e-6),
    PyTorch on a GPU; under torchrun each rank computes a share and every rank gets all rows, in order.
    """
    if not len(pixels):
        return np.zeros((0, 0))
    eval_tf = build_eval_transform(prep)
    proba = nn.Sequential(classifier, nn.Softmax(dim=1))
    return extract_features(proba, [partial(eval_tf, p) for p in pixels], batch_size=64, stage="predict")


def predict_images(classifier: Classifier, pixels: Pixels, prep: Preprocessing) -> np.ndarray:
    """`predict_pixels` of a run's images (decoded on threads first), on this run's device."""
    with distributed.moved(classifier, distributed.device()):
        return predict_pixels(classifier, pixels.load(), prep)


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


def _stages_to_unfreeze(stages: Sequence[Stage], unfreeze: int | str, classifier: Classifier) -> list[Stage]:
    """The last N stages that still exist in the (possibly pruned) trunk; all for "all"."""
    present = set(dict(classifier.trunk.backbone.named_parameters()))
    live = [s for s in stages if any(p in present for p in s.params)]
    if unfreeze == "all":
        return live
    n = int(unfreeze)
    return live[-n:] if n else []


def _feature_width(shell: Classifier, input_size: tuple[int, int]) -> int:
    with torch.inference_mode():
        return int(shell.features(torch.zeros(1, 3, *input_size)).shape[1])
