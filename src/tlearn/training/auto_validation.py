"""What auto reads from the validation split: which feature layer and which candidate to keep, and
when fine-tuning should stop because it will not catch up with the features."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlearn.artifacts.metrics import compute_metrics
from tlearn.data.labelled import LabelledImages
from tlearn.training.fitted import Fitted
from tlearn.training.loop import GiveUp

# Fine-tuning is worth its time only where validation can show it did better than the features. On
# flowers17 it removed 40% of the feature method's test errors (95.1% -> 97.1%), changing the answer on
# about 60% as many images as the features got wrong. With E validation errors expected of the
# features, the gain (0.4 E images) beats one standard deviation of the difference's noise
# (sqrt(0.6 E)) from E >= 0.6 / 0.4**2 = 3.75: fewer expected errors and no validation split can tell
# the two apart (1,400 cats and dogs: 2.3 errors expected, and 9.7 minutes of fine-tuning changed nothing).
NET_SHARE, CHANGED_SHARE = 0.4, 0.6
MIN_VAL_ERRORS = CHANGED_SHARE / NET_SHARE**2


def expected_val_errors(accuracy: float, val_images: int) -> float:
    """Validation images a method of this (cross-validated) accuracy should get wrong."""
    return val_images * (1.0 - accuracy)


def behind_features(features_accuracy: float, val_images: int, planned_epochs: int) -> GiveUp:
    """Auto's rule for ending fine-tuning early: from half its epochs on (at least 3), stop when its
    best validation accuracy is still behind the features' by more than the noise of the difference
    (sqrt of the images the two should disagree on; see NET_SHARE)."""
    errors = expected_val_errors(features_accuracy, val_images)
    noise = float(np.sqrt(max(CHANGED_SHARE * errors, 1.0)))
    start = max(3, planned_epochs // 2)

    def give_up(rows: list[dict[str, Any]]) -> str | None:
        scores = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
        if len(rows) < start or not scores:
            return None
        behind = (features_accuracy - max(scores)) * val_images
        if behind <= noise:
            return None
        return (
            f"its best validation accuracy ({max(scores):.1%}) is {behind:.0f} images behind the features' "
            f"({features_accuracy:.1%}), more than the noise ({noise:.1f})"
        )

    return give_up


def _layer_on_validation(earlier: Fitted, last: Fitted, layer: str, data: LabelledImages) -> tuple[Fitted, str]:
    """The earlier layer's features only when they are right on more validation images than the last
    layer's. The probes that chose it are cross-validated on the training images, where photos of one
    object fall into different folds; lower layers match such near-copies best, so the probes can favour
    them on data like that (PlantVillage: several photos per leaf; level 3 won the probe by 2.8 points, then
    scored 79.9% on the test images against 83.4% for a plain last-layer probe).
    The feature cache makes the second head cost seconds."""
    val = data.split.val
    if not len(val) or "val" not in earlier.proba or "val" not in last.proba:
        return earlier, ""
    a = compute_metrics(data.labels[val], earlier.proba["val"], data.classes).accuracy
    b = compute_metrics(data.labels[val], last.proba["val"], data.classes).accuracy
    keep = "last" if b >= a else layer
    kept = "the last layer" if keep == "last" else f"level {layer}"
    said = f" Features on validation: level {layer} {a:.1%}, last layer {b:.1%}: {kept} kept."
    return (last if keep == "last" else earlier), said


def _better_on_validation(features: Fitted, tuned: Fitted, data: LabelledImages) -> tuple[str, dict[str, float]]:
    """The fine-tuned model unless the features are right on more validation images.

    Fine-tuning ran because the measurements called for it; the fallback is there for when it makes
    things worse. Log loss would be no fair tie-break: label smoothing keeps the fine-tuned model's
    probabilities below 1 by design (on flowers17 it handed a 97.1% tie to the features, whose test
    accuracy was 2.7 points lower).
    """
    val = data.split.val
    if not len(val) or "val" not in features.proba or "val" not in tuned.proba:
        return "finetune", {"features": float("nan"), "finetune": float("nan")}
    a = compute_metrics(data.labels[val], features.proba["val"], data.classes)
    b = compute_metrics(data.labels[val], tuned.proba["val"], data.classes)
    choice = "finetune" if b.accuracy >= a.accuracy else "features"
    return choice, {"features": a.accuracy, "finetune": b.accuracy}
