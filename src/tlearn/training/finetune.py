"""Two-phase fine-tuning, the textbook recipe with its traps closed by construction.

Phase 1 (warm-up, `head_phase.py`): the base is frozen; a new head trains on cached features until
the validation loss stops improving. Phase 2: the last N stages are unfrozen and train with the best
phase-1 head at a low learning rate that shrinks further for earlier stages (discriminative rates),
on cached activations below a cut (`top_phase.py`) or end to end (`network_phase.py`). The optimizer
is built anew per phase, because what trains has changed. BatchNorm stays in inference mode in both
phases: its running statistics never move (see `set_train_mode_frozen_bn`).

Under torchrun each batch is the same global batch as in one process, split between the ranks (see
`epoch.py`); frozen BatchNorm needs no synchronisation; cached activations and features are computed
in shares and gathered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.artifacts.details import Epochs, MethodDetails
from tlearn.artifacts.history import HISTORY_FILE
from tlearn.core import distributed
from tlearn.core.preprocessing import Preprocessing
from tlearn.core.progress import Progress, no_progress
from tlearn.core.timing import NO_DEADLINE, Deadline
from tlearn.data.augment import build_eval_transform
from tlearn.data.labelled import LabelledImages
from tlearn.data.scan import Pixels
from tlearn.models.backbones import Backbone, Stage
from tlearn.models.classifier import Classifier, HeadSpec
from tlearn.models.cut import Cut, cut_trunk
from tlearn.training import costs
from tlearn.training.config import TrainConfig
from tlearn.training.feature_method import compute_features, feature_trunk
from tlearn.training.features import extract_features
from tlearn.training.fitted import Fitted
from tlearn.training.head_phase import class_weights, seeded_head, train_head
from tlearn.training.loop import (
    CHECKPOINT_FILE,
    EpochPlan,
    GiveUp,
    PhaseResult,
    load_checkpoint,
    read_history,
    write_history,
)
from tlearn.training.network_phase import train_network
from tlearn.training.top_phase import boundary_activations, top_features, train_top
from tlearn.training.views import FeatureSet

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class _Plan:
    """What a fine-tuning run trains, decided before any training starts."""

    classifier: Classifier
    spec: HeadSpec
    stages: list[Stage]  # unfrozen in phase 2 (empty: phase 1 only)
    cut: Cut | None  # where the frozen bottom ends, when phase 2 can run on cached activations
    learn: LabelledImages  # the training and validation images (the phases never see the test images)
    weights: torch.Tensor | None  # class weights


def fit_finetune(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    out: Path,
    progress: Progress = no_progress,
    on_epoch_end: EpochCallback | None = None,
    deadline: Deadline = NO_DEADLINE,
    give_up: GiveUp | None = None,
) -> Fitted:
    """Both phases; with a `deadline`, phase 2 runs the epochs that fit before it (the best kept), and
    `give_up` may end phase 2 when validation says it will not catch up (auto's rule)."""
    checkpoint = out / CHECKPOINT_FILE
    resume = load_checkpoint(checkpoint) if cfg.resume else None
    history = distributed.from_main(lambda: read_history(out / HISTORY_FILE)) if resume else []
    earlier = [r for r in history if r["phase"] == "head"]
    plan = _plan(backbone, data, cfg)
    mirror, prep = cfg.mirror, backbone.preprocessing
    # With a cut, the frozen bottom runs once per image and view; its output serves both phases.
    acts = None
    if plan.cut is not None:
        acts = boundary_activations(plan.cut, plan.classifier, plan.learn, prep, cfg, mirror=mirror, progress=progress)

    if resume is None or resume["phase"] == "head":
        feats = _phase1_features(plan, acts, backbone, cfg, progress)
        phase1 = train_head(
            plan.classifier.head, feats, plan.learn, cfg.finetune, seed=cfg.seed, class_weight=plan.weights,
            mirror=mirror, checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        )  # fmt: skip
        earlier, resume = phase1.rows, None
        if phase1.interrupted:
            return _finish(plan, data, cfg, prep, earlier, {"head_epochs_run": len(earlier)}, checkpoint, "head")

    details: dict[str, Any] = {"head_epochs_run": len(earlier)}
    if plan.stages:
        reserve = costs.finish_seconds(plan.classifier, prep.input_size, data, deadline)
        phase2 = _phase2(
            plan, acts, cfg, prep, earlier, checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
            deadline=deadline, reserve=reserve, give_up=give_up,
        )  # fmt: skip
        details.update(
            unfrozen=[s.name for s in plan.stages],
            cached_below=plan.cut.boundary if plan.cut is not None else None,
            finetune_epochs_run=len(phase2.rows),
            best_epoch=phase2.best_epoch,
            stopped_early=phase2.stopped_early,
            planned_epochs=phase2.planned_epochs,
            gave_up=phase2.gave_up,
        )
        earlier = earlier + phase2.rows
        if phase2.interrupted:
            return _finish(plan, data, cfg, prep, earlier, details, checkpoint, "finetune")
    return _finish(plan, data, cfg, prep, earlier, details, checkpoint)


def _plan(backbone: Backbone, data: LabelledImages, cfg: TrainConfig) -> _Plan:
    ft, prep = cfg.finetune, backbone.preprocessing
    shell = feature_trunk(backbone, cfg.feature_layer, trains=True)  # a copy: `backbone` stays pretrained
    spec = HeadSpec(len(data.classes), _feature_width(shell, prep.input_size), ft.hidden, ft.dropout)
    classifier = Classifier(shell.trunk, seeded_head(spec, cfg.seed), mean=prep.mean, std=prep.std, flip_tta=cfg.mirror)
    stages = _stages_to_unfreeze(backbone.stages, ft.unfreeze, classifier) if ft.epochs_for("finetune") else []
    # MixUp/CutMix mix pixels, which cached activations cannot: then phase 2 runs end to end.
    cut = None if cfg.augment.has_batch_mix else cut_trunk(classifier.trunk, stages, input_size=prep.input_size)
    return _Plan(classifier, spec, stages, cut, data.without_test(), class_weights(data, cfg.class_weight))


def _phase1_features(
    plan: _Plan, acts: FeatureSet | None, backbone: Backbone, cfg: TrainConfig, progress: Progress
) -> FeatureSet:
    """Features for the head phase: from the cached activations when there is a cut, else computed (cached)."""
    if plan.cut is not None and acts is not None:
        return top_features(plan.cut, acts, batch_size=cfg.batch_size)
    return compute_features(
        plan.classifier,
        backbone,
        plan.learn,
        views=cfg.views_for("finetune"),
        mirror=cfg.mirror,
        cfg=cfg,
        progress=progress,
    )


def _phase2(
    plan: _Plan,
    acts: FeatureSet | None,
    cfg: TrainConfig,
    prep: Preprocessing,
    earlier: list[dict[str, Any]],
    **loop: Any,
) -> PhaseResult:
    """The unfrozen stages and the head, on cached activations when there is a cut, else end to end."""
    ft = cfg.finetune
    epochs = EpochPlan("finetune", ft.epochs_for("finetune"), cfg.seed, len(earlier) + 1, earlier, **loop)
    common: dict[str, Any] = dict(cfg=cfg, lr=ft.lr_for("finetune"), class_weight=plan.weights, loop=epochs)
    if plan.cut is not None and acts is not None:
        return train_top(plan.classifier, plan.cut, acts, plan.learn, plan.stages, ft, **common)
    return train_network(plan.classifier, plan.learn, plan.stages, ft, prep=prep, **common)


def _finish(
    plan: _Plan,
    data: LabelledImages,
    cfg: TrainConfig,
    prep: Preprocessing,
    history: list[dict[str, Any]],
    done: dict[str, Any],
    checkpoint: Path,
    interrupted: str | None = None,
) -> Fitted:
    ft, spec = cfg.finetune, plan.spec
    summary = f"head {spec.hidden or 'linear'} with dropout {spec.dropout}, then "
    summary += (
        f"unfroze {', '.join(done['unfrozen'])} at lr {ft.lr_for('finetune'):g} (x{ft.lr_decay:g} per earlier stage)"
        if done.get("unfrozen")
        else "no fine-tuning of the base"
    )
    if done.get("planned_epochs"):
        summary += f"; the time budget left room for {done['finetune_epochs_run']} of {done['planned_epochs']} epochs"
    if done.get("gave_up"):
        summary += f"; stopped after {done['finetune_epochs_run']} epochs: {done['gave_up']}"
    done["unfrozen"] = tuple(done.get("unfrozen", ()))
    details = MethodDetails("finetune", epochs=Epochs(summary=summary, **done), interrupted=interrupted)
    return finish_fitted(plan.classifier, spec, data, prep, history, details, checkpoint)


def finish_fitted(
    classifier: Classifier,
    spec: HeadSpec,
    data: LabelledImages,
    prep: Preprocessing,
    history: list[dict[str, Any]],
    details: MethodDetails,
    checkpoint: Path,
) -> Fitted:
    """Write the history, predict val/test with the final network, drop the checkpoint of a finished run."""
    if distributed.is_main():
        write_history(checkpoint.parent / HISTORY_FILE, history)
    classifier.eval()
    # Train too: the "unknown" score learns what the training images look like to the final network.
    answers = {
        part: predict_images(classifier, data.pixels.subset(idx), prep)
        for part, idx in data.split.parts().items()
        if len(idx)
    }
    proba = {part: p for part, (p, _) in answers.items() if part != "train"}
    features = {part: f for part, (_, f) in answers.items()}
    if not details.interrupted and distributed.is_main():
        checkpoint.unlink(missing_ok=True)  # the run finished: the bundle replaces it
    return Fitted(classifier=classifier, head=spec, details=details, proba=proba, history=history, features=features)


class _ProbaAndFeatures(nn.Module):
    """One row per image: its K probabilities, then its D pooled features (one output to extract)."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, f = self.classifier.logits_and_features(x)
        return torch.cat([logits.softmax(dim=1), f], dim=1)


def predict_pixels(
    classifier: Classifier, pixels: Sequence[np.ndarray], prep: Preprocessing
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) probabilities of decoded images, as the bundle computes them, and their (N, D) pooled features.

    The network runs as the feature extractor does: ONNX Runtime on a CPU when there are enough images
    to repay the export (three to four times faster than eager PyTorch, same outputs to ~1e-6),
    PyTorch on a GPU; under torchrun each rank computes a share and every rank gets all rows, in order.
    """
    if not len(pixels):
        return np.zeros((0, 0)), np.zeros((0, 0))
    eval_tf = build_eval_transform(prep)
    k = classifier.num_classes
    both = extract_features(
        _ProbaAndFeatures(classifier), [partial(eval_tf, p) for p in pixels], batch_size=64, stage="predict"
    )
    return both[:, :k], both[:, k:]


def predict_images(classifier: Classifier, pixels: Pixels, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """`predict_pixels` of a run's images (decoded on threads first), on this run's device."""
    with distributed.moved(classifier, distributed.device()):
        return predict_pixels(classifier, pixels.load(), prep)


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
