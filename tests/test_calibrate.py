"""Temperature scaling: calibrated confidences, the same predictions."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from tlearn.models.classifier import Classifier, FeatureTrunk
from tlearn.training.calibrate import MIN_IMAGES, fit_temperature, rescale


def overconfident(n: int = 400, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of a model right 70% of the time but nearly always ~99% sure."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    guess = np.where(rng.random(n) < 0.7, labels, rng.integers(0, k, n))
    logits = rng.normal(0, 0.5, (n, k))
    logits[np.arange(n), guess] += 6.0
    return logits, softmax(logits, axis=1), labels


def test_an_overconfident_model_gets_a_temperature_above_one_and_a_lower_calibration_error() -> None:
    _, proba, labels = overconfident()
    cal = fit_temperature(proba, labels)
    assert cal.temperature > 1.5
    assert cal.ece_after is not None and cal.ece_before is not None and cal.ece_after < cal.ece_before / 2
    assert cal.log_loss_after is not None and cal.log_loss_before is not None
    assert cal.log_loss_after < cal.log_loss_before
    after = rescale(proba, cal.temperature)
    np.testing.assert_array_equal(after.argmax(1), proba.argmax(1))  # no prediction changes
    np.testing.assert_allclose(after.sum(1), 1.0, atol=1e-6)


def test_rescaled_probabilities_equal_the_softmax_of_the_divided_logits() -> None:
    logits, proba, _ = overconfident(n=50)
    np.testing.assert_allclose(rescale(proba, 2.5), softmax(logits / 2.5, axis=1), atol=1e-6)


def test_too_few_validation_images_keep_the_temperature_at_one() -> None:
    _, proba, labels = overconfident(n=MIN_IMAGES - 1)
    assert fit_temperature(proba, labels).temperature == 1.0


class _Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_the_classifier_divides_its_logits_by_its_temperature() -> None:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(3, 4))
    plain = Classifier(FeatureTrunk(_Mean()), head, mean=(0.5,) * 3, std=(0.5,) * 3, flip_tta=True)
    warm = Classifier(FeatureTrunk(_Mean()), head, mean=(0.5,) * 3, std=(0.5,) * 3, flip_tta=True, temperature=2.0)
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(warm(x), plain(x) / 2.0)


def test_a_trained_bundle_keeps_its_temperature_and_every_engine_applies_it(tmp_path, shapes_master) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    import tlearn

    result = tlearn.train(
        shapes_master,
        method="features",
        backbone="test_efficientnet",
        weights="none",
        input_size=64,
        out=tmp_path / "b",
        val_frac=0.4,  # enough validation images (38) to fit a temperature
    )
    cal = result.details.calibration
    assert cal is not None and cal.images == result.split_counts["val"]
    assert abs(cal.temperature - 1.0) > 1e-3  # else the comparisons below would not test anything
    doc = json.loads((result.out / "tlearn.json").read_text())
    assert doc["temperature"] == cal.temperature == doc["details"]["calibration"]["temperature"]
    # The same bundle with the temperature taken out gives the uncalibrated probabilities.
    plain = tmp_path / "plain"
    shutil.copytree(result.out, plain)
    doc["temperature"] = 1.0
    (plain / "tlearn.json").write_text(json.dumps(doc))
    images = sorted(shapes_master.rglob("*.jpg"))[:6]
    got, raw = tlearn.load(result.out).predict_proba(images), tlearn.load(plain).predict_proba(images)
    np.testing.assert_allclose(got, rescale(raw, cal.temperature), atol=1e-5)
    onnx = tlearn.load(result.out, engine="onnx").predict_proba(images)
    np.testing.assert_allclose(onnx, got, atol=1e-4)


def test_a_validation_split_the_model_gets_all_right_keeps_the_temperature_at_one() -> None:
    logits, _, labels = overconfident(n=200)
    logits[np.arange(200), labels] += 20.0  # every image right
    assert fit_temperature(softmax(logits, axis=1), labels).temperature == 1.0
