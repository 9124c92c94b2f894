"""What a prediction starts from: the image files a user names, and any input decoded to pixels.

`find_images` expands the paths given to `tlearn predict` (files, folders, lists of paths) into image
files. `decode_input` turns one input of the Python API (a path, encoded bytes, a PIL image or an
array) into uint8 (H, W, 3) pixels at the working size, the way training decoded its images (same
short side, same interpolation), so a bundle predicts on what it was evaluated on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tlearn.core.errors import ConfigError, ImageError
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.eval_pixels import decode_eval_pixels, eval_pixels
from tlearn.data.images import MAX_PIXELS, decode_image, is_image_path, shrink_to_short_side, upright_rgb
from tlearn.data.sources import FileWalk, display_path
from tlearn.infer.results import Failure

ImageInput = str | Path | bytes | Image.Image | np.ndarray
LIST_SUFFIXES = frozenset({".txt", ".lst"})  # a text file of image paths, one per line


def find_images(paths: Sequence[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Expand what a user names into image files, in order, each once.

    A folder gives its image files (by extension, recursively, sorted, hidden files skipped, links
    followed once: see `FileWalk`); a .txt or .lst file gives the paths it lists, one per line
    (relative to the list's folder; blank lines and # comments skipped); any other file is taken as
    an image. A file reached twice (named again, by a link, a hard link) is listed once. Paths that
    do not exist are returned as failures, as are folders without images.
    """
    found: list[Path] = []
    failures: list[Failure] = []
    walk = FileWalk()

    def add(path: Path, *, from_list: bool = False) -> None:
        if path.is_dir():
            if walk.listed(path):
                return
            images = [f for f in walk.files(path) if isinstance(f, Path) and is_image_path(f)]
            if not images:
                failures.append(Failure(display_path(path), "folder holds no image files"))
            found.extend(images)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES and not from_list:
            for line in _list_lines(path):
                entry = Path(line).expanduser()
                add(entry if entry.is_absolute() else path.parent / entry, from_list=True)
        elif path.exists():
            if walk.add_file(path):
                found.append(path)
        elif any(c in path.name for c in "*?["):  # a pattern the shell matched to nothing passes as it is
            failures.append(Failure(display_path(path), "no file matches this pattern"))
        else:
            failures.append(Failure(display_path(path), "no such file or folder"))

    for p in paths:
        add(Path(p).expanduser())
    return found, failures


def decode_input(image: ImageInput, prep: Preprocessing, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One input as uint8 (H, W, 3) RGB, shrunk to `prep`'s working size. Raises ImageError.

    Files and bytes larger than `max_pixels` are refused before they are decoded (image bombs).
    """
    if isinstance(image, str | Path | bytes):
        source = image if isinstance(image, bytes) else Path(image)
        decoded = decode_image(
            source, short_side=prep.working_short_side, resample=prep.resample, max_pixels=max_pixels
        )
        return decoded.pixels  # decode_image raises ImageError and nothing else, whatever the bytes
    img = _as_rgb_image(image)
    return shrink_to_short_side(img, prep.working_short_side, resample=prep.resample)


def _as_rgb_image(image: ImageInput) -> Image.Image:
    """A PIL image (turned upright) or an array of the Python API as an RGB PIL image. Raises ImageError."""
    if isinstance(image, Image.Image):
        return upright_rgb(image)
    if isinstance(image, np.ndarray):
        return Image.fromarray(_as_uint8_rgb(image))
    raise ImageError(f"cannot predict on a {type(image).__name__}: pass a path, bytes, a PIL image or a uint8 array")


def decode_eval_input(image: ImageInput, prep: Preprocessing, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One input as uint8 (h, w, 3) RGB at the input size: the eval transform's pixels, made while
    decoding (see `data/eval_pixels.py`). Raises ImageError, as `decode_input` does."""
    if isinstance(image, str | Path | bytes):
        return decode_eval_pixels(image if isinstance(image, bytes) else Path(image), prep, max_pixels=max_pixels)
    return eval_pixels(_as_rgb_image(image), prep)


def as_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    """One image, or a sequence of them, as a list (a single array is one image when it is 2-D or 3-D). Anything
    else that is not a sequence counts as one image too, for the per-image check to name what it is."""
    if isinstance(images, str | Path | bytes | Image.Image) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3)
    ):
        return [images]
    return list(images) if isinstance(images, Iterable) else [images]


def input_name(item: ImageInput, i: int) -> str:
    """How an input is named in results and messages: its path as given (as `display_path` shows it,
    so JSON and CSV of the results are valid UTF-8), else "image i"."""
    return display_path(item) if isinstance(item, str | Path) else f"image {i}"


def _list_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"Cannot read the list of images {display_path(path)}: {err.strerror}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"Cannot read the list of images {display_path(path)}: it is not UTF-8 text "
            f"({err.reason} at byte {err.start})."
        ) from None
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _as_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"an image array must be (H, W, 3) RGB; got shape {arr.shape}")
    if not arr.size:
        raise ImageError(f"an image array has no pixels; got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":  # booleans, integers, floats
        raise ImageError(f"an image array must hold numbers; got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError("an image array must hold finite numbers; it holds NaN or infinity")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])
