"""The values that flow between the steps of a run: labelled images in, a fitted classifier out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlearn.data.split import Split
from tlearn.model import Classifier, HeadSpec


@dataclass(frozen=True)
class LabelledImages:
    """Decoded images with class indices and their split; tuples are parallel, indexed 0..N-1."""

    pixels: tuple[np.ndarray, ...]  # uint8 (H, W, 3), shorter side at the working size
    labels: np.ndarray  # (N,) int64 index into `classes`
    sha256: tuple[str, ...]  # content hash of each file (cache keys)
    classes: tuple[str, ...]
    split: Split

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass(frozen=True)
class Fitted:
    """What a method returns: the network, its head, what it learned, and its probabilities per part."""

    classifier: Classifier
    head: HeadSpec
    details: dict[str, Any] = field(default_factory=dict)
    proba: dict[str, np.ndarray] = field(default_factory=dict)  # "train" / "val" / "test" -> (n, K)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
