"""Calibrated probabilities: one temperature, fitted on the validation split, divides the logits.

A model trained with label smoothing is underconfident by design, a linear probe on a few hundred
images is often overconfident; neither says "90%" and is right 90% of the time. Temperature scaling
(Guo et al. 2017) fixes that without changing a single prediction: the logits are divided by one
scalar T chosen to minimise the validation log loss. The `Classifier` applies T inside its forward
pass, so the bundle, its ONNX export and the server all give the calibrated probabilities.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from tlearn.artifacts.details import Calibration, Reliability
from tlearn.artifacts.metrics import expected_calibration_error, reliability_bins
from tlearn.data.labelled import LabelledImages
from tlearn.training.fitted import Fitted

MIN_IMAGES = 30  # fewer validation images than this cannot choose a temperature: keep 1
BOUNDS = (0.25, 4.0)  # a temperature outside these says more about a tiny validation split than the model
_TINY = 1e-12


def fit_temperature(proba: np.ndarray, labels: np.ndarray) -> Calibration:
    """The temperature that minimises the log loss of `proba` (N, K) on `labels` (N,); 1 when N is small."""
    n = len(labels)
    # With every validation image right, the log loss only falls as T -> 0: the minimum sits at the bound
    # and says nothing about the images the model will meet. Keep 1 then, as for too few images.
    if n < MIN_IMAGES or (proba.argmax(axis=1) == labels).all():
        return Calibration(temperature=1.0, images=n)
    logp = np.log(np.clip(proba, _TINY, 1.0))
    rows = np.arange(n)

    def loss(log_t: float) -> float:
        return float(-log_softmax(logp / np.exp(log_t), axis=1)[rows, labels].mean())

    found = minimize_scalar(loss, bounds=tuple(np.log(BOUNDS)), method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(found.x))
    after = rescale(proba, t)
    return Calibration(
        temperature=t,
        images=n,
        ece_before=expected_calibration_error(labels, proba),
        ece_after=expected_calibration_error(labels, after),
        log_loss_before=loss(0.0),
        log_loss_after=float(found.fun),
    )


def rescale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities as the same model gives them with its logits divided by `temperature`.

    log p differs from the logits by one constant per row, which the softmax cancels, so this equals
    softmax(logits / T) exactly (to float rounding).
    """
    if temperature == 1.0 or not len(proba):
        return proba
    return np.asarray(softmax(np.log(np.clip(proba, _TINY, 1.0)) / temperature, axis=1), dtype=proba.dtype)


def calibrated(fitted: Fitted, data: LabelledImages) -> Fitted:
    """The fitted model with its temperature set from the validation images, and its probabilities rescaled."""
    val = data.split.val
    if "val" not in fitted.proba or not len(val):
        return fitted
    cal = fit_temperature(fitted.proba["val"], data.labels[val])
    fitted.classifier.temperature = cal.temperature
    proba = {part: rescale(p, cal.temperature) for part, p in fitted.proba.items()}
    parts = data.split.parts()
    cal = replace(
        cal,
        reliability=tuple(
            reliability(part, data.labels[parts[part]], fitted.proba[part], proba[part])
            for part in ("val", "test")
            if part in proba and len(parts.get(part, ()))
        ),
    )
    return replace(fitted, proba=proba, details=replace(fitted.details, calibration=cal))


def reliability(part: str, labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> Reliability:
    """The reliability diagram's numbers of one part, before and after the temperature."""
    cb, fb, ab = reliability_bins(labels, before)
    ca, fa, aa = reliability_bins(labels, after)
    return Reliability(
        part=part,
        images=len(labels),
        ece_before=expected_calibration_error(labels, before),
        ece_after=expected_calibration_error(labels, after),
        count_before=cb,
        confidence_before=fb,
        accuracy_before=ab,
        count_after=ca,
        confidence_after=fa,
        accuracy_after=aa,
    )
