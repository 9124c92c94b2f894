"""Decoding straight to the eval crop: the pixels of decode + resize + center crop, at a fraction of the cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import add_broken_files, jpeg_bytes
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import build_eval_transform
from tlearn.data.eval_pixels import decode_eval_pixels, eval_crop, eval_pixels, to_model_input
from tlearn.data.images import decode_image, open_image


def photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth colour fields with hard edges, a little noise: close enough to a photo for resampling."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(base, dtype=np.int16).copy()
    arr[h // 3 : h // 2, w // 4 : w // 2] = (250, 20, 30)  # a sharp block
    arr += rng.integers(-6, 7, arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def prep(size: int | tuple[int, int] = 224) -> Preprocessing:
    hw = (size, size) if isinstance(size, int) else size
    return Preprocessing(input_size=hw, mean=(0.5,) * 3, std=(0.5,) * 3)


def two_step(data: bytes, p: Preprocessing) -> np.ndarray:
    """What training evaluates on: decode at the working size, then the eval transform (as uint8 HWC)."""
    pixels = decode_image(data, short_side=p.working_short_side, resample=p.resample).pixels
    x = build_eval_transform(p)(pixels).numpy()
    return np.rint(x.transpose(1, 2, 0) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("size", "input_size"),
    [((666, 500), 288), ((500, 666), 224), ((900, 600), (224, 160)), ((256, 256), 224), ((257, 300), 224)],
)
def test_prediction_decodes_to_the_pixels_that_training_evaluates_on(
    size: tuple[int, int], input_size: int | tuple[int, int]
) -> None:
    p = prep(input_size)
    data = jpeg_bytes(photo(size), quality=92)
    got = decode_eval_pixels(data, p)
    assert got.shape == (*p.input_size, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, two_step(data, p))


@pytest.mark.parametrize("size", [(666, 500), (256, 300), (300, 256), (200, 150), (255, 400)])
def test_training_crops_its_decoded_pixels_to_the_pixels_prediction_decodes_to(size: tuple[int, int]) -> None:
    """Training's clean and mirror inputs are eval crops of the pixels it decoded (at the working size, or
    smaller): the same pixels as prediction's for the same file, whatever the image's size."""
    p = prep(224)
    data = jpeg_bytes(photo(size), quality=92)
    decoded = decode_image(data, short_side=p.working_short_side, resample=p.resample).pixels
    got = eval_crop(decoded, p)
    assert got.shape == (*p.input_size, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, decode_eval_pixels(data, p))
    np.testing.assert_array_equal(eval_crop(np.array(photo(size)), p), eval_pixels(photo(size), p))  # not shrunk


def test_an_image_at_the_working_size_is_cropped_without_resampling() -> None:
    p = prep(224)
    data = jpeg_bytes(photo((256, 300)), quality=95)
    np.testing.assert_array_equal(decode_eval_pixels(data, p), two_step(data, p))


def test_an_image_smaller_than_the_working_size_is_enlarged_as_the_eval_transform_does() -> None:
    p = prep(224)
    for size in ((200, 150), (224, 224), (255, 400)):
        data = jpeg_bytes(photo(size), quality=95)
        np.testing.assert_array_equal(decode_eval_pixels(data, p), two_step(data, p))


def test_a_large_jpeg_is_decoded_at_reduced_scale_close_to_a_full_decode() -> None:
    p = prep(224)  # working size 256: a 1400 x 1100 JPEG can be decoded at 1/4 (350 x 275)
    data = jpeg_bytes(photo((1400, 1100), seed=3), quality=92)
    assert open_image(data, at_least=p.working_short_side).size == (350, 275)
    full = eval_pixels(open_image(data), p)  # every pixel decoded, then resized
    diff = np.abs(decode_eval_pixels(data, p).astype(int) - full.astype(int))
    assert diff.any()  # decoded at the reduced scale, not in full
    assert diff.mean() < 1.5, diff.mean()  # measured: 0.6 grey levels here
    assert np.percentile(diff, 99) <= 6, np.percentile(diff, 99)  # measured: 3


@pytest.mark.parametrize(
    ("size", "at_least", "decoded"),
    [((511, 700), 256, (511, 700)), ((512, 512), 256, (256, 256)), ((2100, 800), 200, (525, 200))],
)
def test_reduced_scale_decoding_never_goes_below_the_working_size(
    size: tuple[int, int], at_least: int, decoded: tuple[int, int]
) -> None:
    got = open_image(jpeg_bytes(photo(size), quality=90), at_least=at_least).size
    assert got == decoded and min(got) >= at_least


def test_pngs_are_decoded_in_full() -> None:
    import io

    buf = io.BytesIO()
    photo((1200, 1000)).save(buf, "PNG")
    assert open_image(buf.getvalue(), at_least=256).size == (1200, 1000)


def test_model_input_is_the_eval_transforms_float_scaling_exactly() -> None:
    pixels = (np.arange(2 * 7 * 7 * 3) * 7 % 256).astype(np.uint8).reshape(2, 7, 7, 3)
    same_size = Preprocessing(input_size=(7, 7), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)  # no resize
    want = np.stack([build_eval_transform(same_size)(p).numpy() for p in pixels])
    got = to_model_input(pixels)
    assert got.shape == (2, 3, 7, 7) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_broken_files_still_raise_their_one_line_reason(shapes: Path) -> None:
    from tlearn.core.errors import ImageError

    for name, reason in add_broken_files(shapes, "red_circle").items():
        with pytest.raises(ImageError) as info:
            decode_eval_pixels(shapes / "red_circle" / name, prep(64))
        assert reason in info.value.message and "\n" not in info.value.message
