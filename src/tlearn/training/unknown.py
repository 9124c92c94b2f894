"""Every run learns its "unknown" answer: a bank of what its training images look like, a threshold set on validation.

The bank is small by construction: one L2-normalised mean per class plus at most `BANK_CAP` training
rows (a seeded sample, every class kept in proportion), stored as float16. The threshold is the
`recall` quantile of the validation images' scores, so that share of known images is answered with
a class; the rest of the rule (which score, see `models/unknown.py`) is the same for every bundle.
The training images cannot set the threshold: they are in the bank, at distance 0 from themselves.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from tlearn.data.labelled import LabelledImages
from tlearn.models.unknown import (
    BANK_CAP,
    COMBINED,
    DEFAULT_KIND,
    DEFAULT_RECALL,
    UnknownRule,
    UnknownScorer,
    normalised,
    standardising,
)
from tlearn.training.fitted import Fitted

log = logging.getLogger(__name__)

MIN_VAL_IMAGES = 10  # fewer validation images cannot place a threshold: the bundle then has no rejection


def with_unknown(
    fitted: Fitted,
    data: LabelledImages,
    *,
    recall: float = DEFAULT_RECALL,
    kind: str = DEFAULT_KIND,
    cap: int = BANK_CAP,
    seed: int = 0,
) -> Fitted:
    """The fitted model with an `UnknownScorer` inside its classifier (unchanged when it cannot learn one)."""
    feats, proba = fitted.features, fitted.proba
    if "train" not in feats or "val" not in feats or "val" not in proba or len(feats["val"]) < MIN_VAL_IMAGES:
        log.info("Too few validation images to set the unknown threshold: the bundle has no rejection.")
        return fitted
    scorer = fit_scorer(
        feats["train"], data.labels[data.split.train], num_classes=len(data.classes), kind=kind, cap=cap, seed=seed
    )
    if kind in COMBINED:
        f, z = _tensors(feats["val"], proba["val"])
        means, bank = scorer.get_buffer("means"), scorer.get_buffer("bank")
        scorer.rule = replace(scorer.rule, norm=standardising(kind, f, z, means, bank, k=scorer.rule.k))
    val_scores = scores(scorer, feats["val"], proba["val"])
    threshold = float(np.quantile(val_scores, recall, method="higher"))
    scorer.rule = replace(
        scorer.rule, threshold=threshold, recall=float((val_scores <= threshold).mean()), val_images=len(val_scores)
    )
    if "test" in feats and "test" in proba and len(feats["test"]):
        test_scores = scores(scorer, feats["test"], proba["test"])
        scorer.rule = replace(scorer.rule, test_recall=float((test_scores <= threshold).mean()))
    fitted.classifier.unknown = scorer
    return fitted


def fit_scorer(
    train_features: np.ndarray, train_labels: np.ndarray, *, num_classes: int, kind: str, cap: int, seed: int
) -> UnknownScorer:
    """Class means and a capped, class-stratified sample of the training rows, L2-normalised, float16-exact."""
    f = normalised(torch.from_numpy(np.asarray(train_features, dtype=np.float32)))
    labels = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    means = torch.zeros(num_classes, f.shape[1])
    for c in range(num_classes):
        rows = f[labels == c]
        if len(rows):
            means[c] = rows.mean(dim=0)
    keep = _sample_rows(np.asarray(train_labels), cap, seed)
    # Rounded to float16 now, as the bundle stores them: a reloaded bundle gives these very scores.
    means = normalised(means).half().float()
    bank = f[torch.from_numpy(keep)].half().float()
    rule = UnknownRule(
        kind=kind,
        threshold=float("inf"),
        recall=1.0,
        val_images=0,
        bank_rows=len(keep),
        feature_dim=int(f.shape[1]),
        num_classes=num_classes,
    )
    return UnknownScorer(rule, means, bank)


def scores(scorer: UnknownScorer, features: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(N,) scores of cached features and the (calibrated) probabilities the network gave them.

    log p equals the logits up to one constant per row: right for every kind but energy, which needs the
    logits themselves (the benchmark computes it from the network's).
    """
    if scorer.rule.kind == "energy":
        raise ValueError("The energy score needs the logits, not probabilities.")
    with torch.inference_mode():
        out = scorer(*_tensors(features, proba))
    return out.numpy()


def _tensors(features: np.ndarray, proba: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and log-probabilities (the logits up to a constant per row) as float32 tensors."""
    logp = np.log(np.clip(np.asarray(proba, dtype=np.float32), 1e-30, 1.0))
    return torch.from_numpy(np.asarray(features, dtype=np.float32)), torch.from_numpy(logp)


def _sample_rows(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices of at most `cap` rows, each class keeping its share (at least one row), sorted."""
    n = len(labels)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, round(cap * len(rows) / n))
        keep.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))  # a few over `cap` at most, from rounding
