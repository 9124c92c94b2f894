"""Every run learns its "unknown" answer: a bank of what its training images look like, a threshold set on validation.

The bank is small by construction: one L2-normalised mean per class plus at most `BANK_CAP` training
rows (a seeded sample, every class kept in proportion), stored as float16. The threshold is the
`recall` quantile of the validation images' scores, so that share of known images is answered with
a class; the rest of the rule (which score, see `models/unknown.py`) is the same for every bundle.
The training images cannot set the threshold: they are in the bank, at distance 0 from themselves.

The validation scores that set the threshold (and standardise a combined kind) are computed through
the path a user's prediction takes: each file decoded straight to its eval crop (`data/eval_pixels.py`),
in batches of the predictor's default size, through the final network, so that a reloaded bundle keeps
the share of validation images its rule says it keeps; the threshold sits a hair above the quantile's
score (THRESHOLD_SLACK), which engines and batch sizes move in its last digits.

The feature method's pass (auto's probe pass) has computed exactly those features already, since
prediction decodes a file to the pixels training decoded it to: with them (`Fitted.val_predicted`)
the threshold costs the head alone. Other methods decode the files and run the final network here
(`predicted_outputs`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tlearn.core.preprocessing import Preprocessing
from tlearn.core.threads import prefetched
from tlearn.data.eval_pixels import decode_eval_pixels, to_model_input
from tlearn.data.labelled import LabelledImages
from tlearn.models.classifier import Classifier
from tlearn.models.unknown import (
    BANK_CAP,
    COMBINED,
    DEFAULT_KIND,
    DEFAULT_RECALL,
    MIN_VAL_IMAGES,
    UnknownRule,
    UnknownScorer,
    normalised,
    standardising,
)
from tlearn.training.fitted import Fitted

log = logging.getLogger(__name__)


def with_unknown(
    fitted: Fitted,
    data: LabelledImages,
    *,
    recall: float = DEFAULT_RECALL,
    kind: str = DEFAULT_KIND,
    cap: int = BANK_CAP,
    seed: int = 0,
    val_files: Sequence[Path] | None = None,
    prep: Preprocessing | None = None,
) -> Fitted:
    """The fitted model with an `UnknownScorer` inside its classifier (unchanged when it cannot learn one).

    With `val_files` (the validation images' files, in split order) and the bundle's `prep`, the
    threshold is set on scores of those files as prediction computes them (from `fitted.val_predicted`
    when the method holds their features); else on the cached features.
    """
    feats, proba = fitted.features, fitted.proba
    if "train" not in feats or "val" not in feats or "val" not in proba or len(feats["val"]) < MIN_VAL_IMAGES:
        log.info("Too few validation images to set the unknown threshold: the bundle has no rejection.")
        return fitted
    scorer = fit_scorer(
        feats["train"], data.labels[data.split.train], num_classes=len(data.classes), kind=kind, cap=cap, seed=seed
    )
    if fitted.val_predicted is not None:  # the network already ran on the files, as prediction runs it
        clean, mirror = fitted.val_predicted
        with torch.inference_mode():
            z, f = fitted.classifier.eval().outputs_of_features(
                torch.from_numpy(clean), None if mirror is None else torch.from_numpy(mirror)
            )
    elif val_files is not None and prep is not None:
        f, z = predicted_outputs(fitted.classifier, val_files, prep)
    else:
        f, z = _tensors(feats["val"], proba["val"])
    if kind in COMBINED:
        means, bank = scorer.get_buffer("means"), scorer.get_buffer("bank")
        scorer.rule = replace(scorer.rule, norm=standardising(kind, f, z, means, bank, k=scorer.rule.k))
    with torch.inference_mode():
        val_scores = scorer(f, z).numpy()
    threshold = placed_threshold(val_scores, recall)
    scorer.rule = replace(
        scorer.rule, threshold=threshold, recall=float((val_scores <= threshold).mean()), val_images=len(val_scores)
    )
    # The test share is a figure for the report: the cached features give it within the decode difference.
    if "test" in feats and "test" in proba and len(feats["test"]):
        test_scores = scores(scorer, feats["test"], proba["test"])
        scorer.rule = replace(scorer.rule, test_recall=float((test_scores <= threshold).mean()))
    fitted.classifier.unknown = scorer
    return fitted


# The threshold sits this share of the scores' scale above the validation score at the quantile: the
# engines (PyTorch at other batch sizes, ONNX Runtime) give an image scores that differ in their last
# digits, and the image at the quantile must stay on the side of the threshold it was counted on.
THRESHOLD_SLACK = 1e-4


def placed_threshold(val_scores: np.ndarray, recall: float) -> float:
    """The `recall` quantile of the validation scores (one of them), raised by THRESHOLD_SLACK of their scale."""
    at = float(np.quantile(val_scores, recall, method="higher"))
    scale = max(abs(at), float(np.ptp(val_scores)), 1e-6)
    return at + THRESHOLD_SLACK * scale


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


PREDICT_BATCH = 32  # the predictor's default batch size: the same batches give the very same scores


def predicted_outputs(
    classifier: Classifier, files: Sequence[Path], prep: Preprocessing
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) pooled features and (N, K) calibrated logits of image files, as `Predictor` computes them:
    decoded straight to the eval crop, batches of `PREDICT_BATCH`, channels-last float32."""
    feats: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    classifier.eval()
    # The next batch's files decode on threads while the network runs this one (Pillow releases the GIL).
    decoded = prefetched(lambda p: decode_eval_pixels(p, prep), files, ahead=2 * PREDICT_BATCH)
    for start in range(0, len(files), PREDICT_BATCH):
        pixels = np.stack([next(decoded) for _ in files[start : start + PREDICT_BATCH]])
        x = torch.from_numpy(to_model_input(pixels)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            z, f = classifier.logits_and_features(x)
        feats.append(f.float())
        logits.append(z.float())
    return torch.cat(feats), torch.cat(logits)


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
