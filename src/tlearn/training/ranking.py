"""Which unlabelled photos to label next: the model's doubt, spread over feature space.

Uncertainty alone picks the photos nearest a decision boundary, and on a real folder many of them
are near copies of one another (a burst of one scene, the same flower from two steps away): labelling
twenty of those teaches the model about one thing. So the ranking is greedy, farthest-point among the
doubtful: among the most uncertain photos, each next pick is the one farthest (in normalised feature
space) from the photos already picked, the distance weighted by (1 + uncertainty) / 2 so that of two
photos equally far the more doubtful wins. The weight is at least 1/2: a near copy of a pick (distance
~0) never beats a photo of something else, however sure the model is of that one. Measured on
flowers17 in `benchmarks/data_loop_suggest.py`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from tlearn.core.words import not_one_of

Strategy = Literal["diverse", "uncertainty", "random"]
STRATEGIES: tuple[str, ...] = ("diverse", "uncertainty", "random")
# Picks come from the CANDIDATES x n most uncertain photos: enough room to skip near copies and
# cover the space, few enough that confident photos (which teach little) are not picked for novelty.
CANDIDATES = 4


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """(N, K) probabilities -> (N,) in [0, 1]: 1 minus the gap between the two most probable classes."""
    if proba.shape[1] < 2:
        return np.zeros(len(proba))
    top2 = np.sort(proba, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def normalised(feats: np.ndarray) -> np.ndarray:
    """Features centred and scaled to unit length, so distances compare directions, not magnitudes."""
    x = np.asarray(feats, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def rank_for_labelling(
    proba: np.ndarray,
    feats: np.ndarray,
    n: int,
    *,
    strategy: Strategy = "diverse",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Order every photo by how much labelling it would help; the first `n` are the suggestions.

    `proba` (N, K) are the model's probabilities and `feats` (N, D) its pooled features. Returns the
    order (N,) of photo indices, best first, and each photo's score (N,): for the first `n`, its
    distance to the earlier picks (halved, so in [0, 1]) times (1 + uncertainty) / 2; after them, the
    uncertainty alone. `strategy` "uncertainty" ranks by uncertainty alone, "random" at random (both
    are the baselines of the benchmark).
    """
    total = len(proba)
    u = margin_uncertainty(proba)
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(total)
        return order, u
    by_doubt = np.argsort(-u, kind="stable")
    if strategy == "uncertainty" or total <= 1:
        return by_doubt, u
    if strategy != "diverse":
        raise ValueError(not_one_of("strategy", strategy, STRATEGIES))
    n = max(0, min(n, total))
    pool = by_doubt[: max(n, CANDIDATES * n)]
    x = normalised(feats)[pool]
    nearest = np.full(len(pool), 1.0)  # distance to the nearest pick, halved: in [0, 1]
    score = u.copy()
    picked: list[int] = []
    free = np.ones(len(pool), dtype=bool)
    for _ in range(n):
        gain = np.where(free, nearest * (1 + u[pool]) / 2, -1.0)
        j = int(np.argmax(gain))
        picked.append(j)
        free[j] = False
        score[pool[j]] = float(gain[j])
        nearest = np.minimum(nearest, np.linalg.norm(x - x[j], axis=1) / 2)
    first = pool[picked]
    rest = by_doubt[~np.isin(by_doubt, first)]
    return np.concatenate([first, rest]).astype(np.int64), score
