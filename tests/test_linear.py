"""Linear heads: the folded nn.Linear is the scikit-learn model, C comes from the grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tlearn.core.errors import ConfigError
from tlearn.training.linear import C_GRID, fit_linear


def blobs(n: int = 90, k: int = 3, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(0, 2, size=(k, d))
    x = centres[y] + rng.normal(0, 1.5, size=(n, d)) + 5.0  # offset: scaling must fold the mean in
    return x.astype(np.float32), y


def layer_out(fit, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return fit.to_linear()(torch.from_numpy(x)).numpy()


def test_folded_layer_gives_the_scikit_learn_probabilities() -> None:
    x, y = blobs()
    fit = fit_linear(x, y, num_classes=3, C=0.5, scaling="standard")
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(x, y)
    logits = layer_out(fit, x)
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    np.testing.assert_allclose(proba, reference.predict_proba(x), atol=2e-4)


def test_folded_svm_gives_the_scikit_learn_decisions() -> None:
    x, y = blobs()
    fit = fit_linear(x, y, num_classes=3, kind="svm", C=0.1, scaling="standard")
    reference = make_pipeline(StandardScaler(), LinearSVC(C=0.1, max_iter=5000, random_state=0)).fit(x, y)
    np.testing.assert_allclose(layer_out(fit, x), reference.decision_function(x), atol=1e-3)


def test_binary_problem_gives_two_columns_that_agree_with_scikit_learn() -> None:
    x, y = blobs(k=2)
    fit = fit_linear(x, y, num_classes=2, C=1.0, scaling="global")
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(x / rms, y)
    logits = layer_out(fit, x)
    p1 = 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))
    np.testing.assert_allclose(p1, reference.predict_proba(x / rms)[:, 1], atol=2e-4)


def test_cross_validation_picks_c_from_the_grid_and_separates_the_blobs() -> None:
    x, y = blobs(n=120)
    fit = fit_linear(x, y, num_classes=3)
    assert fit.C in C_GRID and fit.folds == 3
    assert len(fit.cv_scores) == len(C_GRID)
    assert max(s for _, s in fit.cv_scores) > 0.8
    assert (layer_out(fit, x).argmax(1) == y).mean() > 0.85


def test_class_missing_from_training_is_never_predicted() -> None:
    x, y = blobs(k=2)
    fit = fit_linear(x, y, num_classes=3, C=1.0)
    assert (layer_out(fit, x).argmax(1) != 2).all()


def test_unknown_head_names_the_flag() -> None:
    x, y = blobs()
    with pytest.raises(ConfigError, match="--head must be"):
        fit_linear(x, y, num_classes=3, kind="forest")  # type: ignore[arg-type]
