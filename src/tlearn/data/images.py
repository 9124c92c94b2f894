"""Decode image files into RGB pixels, once, the same way everywhere.

Every image that tlearn reads (for checks, training, prediction and serving) goes through
`open_image`: EXIF orientation applied, any mode converted to 8-bit RGB (transparency composited on
white), decompression bombs refused. A file that cannot be used raises an `ImageError` with a short
reason, so callers can list it and carry on with the others; its type says why (`EmptyFile`,
`NotAnImage`, `TruncatedImage`, `ImageTooLarge`, `UnreadableFile`) without reading the message. No
other exception escapes, whatever the bytes (tests/test_properties.py tries).
"""

from __future__ import annotations

import io
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from tlearn.core.errors import EmptyFile, ImageError, ImageTooLarge, NotAnImage, TruncatedImage, UnreadableFile

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Pillow's own guard warns at 89 MP and fails at twice that; we refuse at one clear limit instead.
# 100 MP is a 12000 x 8000 photo: larger than any camera image, smaller than a bomb.
MAX_PIXELS = 100_000_000

# Our limit is checked before decoding; Pillow's is lifted above it so that it does not fire first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2

# Files are read whole before decoding, by several threads at once. A camera's largest JPEG is 20 to
# 40 MB and an uncompressed 8-bit RGB TIFF of 66 MP is 200 MB; a larger file named .jpg is a video, a
# disk image or a backup, and reading it first would only fill the memory to say "not an image".
MAX_FILE_BYTES = 200_000_000


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class DecodedImage:
    """Pixels of one image: `pixels` is uint8 (H, W, 3) RGB; `size` (W, H) and `mode` are the file's own."""

    pixels: np.ndarray
    size: tuple[int, int]
    mode: str


def open_image(
    source: Path | bytes | BinaryIO, *, max_pixels: int = MAX_PIXELS, at_least: int | None = None
) -> Image.Image:
    """Open an image decoded, upright and in 8-bit RGB. Raises ImageError.

    With `at_least`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
    sides at or above `at_least` pixels (never below: nothing downstream enlarges what this shrank);
    other formats, and JPEGs not twice that size, are decoded in full.
    """
    img, _ = _open(source, max_pixels=max_pixels, short_side=at_least)
    return img


def decode_image(
    source: Path | bytes | BinaryIO,
    *,
    short_side: int | None = None,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
    max_pixels: int = MAX_PIXELS,
) -> DecodedImage:
    """Decode to uint8 RGB pixels, shrunk (never enlarged) so the shorter side is `short_side`.

    Shrinking at decode time is what makes decoding once affordable: a 12 MP photo held at 256 px
    takes 200 KB instead of 36 MB, and JPEGs are decoded at a reduced DCT scale, several times faster.
    """
    img, (size, mode) = _open(source, max_pixels=max_pixels, short_side=short_side)
    if short_side is None:
        return DecodedImage(pixels=np.array(img, dtype=np.uint8), size=size, mode=mode)
    return DecodedImage(pixels=shrink_to_short_side(img, short_side, resample=resample), size=size, mode=mode)


def shrink_to_short_side(
    img: Image.Image, short_side: int, *, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> np.ndarray:
    """uint8 (H, W, 3) pixels of an RGB image, shrunk (never enlarged) so the shorter side is `short_side`."""
    if working_size(img.size, short_side) == img.size:
        return np.array(img, dtype=np.uint8)
    # A read-only array over Pillow's bytes, not a second copy of them (0.3 to 0.6 ms a photo): the resize
    # reads it and writes pixels of its own.
    return shrink_pixels(np.asarray(img), short_side, resample=resample)


def shrink_pixels(
    pixels: np.ndarray, short_side: int, *, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> np.ndarray:
    """uint8 (H, W, 3) pixels shrunk (never enlarged) so the shorter side is `short_side`; `pixels` itself
    where they are that small already. The same pixels as `shrink_to_short_side`, without Pillow."""
    size = (pixels.shape[1], pixels.shape[0])
    new = working_size(size, short_side)
    return pixels if new == size else resize_pixels(pixels, new, resample)


def working_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(W, H) of an image of `size` (W, H) once shrunk (never enlarged) so the shorter side is `short_side`."""
    w, h = size
    if min(w, h) <= short_side:
        return size
    scale = short_side / min(w, h)
    if w <= h:
        return short_side, max(short_side, round(h * scale))
    return max(short_side, round(w * scale)), short_side


# Pillow's filters run on one core without SIMD. torch's antialiased uint8 resize computes the same
# bilinear and bicubic filters (every pixel within 1 grey level of Pillow's, tests/test_images.py) with
# SIMD: a 635 x 499 flowers17 photo to 326 x 256 px takes 0.74 ms instead of 1.89 (bilinear) and 0.72
# instead of 2.97 (bicubic) on one thread of a 2-core AMD EPYC. Other filters stay Pillow's.
_TORCH_FILTERS = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}


def resize_pixels(pixels: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """uint8 (H, W, 3) pixels resized to `size` (W, H) with Pillow's `resample` filter (antialiased)."""
    mode = _TORCH_FILTERS.get(resample)
    if mode is None:
        return np.array(Image.fromarray(pixels).resize(size, resample=resample), dtype=np.uint8)
    import torch  # here, not at the top: the CLI imports this module, and `tlearn --help` must not load torch

    x = _tensor(pixels).permute(2, 0, 1).unsqueeze(0)  # channels-last: what the uint8 kernel runs on
    out = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode=mode, antialias=True)
    # The kernel returns planes (3, H, W); stacking them is 3x faster than numpy's strided transpose copy.
    return np.stack(list(out[0].numpy()), axis=-1)


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    """A tensor over `pixels` without a copy; a read-only array (a view of Pillow's bytes) goes through DLPack,
    where torch does not warn that it cannot write it (NumPy 1 cannot export one: that copies)."""
    import torch

    if pixels.flags.writeable:
        return torch.from_numpy(pixels)
    try:
        return torch.from_dlpack(pixels)
    except BufferError:
        return torch.from_numpy(pixels.copy())


def _open(
    source: Path | bytes | BinaryIO, *, max_pixels: int, short_side: int | None
) -> tuple[Image.Image, tuple[tuple[int, int], str]]:
    data = _read_bytes(source)
    if not data:
        raise EmptyFile("file is empty (0 bytes)", hint="Remove it or replace it with the real image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(
                    f"image is {w} x {h} = {w * h / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP "
                    "limit (a guard against decompression bombs)",
                    hint="Downscale the image if it is genuine.",
                )
            mode = img.mode
            if short_side is not None and img.format == "JPEG":
                # Decode at the smallest DCT scale that still leaves both sides >= short_side.
                img.draft("RGB", (short_side, short_side))
            img.load()
            rgb = upright_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise NotAnImage("not an image (Pillow cannot identify its format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"refused as a possible decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise TruncatedImage(f"truncated or corrupt ({err})") from None
    except MemoryError:
        raise ImageTooLarge("not enough memory to decode it", hint="Downscale the image if it is genuine.") from None
    except Exception as err:  # Pillow's plugins fail on damaged files in ways of their own (TypeError, OverflowError)
        raise TruncatedImage(f"truncated or corrupt (the decoder failed: {type(err).__name__}: {err})") from None
    return rgb, ((w, h), mode)


def read_image_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file; refused before reading when it is larger than `max_bytes` or is not
    a regular file (reading a pipe waits for a writer, a device may never end). Raises ImageError."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableFile("is a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile("not a regular file (a pipe, socket or device)")
        _check_size(st.st_size, max_bytes)
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)  # bounded: the file may have grown since
    except FileNotFoundError:
        raise UnreadableFile("file not found") from None
    except IsADirectoryError:
        raise UnreadableFile("is a folder, not an image file") from None
    except OSError as err:
        raise UnreadableFile(f"cannot be read ({err.strerror})") from None
    except ValueError:  # a name with a NUL character (from a CSV), which no file system allows
        raise UnreadableFile("cannot be read (the name holds a NUL character)") from None
    _check_size(len(data), max_bytes)
    return data


def _check_size(n_bytes: int, max_bytes: int) -> None:
    if n_bytes > max_bytes:
        raise ImageTooLarge(
            f"file is {_megabytes(n_bytes)}, over the {_megabytes(max_bytes)} limit for an image file",
            hint="If it is an image, save it as JPEG or PNG at a smaller size.",
        )


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def _read_bytes(source: Path | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes):
        _check_size(len(source), MAX_FILE_BYTES)
        return source
    if isinstance(source, Path | str):
        return read_image_file(Path(source))
    data = source.read(MAX_FILE_BYTES + 1)
    _check_size(len(data), MAX_FILE_BYTES)
    return data


# EXIF orientations other than 1 ("as stored"): Pillow's exif_transpose turns these, and copies the
# image whole for any other, which costs more than the hashes of the dataset check (0.6 ms a photo).
_TURNED = frozenset(range(2, 9))


def upright_rgb(img: Image.Image) -> Image.Image:
    """A decoded image turned as its EXIF orientation says, in 8-bit RGB. `img` itself is not changed:
    the result is a new image where turning or converting makes one, else `img`."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) in _TURNED:
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparent areas become white (what a viewer shows)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr, top = arr - lo, max(hi - lo, 1e-12)
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
