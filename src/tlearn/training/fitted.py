"""What a training method returns: the fitted network, its head, what it learned, its probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlearn.artifacts.details import MethodDetails
from tlearn.core.preprocessing import Preprocessing
from tlearn.models.classifier import Classifier, HeadSpec


@dataclass(frozen=True)
class Fitted:
    """What a method returns: the network, its head, what it learned, and its probabilities per part."""

    classifier: Classifier
    head: HeadSpec
    details: MethodDetails
    proba: dict[str, np.ndarray] = field(default_factory=dict)  # "train" / "val" / "test" -> (n, K)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    preprocessing: Preprocessing | None = None  # when it differs from the backbone's (see for_features)
    # (n, D) pooled features per part as the final network computes them (mirror rule included):
    # what the "unknown" score learns from (training/unknown.py)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    # (n_val, D) features of the validation images and of their mirror images (None without the mirror
    # rule) from the final network's trunk, as prediction computes them for their files: what the unknown
    # threshold is set on without running the network again (the feature method's own pass)
    val_predicted: tuple[np.ndarray, np.ndarray | None] | None = None
