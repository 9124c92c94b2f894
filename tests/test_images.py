"""Decoding: every kind of file a user has ends up upright 8-bit RGB, or as a clear reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, solid
from tlearn.core.errors import EmptyFile, ImageError, ImageTooLarge, NotAnImage, TruncatedImage, UnreadableFile
from tlearn.data.images import decode_image, open_image, shrink_to_short_side


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


def test_shrink_keeps_aspect_for_portrait_images() -> None:
    out = shrink_to_short_side(Image.new("RGB", (300, 900)), 100)
    assert out.size == (100, 300)
