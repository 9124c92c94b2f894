"""The values that flow between the steps of a run: labelled images in, a fitted classifier out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlearn.data.scan import Pixels
from tlearn.data.split import Split
from tlearn.model import Classifier, HeadSpec
from tlearn.preprocessing import Preprocessing


@dataclass(frozen=True)
class LabelledImages:
    """Decoded images with class indices and their split; tuples are parallel, indexed 0..N-1."""

    pixels: Pixels  # uint8 (H, W, 3), shorter side at the working size, decoded on first use
    labels: np.ndarray  # (N,) int64 index into `classes`
    sha256: tuple[str, ...]  # content hash of each file (cache keys)
    classes: tuple[str, ...]
    split: Split

    def __len__(self) -> int:
        return len(self.pixels)

    def without_test(self) -> LabelledImages:
        """The training and validation images only, renumbered: what a training phase may look at."""
        keep = np.sort(np.concatenate([self.split.train, self.split.val]))
        new_index = {int(old): new for new, old in enumerate(keep)}
        split = Split(
            train=np.array([new_index[int(i)] for i in self.split.train], dtype=np.int64),
            val=np.array([new_index[int(i)] for i in self.split.val], dtype=np.int64),
            test=np.zeros(0, dtype=np.int64),
            origin=self.split.origin,
            seed=self.split.seed,
        )
        return LabelledImages(
            pixels=self.pixels.subset(keep),
            labels=self.labels[keep],
            sha256=tuple(self.sha256[i] for i in keep),
            classes=self.classes,
            split=split,
        )


@dataclass(frozen=True)
class Fitted:
    """What a method returns: the network, its head, what it learned, and its probabilities per part."""

    classifier: Classifier
    head: HeadSpec
    details: dict[str, Any] = field(default_factory=dict)
    proba: dict[str, np.ndarray] = field(default_factory=dict)  # "train" / "val" / "test" -> (n, K)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    preprocessing: Preprocessing | None = None  # when it differs from the backbone's (see for_features)
