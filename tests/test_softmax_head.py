"""`--head softmax`: a softmax layer trained on the cached features, not a logistic regression in disguise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tlearn
from tlearn.training.linear import C_GRID

TINY = {"backbone": "test_efficientnet", "weights": "none", "input_size": 64}


def test_softmax_head_trains_a_layer_that_learns_the_shapes(shapes: Path, tmp_path: Path) -> None:
    soft = tlearn.train(shapes, method="features", head="softmax", out=tmp_path / "soft", seed=0, **TINY)
    assert soft.details.linear is not None
    assert soft.details.linear.head == "softmax" and soft.details.linear.C is None  # no C: it is not sklearn's
    assert soft.metrics["val"].accuracy >= 0.5  # 4 classes: chance is 25%
    logistic = tlearn.train(shapes, method="features", out=tmp_path / "lr", seed=0, **TINY)
    assert logistic.details.linear is not None and logistic.details.linear.C in C_GRID
    # different heads on the same features: the probabilities differ
    clf_soft, clf_lr = tlearn.load(soft.out), tlearn.load(logistic.out)
    image = next((shapes / soft.classes[0]).iterdir())
    assert not np.allclose(clf_soft.predict_proba(image), clf_lr.predict_proba(image), atol=1e-3)
