"""The report's heatmaps: for the tiles it shows (the most confident mistakes, a few right answers per class)
and nothing else, the bundle's Grad-CAM of the predicted class over the image as the model saw it.

Each image is decoded as training decoded it and framed by the bundle's eval transform; the map comes
from `models.explain`, the one place heatmaps are computed. A run whose network or images cannot be
read gets no heatmaps, and the report says why instead.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlearn.artifacts.predictions import PredictionRow
from tlearn.core.errors import ImageError, TlearnError
from tlearn.report.run_data import Run

log = logging.getLogger(__name__)

CORRECT_PER_CLASS = 2  # right answers shown per class, beside the mistakes
CORRECT_CLASSES = 12  # classes shown at most: 24 tiles, a few seconds of Grad-CAM on a CPU


@dataclass(frozen=True)
class Tiles:
    """Overlays (uint8 (H, W, 3)) by prediction path; `missing` says why there are none, when there are none."""

    overlays: dict[str, np.ndarray] = field(default_factory=dict)
    missing: str = ""


def correct_sample(run: Run) -> list[PredictionRow]:
    """A few right answers of each class on the headline part (test, else validation), spread over the
    class's images in path order, so a reader sees whether the model looks at the object."""
    part = run.headline
    by_class: dict[str, list[PredictionRow]] = defaultdict(list)
    for p in sorted(run.predictions, key=lambda p: p.path):
        if p.split == part and not p.wrong:
            by_class[p.true].append(p)
    shown: list[PredictionRow] = []
    for cls in [c for c in run.config.classes if by_class.get(c)][:CORRECT_CLASSES]:
        rows = by_class[cls]
        step = max(1, len(rows) // CORRECT_PER_CLASS)
        shown += rows[::step][:CORRECT_PER_CLASS]
    return shown


def heatmap_tiles(run: Run, rows: Sequence[PredictionRow]) -> Tiles:
    """The overlay of each row's image for its predicted class (rows whose image cannot be read are left out)."""
    if not rows:
        return Tiles()
    if run.data is None:
        return Tiles(missing="the run does not record where its images are")
    try:
        from tlearn.artifacts.bundle import load_bundle

        classifier, config = load_bundle(run.folder)
    except TlearnError as err:
        return Tiles(missing=f"the bundle's network cannot be loaded ({err.message})")
    from tlearn.data.augment import build_eval_transform
    from tlearn.data.images import decode_image
    from tlearn.models.explain import class_activation_maps, overlay

    prep = config.preprocessing
    transform = build_eval_transform(prep)
    base = run.data if run.data.is_dir() else run.data.parent
    paths, inputs, targets = [], [], []
    for row in rows:
        path = Path(row.path) if Path(row.path).is_absolute() else base / row.path
        try:
            pixels = decode_image(path, short_side=prep.working_short_side, resample=prep.resample).pixels
        except ImageError:
            continue
        if row.predicted not in config.classes:
            continue
        paths.append(row.path)
        inputs.append(transform(pixels).numpy())
        targets.append(config.classes.index(row.predicted))
    if not inputs:
        return Tiles(missing="the images are no longer where the run found them")
    x = np.stack(inputs)
    try:
        maps = class_activation_maps(classifier, x, targets=targets).maps
    except TlearnError as err:
        return Tiles(missing=err.message)
    return Tiles({p: overlay(x[i], maps[i]) for i, p in enumerate(paths)})
