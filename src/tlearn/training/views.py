"""Model inputs in a fixed layout, and the per-row values computed from them.

Every image gives a clean input, its mirror image (when the mirror view is on) and K augmented views
per training image. A `ViewPlan` makes those inputs lazily and names each for the caches; a
`FeatureSet` holds what a network computed from them (features, or activations at a cut), split back
into clean / mirror / views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import augmented_view, build_train_transform, view_seed
from tlearn.data.eval_pixels import eval_crop, to_model_input
from tlearn.data.labelled import LabelledImages
from tlearn.data.scan import Pixels
from tlearn.training.config import TrainConfig


@dataclass(frozen=True)
class FeatureSet:
    """Features of every image (and of its mirror image), and augmented views of the training images."""

    clean: np.ndarray  # (N, D), row i is image i
    mirror: np.ndarray | None  # (N, D) features of the mirrored images, when flips are on
    views: np.ndarray  # (len(train) * K, D)
    view_owner: np.ndarray  # (len(train) * K,) image index of each view row


@dataclass(frozen=True)
class ViewPlan:
    """Model inputs in a fixed layout: every image, every mirror image (when on), K views per training image.

    `inputs[r]()` makes row r's (3, H, W) float tensor; `keys[r]` names it in caches. Augmented views
    are seeded by the image's content and the view number, so a view is the same in every run.
    """

    inputs: list[Callable[[], torch.Tensor]]
    keys: list[str]
    n: int
    mirror: bool
    view_owner: np.ndarray  # image index of each view row

    @property
    def fixed(self) -> int:
        """Rows that do not depend on augmentation settings (clean and mirror)."""
        return self.n * (2 if self.mirror else 1)

    def image_of(self, row: int) -> int:
        """The image a row was made from."""
        if row < self.fixed:
            return row % self.n
        return int(self.view_owner[row - self.fixed])

    def rows(self, values: np.ndarray) -> FeatureSet:
        """Split per-row values (features, activations) back into clean / mirror / views."""
        n, fixed = self.n, self.fixed
        return FeatureSet(values[:n], values[n:fixed] if self.mirror else None, values[fixed:], self.view_owner)


def plan_views(data: LabelledImages, prep: Preprocessing, cfg: TrainConfig, *, mirror: bool, views: int) -> ViewPlan:
    pixels = data.pixels
    n = len(pixels)
    inputs: list[Callable[[], torch.Tensor]] = [partial(_eval_view, prep, pixels, i, False) for i in range(n)]
    keys = list(data.sha256)
    if mirror:  # the mirror image is a second deterministic view, with its own key
        inputs += [partial(_eval_view, prep, pixels, i, True) for i in range(n)]
        keys += [f"{h}:mirror" for h in data.sha256]
    if views:
        train_tf = build_train_transform(cfg.augment, prep)
        for i in data.split.train:
            content = int(data.sha256[i][:15], 16)  # seeds follow the image, not its position in a split
            for k in range(views):
                inputs.append(partial(_view, train_tf, pixels, int(i), view_seed(cfg.seed, content, k)))
                keys.append(f"{data.sha256[i]}:v{k}")
    owner = np.repeat(data.split.train, views) if views else np.zeros(0, dtype=np.int64)
    return ViewPlan(inputs, keys, n, mirror, owner)


def _eval_view(prep: Preprocessing, pixels: Pixels, i: int, flip: bool) -> torch.Tensor:
    """Image i as the eval transform frames it, mirrored if asked: a crop of the decoded pixels.

    Pixels decoded at the working size need no resampling (a slice, then the float scaling), so the
    clean and mirror inputs cost almost nothing to make beside the network; smaller pixels are enlarged
    by the eval transform itself (`eval_crop`). The image is looked up when the input is made, not
    when it is planned: planning stays free, and images whose features are cached are never decoded.
    """
    crop = eval_crop(pixels[i], prep)
    x = to_model_input(crop[:, ::-1] if flip else crop)
    return torch.from_numpy(x)


def _view(transform: Callable[[np.ndarray], torch.Tensor], pixels: Pixels, i: int, seed: int) -> torch.Tensor:
    """One augmented view of image i, seeded (see `_eval_view` on when the image is looked up)."""
    return augmented_view(pixels[i], transform, seed=seed)
