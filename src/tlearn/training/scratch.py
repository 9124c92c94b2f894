"""`--method scratch`: the small CNN of `models/scratch_cnn.py` trained from random weights.

It runs on the same epoch loop, augmentation and head as fine-tuning, with every stage trainable, so
`tlearn compare` shows what transfer buys and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlearn.artifacts.details import Epochs, MethodDetails
from tlearn.core.progress import Progress, no_progress
from tlearn.core.timing import NO_DEADLINE, Deadline
from tlearn.data.labelled import LabelledImages
from tlearn.models.backbones import Backbone
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec
from tlearn.models.scratch_cnn import SCRATCH_DROPOUT, SCRATCH_HIDDEN
from tlearn.training import costs
from tlearn.training.config import TrainConfig
from tlearn.training.finetune import finish_fitted
from tlearn.training.fitted import Fitted
from tlearn.training.head_phase import class_weights, seeded_head
from tlearn.training.loop import CHECKPOINT_FILE, EpochPlan, load_checkpoint
from tlearn.training.network_phase import train_network


def fit_scratch(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    out: Path,
    progress: Progress = no_progress,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> Fitted:
    """Train the small CNN and its head from random weights, on the fine-tuning loop (every stage trains)."""
    ft = cfg.finetune
    prep = backbone.preprocessing
    spec = HeadSpec(len(data.classes), backbone.num_features, hidden=SCRATCH_HIDDEN, dropout=SCRATCH_DROPOUT)
    head = seeded_head(spec, cfg.seed)
    mirror = cfg.mirror
    classifier = Classifier(FeatureTrunk(backbone.model), head, mean=prep.mean, std=prep.std, flip_tta=mirror)
    checkpoint = out / CHECKPOINT_FILE
    epochs, lr = ft.epochs_for("scratch"), ft.lr_for("scratch")
    resume = load_checkpoint(checkpoint) if cfg.resume else None
    reserve = costs.finish_seconds(classifier, prep.input_size, data, deadline)
    loop = EpochPlan(
        "scratch", epochs, cfg.seed, checkpoint=checkpoint, resume=resume, on_epoch_end=on_epoch_end,
        deadline=deadline, reserve=reserve,
    )  # fmt: skip
    result = train_network(
        classifier, data, backbone.stages, ft, cfg=cfg, prep=prep, lr=lr,
        class_weight=class_weights(data, cfg.class_weight), loop=loop,
    )  # fmt: skip
    epochs_done = Epochs(
        summary=f"a {len(backbone.stages)}-block CNN trained from random weights at lr {lr:g}, "
        f"{prep.input_size[0]} px input",
        epochs_run=len(result.rows),
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        planned_epochs=result.planned_epochs,
        trained_parameters=sum(p.numel() for p in classifier.parameters()),
    )
    details = MethodDetails("scratch", epochs=epochs_done, interrupted="scratch" if result.interrupted else None)
    return finish_fitted(classifier, spec, data, prep, result.rows, details, checkpoint)
