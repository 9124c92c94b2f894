"""The numbers in a run's report are the numbers a user gets from `tlearn predict` on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tlearn
from tlearn.artifacts.predictions import PREDICTIONS_FILE, read_predictions


def test_predictions_csv_holds_what_the_saved_bundle_predicts(tiny_bundle: Path, shapes_master: Path) -> None:
    """predictions.csv (which the report's tables and mistakes come from) gives, for every validation and
    test image, the class and probabilities that the reloaded bundle gives for that file."""
    rows = read_predictions(tiny_bundle / PREDICTIONS_FILE)
    assert {r.split for r in rows} == {"val", "test"} and len(rows) >= 16
    clf = tlearn.load(tiny_bundle)
    files = [shapes_master / r.path for r in rows]
    predicted = [clf.classes[i] for i in clf.predict_proba(files).argmax(axis=1)]
    assert predicted == [r.predicted for r in rows]
    # Training scored decoded pixels through the eval transform; prediction decodes straight to the eval
    # crop, the same pixels (data/eval_pixels.py). Through the training path the file holds the bundle's
    # probabilities to its 4 decimals (rounding accounts for 5e-5 of the tolerance) ...
    proba = clf.proba_of_inputs(np.stack([clf.model_input(clf.pixels(f)) for f in files]))
    column = {c: i for i, c in enumerate(clf.classes)}
    rows_at = np.arange(len(rows))
    confidence, true_probability = [r.confidence for r in rows], [r.true_probability for r in rows]
    np.testing.assert_allclose(proba[rows_at, [column[r.predicted] for r in rows]], confidence, atol=1e-4)
    np.testing.assert_allclose(proba[rows_at, [column[r.true] for r in rows]], true_probability, atol=1e-4)
    # ... and so does `predict`.
    proba = clf.predict_proba(files)
    np.testing.assert_allclose(proba[rows_at, [column[r.predicted] for r in rows]], confidence, atol=1e-4)


@pytest.mark.parametrize("part", ["val", "test"])
def test_saved_metrics_are_those_of_the_saved_bundle(tiny_bundle: Path, shapes_master: Path, part: str) -> None:
    """The accuracy in tlearn.json (shown by the report and /model) is the reloaded bundle's on that part."""
    rows = [r for r in read_predictions(tiny_bundle / PREDICTIONS_FILE) if r.split == part]
    clf = tlearn.load(tiny_bundle)
    predicted = clf.predict([shapes_master / r.path for r in rows])
    accuracy = float(np.mean([p == r.true for p, r in zip(predicted, rows, strict=True)]))
    assert accuracy == pytest.approx(clf.config.metrics[part]["accuracy"])
