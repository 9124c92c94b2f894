"""Read every image of a dataset once: pixels, content hash, perceptual hash, size, mode.

One pass serves the dataset checks and training: the pixels are kept (shrunk to a working size a
little above the model's input) so that nothing downstream decodes a file again. Decoding runs on a
thread pool; Pillow releases the GIL while it decodes and resizes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlearn.data.images import decode_image
from tlearn.data.sources import Sample
from tlearn.errors import ImageError
from tlearn.progress import Progress, no_progress

# Checks need no more than this to hash and measure; training asks for the model's working size.
CHECK_SHORT_SIDE = 64
THUMB = (16, 16)


@dataclass(frozen=True)
class Unreadable:
    path: Path
    label: str
    reason: str

    @property
    def is_not_image(self) -> bool:
        return self.reason.startswith("not an image")


@dataclass(frozen=True)
class ScannedImages:
    """The readable images of a dataset, in dataset order; every tuple is parallel to `samples`.

    `pixels` holds uint8 (H, W, 3) arrays with the shorter side at most `short_side`; `sha256` the
    hash of each file's bytes; `dhash` (N,) uint64 difference hashes and `thumbs` (N, 16, 16, 3)
    uint8 thumbnails, for near-duplicate detection.
    """

    samples: tuple[Sample, ...]
    pixels: tuple[np.ndarray, ...]
    sha256: tuple[str, ...]
    dhash: np.ndarray
    thumbs: np.ndarray
    sizes: tuple[tuple[int, int], ...]
    modes: tuple[str, ...]
    unreadable: tuple[Unreadable, ...]
    short_side: int

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class _One:
    pixels: np.ndarray
    sha256: str
    dhash: int
    thumb: np.ndarray
    size: tuple[int, int]
    mode: str


def scan_images(
    samples: tuple[Sample, ...] | list[Sample],
    *,
    short_side: int = CHECK_SHORT_SIDE,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
    workers: int | None = None,
    progress: Progress = no_progress,
) -> ScannedImages:
    """Decode each sample once; unreadable files are collected with their reason, never raised."""
    workers = workers or min(8, os.cpu_count() or 1)
    ok: list[tuple[Sample, _One]] = []
    bad: list[Unreadable] = []
    total = len(samples)
    progress("decode", 0, total)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda s: _scan_one(s.path, short_side, resample), samples)
        for done, (sample, result) in enumerate(zip(samples, results, strict=True), start=1):
            if isinstance(result, str):
                bad.append(Unreadable(sample.path, sample.label, result))
            else:
                ok.append((sample, result))
            if done % 16 == 0 or done == total:
                progress("decode", done, total)
    return ScannedImages(
        samples=tuple(s for s, _ in ok),
        pixels=tuple(r.pixels for _, r in ok),
        sha256=tuple(r.sha256 for _, r in ok),
        dhash=np.array([r.dhash for _, r in ok], dtype=np.uint64),
        thumbs=np.stack([r.thumb for _, r in ok]) if ok else np.zeros((0, *THUMB, 3), np.uint8),
        sizes=tuple(r.size for _, r in ok),
        modes=tuple(r.mode for _, r in ok),
        unreadable=tuple(bad),
        short_side=short_side,
    )


def _scan_one(path: Path, short_side: int, resample: Image.Resampling) -> _One | str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "file not found"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    try:
        decoded = decode_image(data, short_side=short_side, resample=resample)
    except ImageError as err:
        return err.message
    return _One(
        pixels=decoded.pixels,
        sha256=hashlib.sha256(data).hexdigest(),
        dhash=difference_hash(decoded.pixels),
        thumb=np.asarray(Image.fromarray(decoded.pixels).resize(THUMB, Image.Resampling.BOX)),
        size=decoded.size,
        mode=decoded.mode,
    )


def difference_hash(pixels: np.ndarray) -> int:
    """64-bit dHash: is each pixel of a 9 x 8 grey thumbnail brighter than its right neighbour?

    Survives re-encoding, resizing and small colour changes, so two copies of one photo land within
    a few bits of each other while different photos differ in about half of the 64.
    """
    grey = Image.fromarray(pixels).convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    a = np.asarray(grey, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])
