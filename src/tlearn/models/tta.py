"""The one test-time augmentation rule: an image and its mirror image count as one, by their mean logits.

Every place that combines the two uses these functions: the `Classifier` (so the bundle, its ONNX
export and the server), training-time validation, the feature method's metrics from cached features,
and `predict --tta` on a bundle that was trained without the mirror view. Averaging logits equals
averaging log-probabilities before the softmax (the per-row log-sum-exp constants cancel), so the
rule can be applied to an engine that returns probabilities and give the same answer.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from scipy.special import softmax

T = TypeVar("T", torch.Tensor, np.ndarray)

_TINY = 1e-30  # log(0) guard: a probability that underflowed to zero still ranks last


def mirror_logits(logits: T, mirrored: T) -> T:
    """(N, K) logits of the images and of their mirror images -> the (N, K) logits that count."""
    return (logits + mirrored) / 2


def mirror_proba(proba: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """The same rule for an engine that returns (N, K) probabilities: softmax of the mean log-probability."""
    logp = np.log(np.maximum(proba, _TINY))
    logm = np.log(np.maximum(mirrored, _TINY))
    return np.asarray(softmax(mirror_logits(logp, logm), axis=1), dtype=np.float32)
