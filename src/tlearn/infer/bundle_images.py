"""The images of a bundle's own dataset, by part of its split, as model inputs: what an export is
checked on, calibrated on and scored on.

split.json lists paths relative to the dataset; their labels come from listing the dataset again
(`config.data`), so this works only where that dataset still is. Where it is not, the reason is
returned instead, for the export to report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlearn.artifacts.bundle import SPLIT_FILE, BundleConfig
from tlearn.core.errors import DataError
from tlearn.core.files import read_json
from tlearn.infer.predictor import BasePredictor

PARTS = ("train", "val", "test")

Labelled = tuple[list[Path], np.ndarray]  # image paths and their (N,) int64 class indices
Splits = dict[str, Labelled] | str  # by part; or why the images are not available


def labelled_splits(folder: Path, config: BundleConfig) -> Splits:
    """The images of each part ("train", "val", "test") of a bundle's split with their class indices,
    or why they are not available."""
    from tlearn.data.sources import load_dataset

    split_file = folder / SPLIT_FILE
    if not split_file.is_file():
        return f"the bundle has no {SPLIT_FILE}"
    if not config.data or not Path(config.data).exists():
        return f"its dataset {config.data or '(not recorded)'} is not there"
    try:
        dataset = load_dataset(config.data)
        doc = read_json(split_file)
    except (DataError, OSError, ValueError) as err:
        return f"its dataset cannot be read ({err})"
    base = dataset.root if dataset.root.is_dir() else dataset.root.parent
    label_of = {
        (s.path.relative_to(base).as_posix() if s.path.is_relative_to(base) else str(s.path)): s.label
        for s in dataset.samples
    }
    index = {c: i for i, c in enumerate(config.classes)}
    out: dict[str, Labelled] = {}
    for part in PARTS:
        pairs = [(base / rel, index[label_of[rel]]) for rel in doc.get(part, []) if label_of.get(rel) in index]
        out[part] = ([p for p, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64))
    return out


def part_paths(splits: Splits, part: str) -> list[Path]:
    """The image paths of one part; none when the images are not available."""
    return [] if isinstance(splits, str) else splits[part][0]


def model_inputs(predictor: BasePredictor, images: Sequence[Any]) -> np.ndarray:
    """Stacked model inputs (N, 3, H, W) float32 of the images that can be read (the others are left out)."""
    h, w = predictor.preprocessing.input_size
    batches = [x for _, x, _ in predictor.input_batches(images, batch_size=32)]
    return np.concatenate(batches) if batches else np.zeros((0, 3, h, w), np.float32)


def spread(paths: Sequence[Path], n: int) -> list[Path]:
    """At most `n` of `paths`, evenly spaced from the first to the last."""
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(n, len(paths)))] if paths else []


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Model inputs in [0, 1] as the uint8 pixels a model with input_type "uint8" takes (exact: the eval
    transform gives multiples of 1/255)."""
    return np.rint(x * 255).astype(np.uint8)
