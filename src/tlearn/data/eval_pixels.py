"""The eval transform done while decoding: an image file straight to the pixels of its center crop.

The eval transform (`augment.build_eval_transform`) takes pixels decoded at the working size (shorter
side `resize_short_side`) and center-crops them to the input size. Prediction needs only the crop, so
here the crop's box is mapped back onto the decoded image and resized to the input size in one Pillow
call: the same filter over the same source pixels, without resizing the margins that the crop throws
away (a third of the work at 288 px) and without torch, whose per-image tensor operations hold the
GIL and fight the network for the cores. JPEGs are decoded at a reduced DCT scale where that still
leaves the shorter side at or above the working size (see `images.open_image`), never below it.

Measured on flowers17 (500 x 666 JPEGs): every pixel within 1 grey level of the two-step path
(mean 0.01 levels at 288 px), 5 times faster on a loaded 2-core machine (tests/test_eval_pixels.py
pins the bound). Images smaller than the working size are enlarged by the eval transform itself,
as in training, so that upscaling has one implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import build_eval_transform
from tlearn.data.images import MAX_PIXELS, open_image

CropBox = tuple[float, float, float, float]


def working_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(W, H) of an image of `size` (W, H) once shrunk to `short_side`, as `shrink_to_short_side` rounds it."""
    w, h = size
    if min(w, h) <= short_side:
        return size
    scale = short_side / min(w, h)
    if w <= h:
        return short_side, max(short_side, round(h * scale))
    return max(short_side, round(w * scale)), short_side


def crop_box(size: tuple[int, int], prep: Preprocessing) -> CropBox | None:
    """The eval crop of an image of `size` (W, H), in that image's own pixel coordinates.

    None when the image is smaller than the working size: the eval transform enlarges those. The
    crop is placed as torchvision's CenterCrop places it on the image shrunk to the working size
    (offsets rounded the same way), then scaled back to `size`.
    """
    side = prep.resize_short_side
    if min(size) < side:
        return None
    wr, hr = working_size(size, side)
    h, w = prep.input_size
    top, left = round((hr - h) / 2.0), round((wr - w) / 2.0)
    sx, sy = size[0] / wr, size[1] / hr
    return (left * sx, top * sy, (left + w) * sx, (top + h) * sy)


def eval_pixels(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """uint8 (h, w, 3): the eval transform's pixels of an upright RGB image (decoded at any scale that is
    at least the working size)."""
    box = crop_box(img.size, prep)
    if box is None:  # smaller than the working size: the eval transform enlarges it, as in training
        x = build_eval_transform(prep)(np.array(img, dtype=np.uint8))
        return np.rint(x.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)  # exact: multiples of 1/255
    h, w = prep.input_size
    if working_size(img.size, prep.resize_short_side) == img.size:  # already at the working size: a plain crop
        left, top = int(box[0]), int(box[1])
        return np.array(img.crop((left, top, left + w, top + h)), dtype=np.uint8)
    return np.array(img.resize((w, h), resample=prep.resample, box=box), dtype=np.uint8)


def decode_eval_pixels(
    source: Path | bytes | BinaryIO, prep: Preprocessing, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """An image file (or its bytes) -> uint8 (h, w, 3) RGB, the eval transform's pixels. Raises ImageError."""
    return eval_pixels(open_image(source, max_pixels=max_pixels, at_least=prep.working_short_side), prep)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1], scaled as the eval transform's ToDtype does."""
    x = np.ascontiguousarray(np.moveaxis(pixels, -1, -3), dtype=np.float32)
    x *= np.float32(1.0 / 255.0)
    return x
