"""How many images one forward pass of the server takes: the size the engine runs fastest per image, measured.

    chosen = measure_pass_size(predictor.answer_of_inputs, example)   # at startup, about a second
    chosen.size, chosen.images_per_second                             # e.g. 2, {1: 44.1, 2: 51.8, 4: 29.0, 8: 21.4}

Bigger passes are not always cheaper per image. Measured on a 2-core AMD EPYC with the demo bundle (MobileNetV2,
288 px with the mirror image, pre-decoded inputs), the PyTorch engine does 44 images/s one at a time, 52 two at a
time, then 29, 22, 20 and 18 at 4, 8, 16 and 32 (most likely the activations of a larger pass spill out of the
caches: eager PyTorch runs each layer over the whole pass before the next); ONNX Runtime runs the same network at
81 images/s one at a time and 61 at 32 in one call. Which size is best depends on the engine, the network, the
input size and the machine, so the server measures it when it starts, on copies of one input of the model's
size, and gathers concurrent requests into passes of that size: the requests of a pass are answered as soon as
it is done, not after 32 images.

Each size is timed after one warm-up pass (the first pass of a shape allocates its buffers), in BURSTS bursts
of at least one pass and MIN_SECONDS / BURSTS each, of which the faster counts (other programs only ever slow
a pass down). Sizes grow until one is clearly slower per image (below SLOWER of the best so far), or two sizes
in a row gain less than GAIN over it. The smallest size within NEAR of the best rate is chosen: as fast, and
the requests in its passes wait less.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlearn.core.errors import ConfigError
from tlearn.core.words import count
from tlearn.infer.predictor import BasePredictor

log = logging.getLogger(__name__)

PASS_SIZES = (1, 2, 4, 8, 16, 32)  # 32: the most images the server ever puts in one pass
MIN_SECONDS = 0.1
BURSTS = 2  # each size is timed twice, the faster counts: other programs on the machine only ever slow a pass
SLOWER = 0.8  # a size this much slower per image than the best: larger ones will not do better
GAIN = 1.05  # what a larger size must gain over the best so far to be worth trying the next
NEAR = 0.95  # a rate within this share of the best counts as the best (noise on a shared machine)


@dataclass(frozen=True)
class PassSize:
    """The images per forward pass the server uses, and the images per second measured at each size tried
    (empty when the size was given, not measured)."""

    size: int
    images_per_second: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.size,
            "measured_images_per_second": {str(k): round(v, 1) for k, v in self.images_per_second.items()},
        }


def measure_pass_size(
    forward: Callable[[np.ndarray], object],
    example: np.ndarray,
    *,
    sizes: Sequence[int] = PASS_SIZES,
    min_seconds: float = MIN_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> PassSize:
    """The pass size at which `forward` answers the most images per second (see the module docstring).

    `example` is one (3, H, W) model input; each size is timed on copies of it.
    """
    rates: dict[int, float] = {}
    flat = 0  # sizes in a row that gained less than GAIN over the best before them
    for size in sizes:
        x = np.ascontiguousarray(np.repeat(example[None], size, axis=0))
        forward(x)
        rate = max(_rate(forward, x, min_seconds / BURSTS, clock) for _ in range(BURSTS))
        best_before = max(rates.values(), default=0.0)
        rates[size] = rate
        if best_before and rate < SLOWER * best_before:
            break
        flat = flat + 1 if best_before and rate < GAIN * best_before else 0
        if flat == 2:
            break
    best = max(rates.values())
    return PassSize(min(s for s, r in rates.items() if r >= NEAR * best), rates)


def _rate(forward: Callable[[np.ndarray], object], x: np.ndarray, seconds: float, clock: Callable[[], float]) -> float:
    """Images per second of passes of `x`, over at least one pass and `seconds`."""
    n, start = 0, clock()
    while n < 1 or clock() - start < seconds:
        forward(x)
        n += 1
    return n * len(x) / max(clock() - start, 1e-9)


def example_input(input_size: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """A float32 (3, H, W) model input in [0, 1] of the model's size, made of noise: what the passes are timed on
    (a constant image could take shortcuts a photo does not)."""
    h, w = input_size
    pixels = np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)
    return pixels.astype(np.float32) / 255


def chosen_pass_size(predictor: BasePredictor, given: int | None) -> PassSize:
    """`given` images per pass (--pass-size), checked; or, when None, the size measured for `predictor`."""
    if given is None:
        chosen = measure_pass_size(predictor.answer_of_inputs, example_input(predictor.preprocessing.input_size))
        rates = ", ".join(f"{k}: {v:.0f}" for k, v in chosen.images_per_second.items())
        log.info("Forward passes of %s: images/s measured by pass size %s", count(chosen.size, "image"), rates)
        return chosen
    if not 1 <= given <= max(PASS_SIZES):
        raise ConfigError(f"--pass-size must be between 1 and {max(PASS_SIZES)} images. Got {given}.")
    return PassSize(given, {})
