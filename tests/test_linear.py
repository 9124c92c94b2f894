"""Linear heads: the folded nn.Linear is the scikit-learn model, C comes from the grid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tlearn.core.errors import ConfigError
from tlearn.training.linear import C_GRID, chosen_c, fit_linear, fit_logistic_many


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
    # scikit-learn's solution, solved far past any fit's tolerance
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=10_000, tol=1e-10)).fit(x, y)
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
    # scikit-learn's solution, solved far past any fit's tolerance (at its default 1e-4, 2 to 4e-4 of
    # probability away from it, whether the rows are centred or not)
    reference = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10).fit(x / rms, y)
    logits = layer_out(fit, x)
    p1 = 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))
    np.testing.assert_allclose(p1, reference.predict_proba(x / rms)[:, 1], atol=2e-4)


def blobs_with(*, n: int = 90, spread: float = 2.0, noise: float = 1.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0, spread, size=(3, 12))[y] + rng.normal(0, noise, size=(n, 12)) + 5.0
    return x.astype(np.float32), y


def test_cross_validation_separates_the_blobs_with_the_c_it_reports() -> None:
    x, y = blobs(n=120)
    fit = fit_linear(x, y, num_classes=3)
    assert fit.folds == 3 and [c for c, _ in fit.cv_scores] == list(C_GRID)
    assert fit.C in C_GRID
    assert max(s for _, s in fit.cv_scores) > 0.8
    assert (layer_out(fit, x).argmax(1) == y).mean() > 0.85


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_well_separated_classes_get_little_regularisation(seed: int) -> None:
    x, y = blobs_with(spread=3.0, noise=0.3, seed=seed)  # far apart: confident predictions cost nothing
    fit = fit_linear(x, y, num_classes=3, seed=seed)
    assert fit.C >= 10, fit.cv_scores
    assert min(s for _, s in fit.cv_scores) == 1.0  # every C separates them; log loss prefers the weakest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_that_say_nothing_about_the_labels_get_the_strongest_regularisation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(90, 100)).astype(np.float32)  # 100 dimensions of noise: anything learnt is overfitting
    fit = fit_linear(x, np.arange(90) % 3, num_classes=3, seed=seed)
    assert fit.C <= 0.1, fit.cv_scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_labels_need_more_regularisation_than_clean_ones(seed: int) -> None:
    x, y = blobs_with(n=120, seed=seed)
    flipped = np.random.default_rng(seed).random(len(y)) < 0.3
    noisy = np.where(flipped, (y + 1) % 3, y)  # 30% of the labels wrong
    clean_fit = fit_linear(x, y, num_classes=3, seed=seed)
    noisy_fit = fit_linear(x, noisy, num_classes=3, seed=seed)
    assert noisy_fit.C * 10 <= clean_fit.C, (noisy_fit.C, clean_fit.C)
    assert noisy_fit.C <= 1.0


@pytest.mark.parametrize(("spread", "noise"), [(3.0, 0.3), (2.0, 1.5), (0.0, 1.0)])
def test_svm_takes_the_strongest_regularisation_among_the_best_cross_validated_accuracies(
    spread: float, noise: float
) -> None:
    x, y = blobs_with(spread=spread, noise=noise)
    fit = fit_linear(x, y, num_classes=3, kind="svm")
    best = max(s for _, s in fit.cv_scores)
    assert min(c for c, s in fit.cv_scores if s == best) == fit.C, fit.cv_scores


def test_a_given_c_skips_cross_validation() -> None:
    x, y = blobs()
    fit = fit_linear(x, y, num_classes=3, C=0.3)
    assert (fit.C, fit.cv_scores, fit.folds) == (0.3, (), 0)


def test_class_missing_from_training_is_never_predicted() -> None:
    x, y = blobs(k=2)
    fit = fit_linear(x, y, num_classes=3, C=1.0)
    assert (layer_out(fit, x).argmax(1) != 2).all()


def test_a_class_of_one_image_stays_in_training_while_the_others_choose_c() -> None:
    x, y = blobs(n=120)
    lone = x[:1] + 20.0  # far from the three blobs: a class of its own
    x, y = np.concatenate([x, lone]), np.concatenate([y, [3]])
    fit = fit_linear(x, y, num_classes=4)
    assert fit.folds == 3 and [c for c, _ in fit.cv_scores] == list(C_GRID)
    # held out, the lone image could never be right: the scores are those of the classes cross-validation can judge
    assert max(s for _, s in fit.cv_scores) > 0.8
    assert layer_out(fit, lone).argmax(1).tolist() == [3]


def test_unknown_head_names_the_flag() -> None:
    x, y = blobs()
    with pytest.raises(ConfigError, match="--head must be"):
        fit_linear(x, y, num_classes=3, kind="forest")  # type: ignore[arg-type]


def test_many_heads_solved_together_are_the_heads_fitted_one_by_one() -> None:
    """Row weights of 0 leave rows out, other labels give another head: each one is fit_linear's at that C."""
    x, y = blobs()
    other = (y + 1) % 3
    keep = np.arange(len(y)) % 4 != 0
    fits = fit_logistic_many(
        x, np.stack([y, y, other]), np.stack([np.ones(len(y)), keep, np.ones(len(y))]), num_classes=3, C=0.5
    )
    alone = [
        fit_linear(x, y, num_classes=3, C=0.5),
        fit_linear(x[keep], y[keep], num_classes=3, C=0.5),
        fit_linear(x, other, num_classes=3, C=0.5),
    ]
    for p, fit in enumerate(alone):
        proba = torch.softmax(torch.from_numpy(fits.logits(p, x)), 1).numpy()
        reference = torch.softmax(torch.from_numpy(fit.logits(x)), 1).numpy()
        np.testing.assert_allclose(proba, reference, atol=0.02)
    assert not np.allclose(fits.logits(0, x), fits.logits(1, x), atol=0.05)  # the rows left out count


def test_near_equal_cross_validated_losses_go_to_the_strongest_regularisation() -> None:
    # The demo's mean held-out log losses per C, from the same features computed by eager PyTorch and
    # by ONNX Runtime (equal to 1e-5): the lowest loss is at C=100 for one and C=31.6 for the other.
    eager = [0.10502, 0.05444, 0.02873, 0.01565, 0.00894, 0.00557, 0.00367, 0.00367, 0.00276]
    onnx = [0.10505, 0.05445, 0.02865, 0.01572, 0.00893, 0.00554, 0.00388, 0.00268, 0.00273]
    assert C_GRID[chosen_c(np.array(eager))] == C_GRID[chosen_c(np.array(onnx))] == 1.0
    # A loss lower by more than the tie is still chosen: the rule does not regularise beyond the data.
    assert C_GRID[chosen_c(np.array([0.9, 0.5, 0.31, 0.3, 0.28, 0.25, 0.2, 0.19, 0.185]))] == 31.622776601683793


def separable(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """60 images of 4 classes in 256 dimensions, as pooled CNN features look: non-negative, separable."""
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 4
    x = np.abs(rng.normal(0, 1.0, size=(4, 256))[y] + rng.normal(0, 2.0, size=(60, 256)))
    return x.astype(np.float32), y


def test_features_that_differ_by_1e_6_choose_the_same_c() -> None:
    x, y = separable()
    first = fit_linear(x, y, num_classes=4)
    for seed in range(1, 6):  # the lowest loss alone chose 31.6 instead of 10 for one of these
        nudged = x + np.random.default_rng(100 + seed).normal(size=x.shape).astype(np.float32) * 1e-6
        assert fit_linear(nudged, y, num_classes=4).C == first.C, seed


def relu_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """400 images of 10 classes in 512 dimensions whose every feature has a large mean of its own, as
    a ReLU network's pooled features do: the shared direction the solver must not crawl along."""
    rng = np.random.default_rng(seed)
    y = np.arange(400) % 10
    mean = 3.0 * rng.uniform(0.5, 1.5, size=512)
    x = np.maximum(0.0, mean + 0.5 * rng.normal(size=(10, 512))[y] + rng.normal(size=(400, 512)))
    return x.astype(np.float32), y


def test_the_strongest_regularisation_on_features_with_a_large_mean_reaches_scikit_learns_head() -> None:
    """C = 0.01, where the cross-validation starts from zero: 150 L-BFGS steps on the raw rows stopped
    1 point of probability away (0.0107); from a warm start at C = 0.1 too (the bias converted to and
    from the centred rows)."""
    x, y = relu_features()
    C, ones = C_GRID[0], np.ones((1, len(y)))
    reference = torch.softmax(torch.from_numpy(fit_linear(x, y, num_classes=10, C=C).logits(x)), 1).numpy()
    cold = fit_logistic_many(x, y[None], ones, num_classes=10, C=C)
    warm = fit_logistic_many(
        x, y[None], ones, num_classes=10, C=C, start=fit_logistic_many(x, y[None], ones, num_classes=10, C=0.1)
    )
    for fits in (cold, warm):
        np.testing.assert_allclose(torch.softmax(torch.from_numpy(fits.logits(0, x)), 1).numpy(), reference, atol=0.003)


@pytest.mark.parametrize("kind", ["logistic", "svm"])
def test_one_training_image_per_class_fits_without_a_library_warning(kind: str) -> None:
    # 30 classes of one training image each: scikit-learn warned "The number of unique classes is greater than
    # 50% of the number of samples", with its file and line, four times above the output of tlearn train.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 8)).astype(np.float32), np.arange(30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_linear(x, y, num_classes=30, kind=kind)  # type: ignore[arg-type]
    assert (layer_out(fit, x).argmax(1) == y).all()
