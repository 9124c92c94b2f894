"""How good a model is: metrics of predicted probabilities, as a run stores them and every view shows them.

Accuracy alone hides a weak class; balanced accuracy and macro F1 weigh every class the same, the
per-class table shows which class fails, log loss and the expected calibration error say whether
the confidences can be trusted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

CALIBRATION_BINS = 15


NO_IMAGES = "–"  # what a table shows for a score without images to count: recall of a class with none in the part,
# precision of a class never predicted

WEAK_BY = 0.1  # a class whose recall is this far below the overall accuracy is highlighted


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float
    recall: float  # 0 where the part holds none of the class's images (scikit-learn's zero_division)
    f1: float
    support: int
    predicted: int | None = None  # images predicted as the class (None in files written before it was kept)

    def precision_text(self) -> str:
        """The precision as a table shows it: undefined (NO_IMAGES) for a class that nothing was predicted as."""
        return NO_IMAGES if self.predicted == 0 else f"{self.precision:.1%}"

    def recall_text(self) -> str:
        """The recall as a table shows it: undefined (NO_IMAGES) for a class with no images in the part."""
        return f"{self.recall:.1%}" if self.support else NO_IMAGES

    def f1_text(self) -> str:
        return f"{self.f1:.3f}" if self.support else NO_IMAGES

    def is_weak(self, accuracy: float) -> bool:
        """Recall WEAK_BY or more below the overall accuracy; never a class with no images to find."""
        return bool(self.support) and self.recall < accuracy - WEAK_BY


def ranked_by_recall(per_class: Sequence[ClassMetrics]) -> list[ClassMetrics]:
    """The lowest recall first (ties by name), then the classes with no images in the part, which have none."""
    return sorted(per_class, key=lambda c: (not c.support, c.recall, c.name))


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    weighted_f1: float
    log_loss: float
    ece: float  # expected calibration error: mean |confidence - accuracy| over confidence bins
    top_k: dict[int, float]
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray  # (K, K): rows true class, columns predicted

    @property
    def accuracy_se(self) -> float:
        """One standard error of the accuracy (a fraction); its variance is floored at 1/n, so that 100% on
        five images reads as known to about ±20 points, not exactly."""
        return math.sqrt(max(self.accuracy * (1 - self.accuracy), 1 / self.n) / self.n) if self.n else math.nan

    def accuracy_text(self) -> str:
        """The accuracy with its standard error, as the tables show it: "94.6% ±1.6"."""
        return f"{self.accuracy:.1%} ±{100 * self.accuracy_se:.1f}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_class"] = [asdict(c) for c in self.per_class]
        d["confusion"] = self.confusion.tolist()
        d["top_k"] = {str(k): v for k, v in self.top_k.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        return cls(
            n=int(d["n"]),
            accuracy=float(d["accuracy"]),
            balanced_accuracy=float(d["balanced_accuracy"]),
            macro_f1=float(d["macro_f1"]),
            weighted_f1=float(d["weighted_f1"]),
            log_loss=float(d["log_loss"]),
            ece=float(d["ece"]),
            top_k={int(k): float(v) for k, v in d.get("top_k", {}).items()},
            per_class=tuple(ClassMetrics(**c) for c in d["per_class"]),
            confusion=np.array(d["confusion"], dtype=np.int64),
        )

    def _repr_html_(self) -> str:
        """A small table in a notebook: the headline numbers, then each class."""
        from tlearn.artifacts.notebook import metrics_html

        return metrics_html(self)


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, classes: tuple[str, ...] | list[str]) -> Metrics:
    """`y_true` (N,) class indices, `proba` (N, K) probabilities whose rows sum to 1."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    labels = np.arange(k)
    y_pred = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    present = support > 0
    top_k = {}
    for kk in (3, 5):
        if kk < k:
            top = np.argsort(-proba, axis=1)[:, :kk]
            top_k[kk] = float((top == y_true[:, None]).any(axis=1).mean())
    return Metrics(
        n=len(y_true),
        accuracy=float(accuracy_score(y_true, y_pred)),
        # scikit-learn's balanced accuracy (mean recall over the classes that occur), from the recalls above:
        # its own function warns when a part holds a single class, as new data may.
        balanced_accuracy=float(recall[present].mean()) if present.any() else 0.0,
        macro_f1=float(f1_score(y_true, y_pred, labels=labels[present], average="macro", zero_division=0)),
        weighted_f1=float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        log_loss=float(log_loss(y_true, _renormalised(proba), labels=labels)),
        ece=expected_calibration_error(y_true, proba),
        top_k=top_k,
        per_class=tuple(
            ClassMetrics(str(name), float(p), float(r), float(f), int(s), int(n))
            for name, p, r, f, s, n in zip(classes, precision, recall, f1, support, confusion.sum(axis=0), strict=True)
        ),
        confusion=confusion,
    )


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    counts, conf, acc = reliability_bins(y_true, proba, bins)
    n = sum(counts)
    return float(
        sum(c / n * abs(cf - a) for c, cf, a in zip(counts, conf, acc, strict=True) if cf is not None and a is not None)
    )


def reliability_bins(
    y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[tuple[int, ...], tuple[float | None, ...], tuple[float | None, ...]]:
    """Per equal-width confidence bin (0, 1/bins] ...: images, mean confidence, accuracy (None when empty)."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    counts: list[int] = []
    means: list[float | None] = []
    accs: list[float | None] = []
    for lo, hi in itertools.pairwise(np.linspace(0, 1, bins + 1)):
        in_bin = (conf > lo) & (conf <= hi)
        counts.append(int(in_bin.sum()))
        means.append(float(conf[in_bin].mean()) if in_bin.any() else None)
        accs.append(float(correct[in_bin].mean()) if in_bin.any() else None)
    return tuple(counts), tuple(means), tuple(accs)


def _renormalised(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, 1e-12, 1.0)
    return p / p.sum(axis=1, keepdims=True)
