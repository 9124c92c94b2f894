"""Read every image of a dataset once: content hash, perceptual hash, size, mode, and the pixels.

One pass serves the dataset checks and training. The pixels are kept, shrunk to a working size a
little above the model's input, so that nothing downstream decodes a file twice; decoding runs on a
thread pool (Pillow releases the GIL while it decodes and resizes).

What the checks need (hashes, thumbnail, size, mode) is kept on disk by content hash, so a rerun on
the same files only reads and hashes them: pixels are then decoded on first use, and a run whose
features are all cached never decodes an image at all.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
from PIL import Image

from tlearn.core.cache import cache_root
from tlearn.core.errors import ImageError
from tlearn.core.files import atomic_path
from tlearn.core.progress import Progress, no_progress
from tlearn.core.threads import cpu_workers
from tlearn.data.images import decode_image, read_image_file, shrink_pixels
from tlearn.data.sources import Sample

log = logging.getLogger(__name__)

# Checks need no more than this to hash and measure; training asks for the model's working size.
CHECK_SHORT_SIDE = 64
THUMB = (16, 16)
META_FORMAT = 1


@dataclass(frozen=True)
class Unreadable:
    path: Path
    label: str
    reason: str


class _Decoded:
    """Pixels decoded so far, by file, for one working size (shared by every view of a dataset)."""

    def __init__(self, paths: Sequence[Path], short_side: int, resample: Image.Resampling) -> None:
        self.paths = list(paths)
        self.short_side = short_side
        self.resample = resample
        self.arrays: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()

    def get(self, i: int) -> np.ndarray:
        found = self.arrays.get(i)
        if found is None:
            found = decode_image(self.paths[i], short_side=self.short_side, resample=self.resample).pixels
            with self.lock:
                self.arrays[i] = found
        return found


class Pixels(Sequence[np.ndarray]):
    """uint8 (H, W, 3) pixels of images by position, decoded on first access and then kept.

    `load()` decodes everything still missing on a thread pool: call it before handing the pixels to
    worker processes, which would otherwise each decode their own copy.
    """

    def __init__(self, decoded: _Decoded, index: Sequence[int]) -> None:
        self._decoded = decoded
        self._index = tuple(index)

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self._decoded.get(j) for j in self._index[i]]
        return self._decoded.get(self._index[i])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def subset(self, positions: Sequence[int] | np.ndarray) -> Pixels:
        return Pixels(self._decoded, [self._index[int(p)] for p in positions])

    def load(self, positions: Sequence[int] | np.ndarray | None = None, *, workers: int | None = None) -> Pixels:
        wanted = range(len(self)) if positions is None else positions
        missing = [self._index[int(p)] for p in wanted if self._index[int(p)] not in self._decoded.arrays]
        if missing:
            with ThreadPoolExecutor(max_workers=workers or _threads()) as pool:
                list(pool.map(self._decoded.get, missing))
        return self


@dataclass(frozen=True)
class ScannedImages:
    """The readable images of a dataset, in dataset order; every field is parallel to `samples`.

    `pixels` gives uint8 (H, W, 3) arrays with the shorter side at most `short_side`; `sha256` the
    hash of each file's bytes; `dhash` (N,) uint64 difference hashes and `thumbs` (N, 16, 16, 3)
    uint8 thumbnails, for near-duplicate detection.
    """

    samples: tuple[Sample, ...]
    pixels: Pixels
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
class _Meta:
    """What the checks need of one image; cached on disk by content hash."""

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
    cache: bool = True,
    write_cache: bool = True,
) -> ScannedImages:
    """Read and hash each sample once; unreadable files are collected with their reason, never raised.

    Files met before (same content) are not decoded: their check data comes from the cache and their
    pixels are decoded when first used. New files are decoded now, at `short_side`. `write_cache`
    False reads the cache but leaves it as it is (the other ranks of a torchrun job).
    """
    store = MetaStore.open() if cache else MetaStore({})
    decoded = _Decoded([s.path for s in samples], short_side, resample)
    ok: list[tuple[int, str, _Meta]] = []
    bad: list[Unreadable] = []
    total = len(samples)
    progress("decode", 0, total)

    def one(i: int) -> tuple[str, _Meta] | str:
        return _scan_one(samples[i].path, i, decoded, store)

    with ThreadPoolExecutor(max_workers=workers or _threads()) as pool:
        for done, (i, result) in enumerate(zip(range(total), pool.map(one, range(total)), strict=True), start=1):
            if isinstance(result, str):
                bad.append(Unreadable(samples[i].path, samples[i].label, result))
            else:
                ok.append((i, *result))
            if done % 16 == 0 or done == total:
                progress("decode", done, total)
    if cache and write_cache:
        store.save({sha: meta for _, sha, meta in ok})
    return ScannedImages(
        samples=tuple(samples[i] for i, _, _ in ok),
        pixels=Pixels(decoded, [i for i, _, _ in ok]),
        sha256=tuple(sha for _, sha, _ in ok),
        dhash=np.array([m.dhash for _, _, m in ok], dtype=np.uint64),
        thumbs=np.stack([m.thumb for _, _, m in ok]) if ok else np.zeros((0, *THUMB, 3), np.uint8),
        sizes=tuple(m.size for _, _, m in ok),
        modes=tuple(m.mode for _, _, m in ok),
        unreadable=tuple(bad),
        short_side=short_side,
    )


def _scan_one(path: Path, i: int, decoded: _Decoded, store: MetaStore) -> tuple[str, _Meta] | str:
    try:
        data = read_image_file(path)  # refuses huge files and pipes before reading them
    except ImageError as err:
        return err.message
    sha = hashlib.sha256(data).hexdigest()
    known = store.entries.get(sha)
    if known is not None:
        return sha, known
    try:
        image = decode_image(data, short_side=decoded.short_side, resample=decoded.resample)
    except ImageError as err:
        return err.message
    with decoded.lock:
        decoded.arrays[i] = image.pixels
    return sha, _meta(image.pixels, image.size, image.mode)


def _meta(pixels: np.ndarray, size: tuple[int, int], mode: str) -> _Meta:
    """Hashes from a fixed-size copy, so they do not depend on the working size of the scan (shrunk as
    decoding shrinks: 0.22 ms a flowers17 photo instead of Pillow's 0.61, the same hashes)."""
    small = shrink_pixels(pixels, CHECK_SHORT_SIDE, resample=Image.Resampling.BICUBIC)
    return _Meta(
        dhash=difference_hash(small),
        thumb=np.asarray(Image.fromarray(small).resize(THUMB, Image.Resampling.BOX)),
        size=size,
        mode=mode,
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


class MetaStore:
    """Check data of images by content hash, in one file under the cache folder."""

    def __init__(self, entries: dict[str, _Meta], path: Path | None = None) -> None:
        self.entries = entries
        self.path = path

    @classmethod
    def open(cls) -> MetaStore:
        path = cache_root() / "scan" / f"meta-v{META_FORMAT}.npz"
        entries: dict[str, _Meta] = {}
        if path.is_file():
            try:
                with np.load(path) as d:
                    for sha, h, thumb, size, mode in zip(
                        d["sha"].tolist(), d["dhash"], d["thumbs"], d["sizes"], d["modes"].tolist(), strict=True
                    ):
                        entries[sha] = _Meta(int(h), thumb, (int(size[0]), int(size[1])), mode)
            except (OSError, ValueError, KeyError):
                log.warning("Ignoring an unreadable scan cache: %s", path)
        return cls(entries, path)

    def save(self, new: dict[str, _Meta]) -> None:
        fresh = {k: v for k, v in new.items() if k not in self.entries}
        if not fresh or self.path is None:
            return
        self.entries.update(fresh)
        items = list(self.entries.items())
        try:
            with atomic_path(self.path) as tmp, tmp.open("wb") as fh:
                np.savez(
                    fh,
                    sha=np.array([k for k, _ in items]),
                    dhash=np.array([m.dhash for _, m in items], dtype=np.uint64),
                    thumbs=np.stack([m.thumb for _, m in items]),
                    sizes=np.array([m.size for _, m in items], dtype=np.int64),
                    modes=np.array([m.mode for _, m in items]),
                )
        except OSError as err:  # a read-only cache folder costs speed, not correctness
            log.warning("Cannot write the scan cache %s: %s", self.path, err)


def _threads() -> int:
    return cpu_workers(8)
