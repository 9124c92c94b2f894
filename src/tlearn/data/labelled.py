"""Labelled images: what every training method takes in (decoded pixels, labels, content hashes, the split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlearn.data.scan import Pixels
from tlearn.data.split import Split


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
