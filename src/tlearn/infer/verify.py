"""An export checks itself before it is written: the exported model must give PyTorch's probabilities.

It is run on random model inputs and on real-looking images: up to REAL_SAMPLES images of the
bundle's dataset (validation, else test, else training images), or synthetic photos when the
dataset is not there. The largest difference must stay within TOLERANCE, or nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlearn.core.errors import TlearnError
from tlearn.infer.bundle_images import Splits, model_inputs, part_paths, spread, to_uint8
from tlearn.infer.predictor import BasePredictor

TOLERANCE = 1e-3  # largest |exported - PyTorch| probability accepted; float32 graphs differ by ~1e-6
RANDOM_SAMPLES, REAL_SAMPLES = 4, 8

RunModel = Callable[[np.ndarray], np.ndarray]  # model inputs (N, 3, H, W) -> (N, K) probabilities


@dataclass(frozen=True)
class Check:
    """Largest |exported - PyTorch| probability on random inputs and on real-looking images."""

    random_diff: float
    random_n: int
    real_diff: float
    real_n: int
    real_source: str  # which images: "validation images of the dataset", "synthetic images"...

    @property
    def max_diff(self) -> float:
        return max(self.random_diff, self.real_diff)


@dataclass(frozen=True)
class Samples:
    """What an export is checked on: model inputs in the exported model's input type."""

    random: np.ndarray  # (RANDOM_SAMPLES, 3, H, W)
    real: np.ndarray  # (n, 3, H, W), n <= REAL_SAMPLES
    real_source: str


def check_export(run: RunModel, reference: nn.Module, samples: Samples) -> Check:
    """Compare `run` (the exported model) with `reference` (the module that was exported). Raises
    TlearnError when they differ by more than TOLERANCE."""

    def diff(x: np.ndarray) -> float:
        with torch.inference_mode():
            ref = reference(torch.from_numpy(x)).numpy()
        return float(np.abs(np.asarray(run(x)) - ref).max()) if len(x) else 0.0

    check = Check(diff(samples.random), len(samples.random), diff(samples.real), len(samples.real), samples.real_source)
    if not check.max_diff <= TOLERANCE:  # also catches NaN
        raise TlearnError(
            f"The exported model does not compute what the bundle computes: probabilities differ by up to "
            f"{check.max_diff:.2g} (tolerance {TOLERANCE:g}). Nothing was written.",
            hint="This is a bug worth reporting; meanwhile try another --opset or --format torchscript.",
        )
    return check


def check_samples(predictor: BasePredictor, splits: Splits, input_type: str) -> Samples:
    """Random model inputs and up to REAL_SAMPLES eval-transformed images of the bundle's dataset
    (validation, else test, else training images), or synthetic photos when the dataset is not there."""
    h, w = predictor.preprocessing.input_size
    rng = np.random.default_rng(0)
    random_x = rng.random((RANDOM_SAMPLES, 3, h, w), dtype=np.float32)
    real_x, source = np.zeros((0, 3, h, w), np.float32), ""
    for part, words in (("val", "validation"), ("test", "test"), ("train", "training")):
        paths = part_paths(splits, part)
        if not paths:
            continue
        real_x = model_inputs(predictor, spread(paths, REAL_SAMPLES))
        if len(real_x):
            source = f"{words} images of the dataset"
            break
    if not len(real_x):
        from tlearn.data.synthetic import CLASSES, draw_sample

        images = [draw_sample(CLASSES[i % len(CLASSES)], (96 + 8 * i, 128), rng) for i in range(REAL_SAMPLES)]
        real_x, source = model_inputs(predictor, images), "synthetic photos (the dataset is not there)"
    if input_type == "uint8":
        return Samples(to_uint8(random_x), to_uint8(real_x), source)
    return Samples(random_x, real_x, source)
