"""Photos without labels, used by the feature method: its head learns from its own confident guesses.

Self-training on cached features, in rounds: the head guesses a class for every unlabelled photo; the
most confident share of each guessed class (a quarter, half, three quarters or all: the share is the
confidence threshold, taken per class so that a class the head over-predicts does not swamp the
others) joins the labelled rows with its guesses, and the head is fitted again at the C that
cross-validation chose on the labelled rows alone.

Whether the guesses help is decided on every labelled image the head can be scored on, not on the
validation images alone: with 5 photos per class the validation part is one photo per class, and a
share had to get one more of 17 right to be used. So the same self-training also runs inside the
folds of a cross-validation of the labelled training images: in each fold a head fitted on the other
folds' images guesses the pool itself (it never saw the held-out images' labels, not even through its
guesses), learns from its share of guesses, and is scored on the held-out images. A share is chosen
by the number of images it gets right over all the folds' held-out images plus the validation
images (then by their log loss), and it is used only when that is more than the head without guesses
gets right: where the evidence says the guesses do not help, none are used. Rounds go on (at most
MAX_ROUNDS, each fold guessing with its own newest head) while the count grows.

Every candidate head of a round (each fold and the validation check, times each share) is one
logistic regression at the same C on the same rows with its own labels and row weights, so they are
solved together (`linear.fit_logistic_many`), each from the head it extends. With `--head svm` the
evidence comes from logistic regression as a stand-in; the final head is the user's kind.
Validation and test images never train: they are labelled images, and copies of them were left out
of the pool when it was read (`data/unlabelled.py`).

Only the linear head learns from pseudo-labels; the network stays as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from scipy.special import log_softmax
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from tlearn.core.errors import ConfigError
from tlearn.models.tta import mirror_logits
from tlearn.training.linear import LinearFits, fit_logistic_many

MAX_ROUNDS = 3
SHARES = (0.25, 0.5, 0.75, 1.0)  # of each guessed class, most confident first: the thresholds tried
WARM_STEPS = 60  # L-BFGS steps of a candidate from the head it extends: enough to rank the shares
MAX_FOLDS = 3  # folds of the labelled training images that score the shares, with the validation images

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

    def subset(self, idx: np.ndarray) -> Views:
        return Views(self.clean[idx], None if self.mirror is None else self.mirror[idx])


@dataclass(frozen=True)
class Labelled:
    """What the head learns from and what it can be scored on.

    Rows x (n, D) with labels y and the image each row came from (`owners`: an image's clean, mirror
    and augmented rows share its id); `images` are those training images as the classifier sees
    them (clean and mirror), with their ids and labels."""

    x: np.ndarray
    y: np.ndarray
    owners: np.ndarray
    images: Views
    ids: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class SelfTrained:
    head: Head
    taken: np.ndarray  # pool indices learned from
    labels: np.ndarray  # the class each was given
    threshold: float | None  # the lowest confidence taken
    rounds: int
    val_before: float  # validation accuracy of the head without them
    val_after: float
    checked: int  # labelled images the shares were scored on (held-out training images + validation)
    right_before: int  # of them, right without guesses
    right_after: int  # right with the guesses used


@dataclass(frozen=True)
class _Check:
    """One place a share is scored: a head learns from the labelled rows `learn` (a mask over x) plus
    its own guesses, and is scored on `held` (images it never learned from)."""

    learn: np.ndarray
    held: Views
    labels: np.ndarray


def validation_score(val: Views, labels: np.ndarray, score: Score) -> tuple[float, float]:
    """(accuracy, minus log loss) on the validation images: larger is better, compared in that order."""
    logp = log_softmax(val.logits(score), axis=1)
    return float((logp.argmax(1) == labels).mean()), float(logp[np.arange(len(labels)), labels].mean())


def confident_share(confidence: np.ndarray, guess: np.ndarray, share: float) -> np.ndarray:
    """Pool indices of the most confident `share` of the photos guessed as each class (at least one)."""
    taken = []
    for c in np.unique(guess):
        mine = np.flatnonzero(guess == c)
        taken.append(mine[np.argsort(-confidence[mine], kind="stable")][: max(1, math.ceil(share * len(mine)))])
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, np.int64)


def self_train(
    labelled: Labelled,
    pool: Views,
    val: Views,
    val_labels: np.ndarray,
    *,
    start: Head,
    fit: FitHead,
    C: float,
    num_classes: int,
    max_rounds: int = MAX_ROUNDS,
    seed: int = 0,
) -> SelfTrained:
    """Rounds of pseudo-labelling from `start` (the head on the labelled rows), kept only where the
    held-out labelled images say they help."""
    if not len(val_labels):
        raise ConfigError(
            "--unlabelled needs validation images to choose how many guesses to trust. Got none.",
            hint="Keep --val-frac above 0 (or give the dataset a val/ folder).",
        )
    before = validation_score(val, val_labels, start[1])[0]
    checks = _checks(labelled, val, val_labels, seed)
    n, n_pool = len(labelled.x), len(pool.clean)
    copies = 1 if pool.mirror is None else 2
    # The candidates learn from each photo once, as its mean view (with the weight of its views): what
    # the head predicts from, at half the cost; the final head learns from every view.
    mean_view = pool.clean if pool.mirror is None else (pool.clean + pool.mirror) / 2
    rows = np.concatenate([labelled.x, mean_view])

    def problems(
        of: list[_Check], chosen: list[np.ndarray], guesses: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and row weights (P, rows) of problem p: its check's labelled rows plus pool photos chosen[p]."""
        labels = np.tile(np.concatenate([labelled.y, np.zeros(n_pool, np.int64)]), (len(chosen), 1))
        weights = np.zeros(labels.shape, np.float32)
        for p, (check, idx, guess) in enumerate(zip(of, chosen, guesses, strict=True)):
            weights[p, :n] = check.learn
            labels[p, n + idx] = guess[idx]
            weights[p, n + idx] = copies
        return labels, weights

    empty = np.zeros(0, np.int64)
    learn = np.stack([c.learn for c in checks])
    heads = fit_logistic_many(labelled.x, np.tile(labelled.y, (len(checks), 1)), learn, num_classes=num_classes, C=C)
    best = _evidence(checks, heads)
    right_before = best[0]
    taken, given, threshold, rounds = empty, empty, None, 0
    for _ in range(max_rounds if n_pool else 0):
        guessed = [_guess(pool, heads.score(p)) for p in range(len(checks))]
        chosen = [confident_share(conf, guess, s) for conf, guess in guessed for s in SHARES]
        guesses = [guess for _, guess in guessed for _ in SHARES]
        labels, weights = problems([c for c in checks for _ in SHARES], chosen, guesses)
        warm = LinearFits(np.repeat(heads.weight, len(SHARES), axis=0), np.repeat(heads.bias, len(SHARES), axis=0))
        tried = fit_logistic_many(rows, labels, weights, num_classes=num_classes, C=C, start=warm, max_iter=WARM_STEPS)
        per_share = [_evidence(checks, tried, offset=s, stride=len(SHARES)) for s in range(len(SHARES))]
        s = max(range(len(SHARES)), key=lambda i: per_share[i])
        if per_share[s][0] <= best[0]:  # more held-out images right, or stop: a lower loss alone is noise
            break
        best, rounds = per_share[s], rounds + 1
        keep = [p * len(SHARES) + s for p in range(len(checks))]
        heads = LinearFits(tried.weight[keep], tried.bias[keep])
        confidence, guess = guessed[-1]  # the validation check's head learns from every labelled row
        taken, given = chosen[keep[-1]], guess[chosen[keep[-1]]]
        threshold = float(confidence[taken].min())
    if not rounds:
        return SelfTrained(start, empty, empty, None, 0, before, before, _n_checked(checks), right_before, right_before)
    head = fit(
        np.concatenate([labelled.x, pool.rows(taken)]),
        np.concatenate([labelled.y, np.tile(given, copies)]),
        np.concatenate([labelled.owners, np.tile(int(labelled.owners.max(initial=-1)) + 1 + taken, copies)]),
    )
    after = validation_score(val, val_labels, head[1])[0]
    return SelfTrained(head, taken, given, threshold, rounds, before, after, _n_checked(checks), right_before, best[0])


def _checks(labelled: Labelled, val: Views, val_labels: np.ndarray, seed: int) -> list[_Check]:
    """The folds of the labelled training images (as many as the smallest class allows, at most
    MAX_FOLDS; none below 2), then the validation check (every labelled row learns, validation scores)."""
    counts = np.bincount(labelled.labels)
    folds = int(min(MAX_FOLDS, counts[counts > 0].min())) if len(labelled.labels) else 0
    checks = []
    if folds >= 2:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for _, held in splitter.split(labelled.ids, labelled.labels, labelled.ids):
            learn = ~np.isin(labelled.owners, labelled.ids[held])
            checks.append(_Check(learn.astype(np.float32), labelled.images.subset(held), labelled.labels[held]))
    checks.append(_Check(np.ones(len(labelled.x), np.float32), val, val_labels))
    return checks


def _guess(pool: Views, score: Score) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, guessed class) of every pool photo."""
    logp = log_softmax(pool.logits(score), axis=1)
    return np.exp(logp.max(1)), logp.argmax(1)


def _evidence(checks: list[_Check], heads: LinearFits, *, offset: int = 0, stride: int = 1) -> tuple[int, float]:
    """(held-out images right, their summed log-probability of the true class) over every check;
    check c is scored with head offset + c * stride."""
    right, logp_true = 0, 0.0
    for c, check in enumerate(checks):
        logp = log_softmax(check.held.logits(heads.score(offset + c * stride)), axis=1)
        right += int((logp.argmax(1) == check.labels).sum())
        logp_true += float(logp[np.arange(len(check.labels)), check.labels].sum())
    return right, logp_true


def _n_checked(checks: list[_Check]) -> int:
    return sum(len(c.labels) for c in checks)
