"""Decoding: every kind of file a user has ends up upright 8-bit RGB, or as a clear reason."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, solid
from tlearn.core.errors import EmptyFile, ImageError, ImageTooLarge, NotAnImage, TruncatedImage, UnreadableFile
from tlearn.data.images import decode_image, open_image, shrink_to_short_side, upright_rgb


def test_cmyk_jpeg_becomes_rgb_with_its_colours() -> None:
    cmyk = solid((255, 0, 0)).convert("CMYK")
    img = open_image(jpeg_bytes(cmyk, quality=95))
    assert img.mode == "RGB"
    r, g, b = img.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_grey_png_is_scaled_to_8_bits() -> None:
    arr = np.full((10, 12), 65535 // 2, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    img = open_image(buf.getvalue())
    assert img.mode == "RGB"
    assert abs(img.getpixel((0, 0))[0] - 128) <= 1


def test_transparent_png_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 5, 10))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    img = open_image(buf.getvalue())
    assert img.getpixel((8, 5)) == (255, 255, 255)
    assert img.getpixel((2, 5)) == (0, 0, 255)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    upright = open_image(buf.getvalue())
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 3))[0] > 200  # the band is now at the top
    assert upright.getpixel((10, 36))[0] < 50


def test_turning_a_callers_image_upright_leaves_it_as_it_was() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    theirs = Image.open(io.BytesIO(buf.getvalue()))
    assert upright_rgb(theirs).size == (20, 40)
    assert theirs.size == (40, 20) and theirs.getexif()[0x0112] == 6  # the Python API's caller still has theirs


def test_gif_gives_its_first_frame() -> None:
    frames = [solid((255, 0, 0)).convert("P"), solid((0, 255, 0)).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r, g, _ = open_image(buf.getvalue()).getpixel((1, 1))
    assert r > 200 and g < 50


@pytest.mark.parametrize(
    ("content", "kind", "reason"),
    [
        (b"", EmptyFile, r"^file is empty \(0 bytes\)"),
        (b"hello, I am text", NotAnImage, r"^not an image \(Pillow cannot identify its format\)"),
        (jpeg_bytes(solid((9, 9, 9), (300, 300)))[:400], TruncatedImage, r"^truncated or corrupt \("),
    ],
)
def test_broken_files_raise_a_short_reason_and_say_why_by_type(
    content: bytes, kind: type[ImageError], reason: str
) -> None:
    with pytest.raises(kind, match=reason) as err:
        open_image(content)
    assert isinstance(err.value, ImageError)  # callers that catch any unreadable image still do


def test_missing_file_or_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile, match=r"^file not found$"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(UnreadableFile, match=r"^is a folder, not an image file$"):
        open_image(tmp_path)


def test_decompression_bomb_is_refused() -> None:
    big = jpeg_bytes(solid((0, 0, 0), (400, 300)))
    with pytest.raises(ImageTooLarge, match=r"^image is 400 x 300 = 0 megapixels, .*decompression bombs"):
        open_image(big, max_pixels=100_000)


def test_pillows_own_bomb_guard_is_the_same_kind_of_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # Pillow's limit below ours: it fires first
    with pytest.raises(ImageTooLarge, match=r"^refused as a possible decompression bomb"):
        open_image(jpeg_bytes(solid((0, 0, 0), (400, 300))), max_pixels=1_000_000)


def test_decode_shrinks_to_short_side_and_never_enlarges() -> None:
    big = decode_image(jpeg_bytes(solid((10, 200, 10), (400, 300))), short_side=60)
    assert big.pixels.shape == (60, 80, 3)
    assert big.size == (400, 300)
    small = decode_image(jpeg_bytes(solid((10, 200, 10), (40, 30))), short_side=60)
    assert small.pixels.shape == (30, 40, 3)


def test_shrinking_a_photo_says_nothing_on_stderr(tmp_path: Path) -> None:
    """The resize reads Pillow's bytes in place, read-only; torch warns (once a process, on stderr) about a
    read-only array it is given through NumPy: a fresh process with warnings as errors shows none."""
    photo = tmp_path / "photo.jpg"
    photo_like((640, 480)).save(photo, quality=90)
    code = (
        "import sys; from tlearn.data.images import decode_image; "
        "d = decode_image(sys.argv[1], short_side=256); print(d.pixels.shape)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(photo)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(256, 341, 3)" and out.stderr == ""


def test_shrink_keeps_aspect_for_portrait_images() -> None:
    out = shrink_to_short_side(Image.new("RGB", (300, 900)), 100)
    assert out.shape == (300, 100, 3)


def photo_like(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth gradients with sharp-edged blobs and fine noise: what a resize filter can get wrong."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    for _ in range(12):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(5, max(6, min(w, h) // 4))
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


SHAPES = [((635, 499), 256), ((1600, 1200), 329), ((301, 977), 224)]


@pytest.mark.parametrize("resample", [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC])
@pytest.mark.parametrize(("size", "short_side"), SHAPES)
def test_shrinking_is_pillows_filter_to_one_grey_level(
    resample: Image.Resampling, size: tuple[int, int], short_side: int
) -> None:
    """The decode path's resize (torch's SIMD kernel for bilinear and bicubic) is Pillow's filter, pass by
    pass: the pixels the pretrained network's own preprocessing gives, to the rounding between passes."""
    img = photo_like(size)
    ours = shrink_to_short_side(img, short_side, resample=resample)
    w, h = size
    new = (short_side, round(h * short_side / w)) if w <= h else (round(w * short_side / h), short_side)
    assert ours.shape == (new[1], new[0], 3) and ours.dtype == np.uint8 and ours.flags.writeable
    assert ours.flags.c_contiguous
    by_pass = img.resize((new[0], h), resample=resample).resize(new, resample=resample)  # horizontal, vertical
    diff = np.abs(ours.astype(np.int16) - np.asarray(by_pass, dtype=np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.02
    # Pillow's one call may run the vertical pass first (its own choice, by shape): then the passes round
    # in the other order, a quarter of a grey level on average at most (measured 0.26).
    one_call = np.asarray(img.resize(new, resample=resample), dtype=np.int16)
    assert np.abs(ours.astype(np.int16) - one_call).mean() < 0.3


@pytest.mark.parametrize(("size", "short_side"), SHAPES)
def test_other_filters_shrink_with_pillow_itself(size: tuple[int, int], short_side: int) -> None:
    img = photo_like(size)
    ours = shrink_to_short_side(img, short_side, resample=Image.Resampling.LANCZOS)
    new = (ours.shape[1], ours.shape[0])
    np.testing.assert_array_equal(ours, np.asarray(img.resize(new, resample=Image.Resampling.LANCZOS)))
