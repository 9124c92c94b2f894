"""Photos without labels, used by the feature method: its head learns from its own confident guesses.

Self-training on cached features, in rounds: the head guesses a class for every unlabelled photo; the
most confident share of them (a quarter, half, three quarters or all: the share is the confidence
threshold) joins the labelled rows with its guesses, and the head is fitted again (at the C that
cross-validation chose on the labelled rows alone). Validation decides everything: the share whose
head is right on the most validation images (then the lowest validation log loss) is kept only if
it is right on more of them than the head without it (a lower loss alone is not enough: on
synthetic data it let photos of nothing in particular in at a cost of 2 points of test accuracy),
and rounds go on (at most MAX_ROUNDS, guesses from the newest head) while validation improves.
Validation and test images never train: they are labelled images, and copies of them were left out
of the pool when it was read (`data/unlabelled.py`).

Only the linear head learns from pseudo-labels; the network stays as it is. Refitting a head costs a
second or two on cached features, which is what makes rounds of it affordable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from scipy.special import log_softmax
from torch import nn

from tlearn.core.errors import ConfigError
from tlearn.models.tta import mirror_logits

MAX_ROUNDS = 3
SHARES = (0.25, 0.5, 0.75, 1.0)  # of the pool, most confident first: the thresholds tried

Score: TypeAlias = Callable[[np.ndarray], np.ndarray]  # features (n, D) -> logits (n, K)
Head: TypeAlias = tuple[nn.Sequential, Score, dict[str, Any]]
FitHead: TypeAlias = Callable[[np.ndarray, np.ndarray, np.ndarray], Head]  # rows, labels, owners -> a head


@dataclass(frozen=True)
class Views:
    """Features of some images: clean (n, D) and mirror (n, D) or None."""

    clean: np.ndarray
    mirror: np.ndarray | None

    def logits(self, score: Score) -> np.ndarray:
        z = score(self.clean)
        return mirror_logits(z, score(self.mirror)) if self.mirror is not None else z

    def rows(self, idx: np.ndarray) -> np.ndarray:
        parts = [self.clean[idx]] + ([self.mirror[idx]] if self.mirror is not None else [])
        return np.concatenate(parts)


@dataclass(frozen=True)
class SelfTrained:
    head: Head
    taken: np.ndarray  # pool indices learned from
    labels: np.ndarray  # the class each was given
    threshold: float | None  # the lowest confidence taken
    rounds: int
    val_before: float  # validation accuracy of the head without them
    val_after: float


def validation_score(val: Views, labels: np.ndarray, score: Score) -> tuple[float, float]:
    """(accuracy, minus log loss) on the validation images: larger is better, compared in that order."""
    logp = log_softmax(val.logits(score), axis=1)
    return float((logp.argmax(1) == labels).mean()), float(logp[np.arange(len(labels)), labels].mean())


def self_train(
    x: np.ndarray,
    y: np.ndarray,
    owners: np.ndarray,
    pool: Views,
    val: Views,
    val_labels: np.ndarray,
    *,
    start: Head,
    fit: FitHead,
    max_rounds: int = MAX_ROUNDS,
) -> SelfTrained:
    """Rounds of pseudo-labelling from `start` (the head on the labelled rows x, y of images `owners`)."""
    if not len(val_labels):
        raise ConfigError(
            "--unlabelled needs validation images to choose how many guesses to trust. Got none.",
            hint="Keep --val-frac above 0 (or give the dataset a val/ folder).",
        )
    best, best_score = start, validation_score(val, val_labels, start[1])
    before = best_score[0]
    taken, labels, threshold, rounds = np.zeros(0, np.int64), np.zeros(0, np.int64), None, 0
    n_pool, first_owner = len(pool.clean), int(owners.max(initial=-1)) + 1
    copies = 1 if pool.mirror is None else 2
    for _ in range(max_rounds if n_pool else 0):
        logp = log_softmax(pool.logits(best[1]), axis=1)
        confidence, guess = np.exp(logp.max(1)), logp.argmax(1)
        order = np.argsort(-confidence, kind="stable")
        tried = []
        for share in SHARES:
            idx = order[: max(1, math.ceil(share * n_pool))]
            head = fit(
                np.concatenate([x, pool.rows(idx)]),
                np.concatenate([y, np.tile(guess[idx], copies)]),
                np.concatenate([owners, np.tile(first_owner + idx, copies)]),
            )
            tried.append((validation_score(val, val_labels, head[1]), idx, head))
        score, idx, head = max(tried, key=lambda t: t[0])
        if score[0] <= best_score[0]:  # right on more validation images, or stop: a lower loss alone is noise
            break
        best, best_score, rounds = head, score, rounds + 1
        taken, labels, threshold = idx, guess[idx], float(confidence[idx].min())
    return SelfTrained(best, taken, labels, threshold, rounds, before, best_score[0])
