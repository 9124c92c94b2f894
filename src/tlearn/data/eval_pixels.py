"""The eval transform done while decoding: an image file straight to the pixels of its center crop.

The eval transform (`augment.build_eval_transform`) takes pixels decoded at the working size (shorter
side `resize_short_side`) and center-crops them to the input size. Prediction decodes a file the way
training does (`images.resize_pixels` to `images.working_size`, the same filter in the same code) and crops it with a
slice, without torchvision's per-image transforms, whose Python holds the GIL and fights the network
for the cores: training and prediction see the same pixels, to the grey level. JPEGs are decoded at a
reduced DCT scale where that still leaves the shorter side at or above the working size (see
`images.open_image`), never below it. Images smaller than the working size are enlarged by the eval
transform itself, as in training, so that upscaling has one implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import build_eval_transform
from tlearn.data.images import MAX_PIXELS, open_image, resize_pixels, working_size


def eval_pixels(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """uint8 (h, w, 3): the eval transform's pixels of an upright RGB image (decoded at any scale that is
    at least the working size): shrunk to the working size as training's decoding shrinks it, then the
    center crop, placed as torchvision's CenterCrop places it."""
    if min(img.size) < prep.resize_short_side:  # smaller than the working size: the eval transform enlarges
        return _enlarged(np.array(img, dtype=np.uint8), prep)  # it, as in training (torchvision wants it writable)
    return eval_crop(np.asarray(img), prep)  # a read-only view: shrunk as training's decoding shrinks, or sliced


def eval_crop(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """`eval_pixels` of uint8 (H, W, 3) pixels already decoded (training's, at the working size: then only
    the crop's slice is copied, without a round trip through Pillow)."""
    h, w = pixels.shape[:2]
    if min(h, w) < prep.resize_short_side:
        return _enlarged(pixels, prep)
    size = working_size((w, h), prep.resize_short_side)
    if size != (w, h):
        pixels = resize_pixels(pixels, size, prep.resample)
    return _center_crop(pixels, prep)


def _enlarged(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    x = build_eval_transform(prep)(pixels)
    return np.ascontiguousarray(np.rint(x.numpy().transpose(1, 2, 0) * 255.0), dtype=np.uint8)  # exact: k / 255


def _center_crop(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    h, w = prep.input_size
    top, left = round((pixels.shape[0] - h) / 2.0), round((pixels.shape[1] - w) / 2.0)
    return np.ascontiguousarray(pixels[top : top + h, left : left + w])


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
