"""Images whose label looks wrong, and images far from every class, from the cached features.

Label errors, confident-learning style (Northcutt et al. 2021): a logistic regression cross-validated
on the features gives every image probabilities from a model that never saw its label. Each class's
threshold is the mean probability its own images get for it (its self-confidence). An image is
flagged when another class reaches that class's threshold, its given class stays below its own, and
the other class is the more likely of the two; the list is ranked by the margin between them.

Outliers: features scaled to unit length; an image's similarity is its cosine to the nearest class
mean (its own class's mean leaves it out). Not centred: centring made a noise image look closer to
the classes of the synthetic shapes, not farther. An image is far from every
class when that similarity lies more than OUTLIER_Z robust standard deviations below the median of
the dataset's images: junk, or a photo of something else. An outlier is listed as such, not as a
label error (no class fits it, so no class can be suggested).

Nothing here moves or deletes anything: tlearn suggests, the user decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tlearn.artifacts.label_issues import LabelIssue
from tlearn.core.progress import Progress, no_progress
from tlearn.data.labelled import LabelledImages
from tlearn.data.scan import ScannedImages
from tlearn.data.split import split_key
from tlearn.models.backbones import Backbone
from tlearn.training.config import TrainConfig
from tlearn.training.feature_method import compute_features, feature_trunk, for_features
from tlearn.training.linear import out_of_fold_proba

MAX_FOLDS = 5  # as cleanlab: each fold model sees 80% of the images
# Robust standard deviations (1.4826 x the median absolute deviation) below the median similarity.
# flowers17 (MobileNetV2) with 10 Caltech-101 photos and 5 noise images mixed in: z = 5 flags 13 of the
# 15 and no flower photo; z = 4 all 15 and 1 flower; z = 3 all 15 and 12 flowers (benchmarks/data_loop_labels.py).
OUTLIER_Z = 5.0

Issue = Literal["label", "outlier"]


@dataclass(frozen=True)
class Flag:
    """One flagged image. `score`: the margin p(suggested) - p(given) for a label issue, the cosine
    distance to the nearest class mean for an outlier; `confidence`: p(suggested), out of fold."""

    index: int  # position among the images checked
    issue: Issue
    suggested: int  # class index; -1 for an outlier
    score: float
    confidence: float


@dataclass(frozen=True)
class LabelIssues:
    """What the check found: label issues by margin, largest first, then outliers, farthest first."""

    flags: tuple[Flag, ...]
    proba: np.ndarray  # (N, K) out-of-fold probabilities
    thresholds: np.ndarray  # (K,) per-class self-confidence
    similarity: np.ndarray  # (N,) cosine similarity to the nearest class mean
    outlier_below: float  # similarities below this are outliers
    folds: int

    @property
    def mislabelled(self) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags if f.issue == "label")

    @property
    def outliers(self) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags if f.issue == "outlier")


def can_check(labels: np.ndarray, groups: np.ndarray | None = None) -> bool:
    """Cross-validation needs two images (not copies of one) in every class, and two classes."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    classes = np.unique(labels)
    return len(classes) >= 2 and min(len(set(groups[labels == c])) for c in classes) >= 2


def find_label_issues(
    feats: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> LabelIssues:
    """Label issues and outliers among N images from their (N, D) features and (N,) class indices.

    `groups[i]` names image i's group of copies (exact and near duplicates stay in one fold, or a copy
    would vouch for the label). Every class needs two images (see `can_check`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    held = out_of_fold_proba(feats, labels, num_classes=num_classes, groups=groups, max_folds=MAX_FOLDS, seed=seed)
    similarity = class_similarity(feats, labels, num_classes)
    below = outlier_threshold(similarity)
    far = np.flatnonzero(similarity < below)
    thresholds = self_confidence(held.proba, labels, num_classes)
    flags = [f for f in confident_flags(held.proba, labels, thresholds) if f.index not in set(far.tolist())]
    flags += sorted(
        (Flag(int(i), "outlier", -1, float(1.0 - similarity[i]), float("nan")) for i in far),
        key=lambda f: -f.score,
    )
    return LabelIssues(tuple(flags), held.proba, thresholds, similarity, float(below), held.folds)


def self_confidence(proba: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) mean probability of each class over its own images (1 for a class with none)."""
    own = proba[np.arange(len(labels)), labels]
    sums = np.bincount(labels, weights=own, minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_flags(proba: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> list[Flag]:
    """Images another class claims confidently while their own does not, largest margin first."""
    rows = np.arange(len(labels))
    own = proba[rows, labels]
    above = proba >= thresholds[None, :]
    above[rows, labels] = False
    suggested = np.where(above, proba, -1.0).argmax(axis=1)
    confidence = proba[rows, suggested]
    flagged = above.any(axis=1) & (own < thresholds[labels]) & (confidence > own)
    margin = confidence - own
    order = sorted(np.flatnonzero(flagged), key=lambda i: (-margin[i], i))
    return [Flag(int(i), "label", int(suggested[i]), float(margin[i]), float(confidence[i])) for i in order]


def class_similarity(feats: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) cosine similarity of each image to the nearest class mean, its own class's mean without it."""
    x = _unit(np.asarray(feats, dtype=np.float64))
    sums = np.zeros((num_classes, x.shape[1]))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=num_classes)
    sims = x @ _unit(sums).T  # a class mean's direction is its sum's
    own = sums[labels] - x  # leave the image out of its own class
    sims[np.arange(len(x)), labels] = np.einsum("nd,nd->n", x, _unit(own))
    sims[:, counts == 0] = -1.0
    sims[np.arange(len(x)), labels] = np.where(counts[labels] > 1, sims[np.arange(len(x)), labels], -1.0)
    return sims.max(axis=1)


def outlier_threshold(similarity: np.ndarray, z: float = OUTLIER_Z) -> float:
    """The median similarity minus z robust standard deviations (1.4826 x the median absolute deviation)."""
    median = float(np.median(similarity))
    spread = 1.4826 * float(np.median(np.abs(similarity - median)))
    return median - z * max(spread, 1e-6)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


# --- from a dataset's images to rows of label_issues.csv ---------------------------------------------


def label_features(
    backbone: Backbone, data: LabelledImages, cfg: TrainConfig, *, progress: Progress = no_progress
) -> np.ndarray:
    """(N, D) features of every image, as the feature method computes them (cached: a rerun, or a run
    of the features or auto method, computes nothing again). `backbone` as `create_backbone` made it."""
    network = for_features(backbone, cfg)
    shell = feature_trunk(network, cfg.feature_layer)
    return compute_features(shell, network, data, views=0, mirror=False, cfg=cfg, progress=progress).clean


def issue_rows(issues: LabelIssues, scanned: ScannedImages, data: LabelledImages, root: Path) -> list[LabelIssue]:
    """The flags as rows of label_issues.csv, paths relative to the dataset (`root`, a folder or a CSV)."""
    base = root if root.is_dir() else root.parent
    rows = []
    for f in issues.flags:
        given = data.classes[int(data.labels[f.index])]
        suggested = data.classes[f.suggested] if f.suggested >= 0 else ""
        rows.append(
            LabelIssue(
                path=split_key(scanned.samples[f.index].path, base),
                given=given,
                suggested=suggested,
                score=f.score,
                confidence=f.confidence,
                issue=f.issue,
            )
        )
    return rows


def check_images(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    groups: np.ndarray | None = None,
    progress: Progress = no_progress,
) -> LabelIssues | None:
    """Label issues and outliers among all of `data`'s images; None when a class has fewer than two."""
    if not can_check(data.labels, groups):
        return None
    feats = label_features(backbone, data, cfg, progress=progress)
    return find_label_issues(feats, data.labels, num_classes=len(data.classes), groups=groups, seed=cfg.seed)
