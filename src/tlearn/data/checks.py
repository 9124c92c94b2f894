"""What is wrong with a dataset before training on it: counts, balance, broken files, duplicates.

`check_dataset` works on what the scan already read (hashes, thumbnails, sizes), so checking costs
no second pass over the files. Problems make the dataset unusable (no images, one class); warnings
are worth reading but training goes on.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tlearn.core.progress import Progress, no_progress
from tlearn.core.words import count, verb
from tlearn.data.scan import CHECK_SHORT_SIDE, ScannedImages, Unreadable, scan_images
from tlearn.data.sources import Dataset, Ignored, display_path, load_dataset

MIN_PER_CLASS = 10
IMBALANCE_WARNING = 3.0
TINY_SIDE = 32  # an image whose shorter side is below this many pixels is too small to learn from (icons, thumbnails)
# Near duplicates: 64-bit dHashes within DHASH_BITS bits and 16 x 16 thumbnails within THUMB_MAD
# grey levels on average. Calibrated on flowers17, which holds re-saved copies of one photo (0 to 2
# bits, thumbnails within 5 levels), and on smooth synthetic images, where distinct images can share
# a dHash but not a thumbnail. Recrops of one photo mostly escape it (thumbnails 13+ levels apart).
DHASH_BITS = 12
THUMB_MAD = 10.0


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one photo; `members` index the scanned images."""

    kind: Literal["exact", "near"]
    members: tuple[int, ...]
    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    splits: tuple[str | None, ...]

    @property
    def label_conflict(self) -> bool:
        return len(set(self.labels)) > 1

    @property
    def leaks(self) -> bool:
        return len({s for s in self.splits if s is not None}) > 1

    @property
    def scope(self) -> str:
        if self.label_conflict:
            return "across classes"
        if self.leaks:
            return "across splits"
        return "within a class"


@dataclass(frozen=True)
class DatasetReport:
    root: Path
    kind: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    unreadable: tuple[Unreadable, ...]
    ignored: tuple[Ignored, ...]
    empty_classes: tuple[str, ...]
    small_classes: tuple[str, ...]
    min_per_class: int
    imbalance: float
    width_range: tuple[int, int]
    height_range: tuple[int, int]
    modes: dict[str, int]
    duplicates: tuple[DuplicateGroup, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values; paths as `display_path` shows them, so the JSON is valid UTF-8."""
        return {
            "root": display_path(self.root),
            "kind": self.kind,
            "usable": self.usable,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "total": self.total,
            "classes": list(self.classes),
            "counts": self.counts,
            "split_counts": self.split_counts,
            "min_per_class": self.min_per_class,
            "small_classes": list(self.small_classes),
            "imbalance": self.imbalance,
            "width_range": list(self.width_range),
            "height_range": list(self.height_range),
            "modes": self.modes,
            "unreadable": [
                {"path": display_path(u.path), "label": u.label, "reason": u.reason} for u in self.unreadable
            ],
            "ignored": [{"path": display_path(i.path), "reason": i.reason} for i in self.ignored],
            "empty_classes": list(self.empty_classes),
            "duplicates": [
                {
                    "kind": g.kind,
                    "scope": g.scope,
                    "paths": [display_path(p) for p in g.paths],
                    "labels": list(g.labels),
                    "splits": list(g.splits),
                }
                for g in self.duplicates
            ],
        }


def check_dataset(dataset: Dataset, scanned: ScannedImages, *, min_per_class: int = MIN_PER_CLASS) -> DatasetReport:
    """Summarise and judge a scanned dataset. Never raises for bad files: they are listed."""
    counts = Counter(s.label for s in scanned.samples)
    classes = tuple(c for c in dataset.classes if counts[c])
    split_counts: dict[str, dict[str, int]] = {}
    if dataset.has_splits:
        for s in scanned.samples:
            split_counts.setdefault(s.split or "?", {}).setdefault(s.label, 0)
            split_counts[s.split or "?"][s.label] += 1
    unreadable_classes = tuple(c for c in dataset.classes if not counts[c])
    empty = tuple(sorted(set(dataset.empty_classes) | set(unreadable_classes)))
    small = tuple(c for c in classes if counts[c] < min_per_class)
    sizes = np.array(scanned.sizes, dtype=np.int64).reshape(-1, 2)
    nonzero = [counts[c] for c in classes]
    imbalance = max(nonzero) / min(nonzero) if nonzero else 0.0
    duplicates = find_duplicates(scanned)

    problems: list[str] = []
    warnings: list[str] = []
    if not len(scanned):
        problems.append(f"None of the {len(dataset.samples)} image files could be read.")
    elif len(classes) < 2:
        only = f" (only '{classes[0]}')" if classes else ""
        problems.append(f"A classifier needs at least two classes with images; found {len(classes)}{only}.")
    if scanned.unreadable:
        warnings.append(unreadable_warning(len(scanned.unreadable)))
    if empty:
        what = "class" if dataset.kind == "csv" else "class folder"  # a CSV's classes are labels, not folders
        warnings.append(
            f"{count(len(empty), what)} {verb(len(empty), 'has', 'have')} no readable "
            f"images and {verb(len(empty), 'is', 'are')} left out: {', '.join(empty)}."
        )
    if small:
        warnings.append(
            f"{count(len(small), 'class')} {verb(len(small), 'has', 'have')} fewer than {min_per_class} images "
            f"({', '.join(small[:5])}"
            f"{'...' if len(small) > 5 else ''}): results on {verb(len(small), 'it', 'them')} will be unreliable."
        )
    tiny = [x.path for x, (w, h) in zip(scanned.samples, scanned.sizes, strict=True) if min(w, h) < TINY_SIDE]
    if tiny:
        shown = ", ".join(display_path(_within(Path(p), dataset.root)) for p in tiny[:3])
        warnings.append(
            f"{count(len(tiny), 'image')} {verb(len(tiny), 'is', 'are')} smaller than {TINY_SIDE} px on the "
            f"shorter side ({shown}{', ...' if len(tiny) > 3 else ''}): enlarged to the model's input, such "
            "images show little. Check that these are photos, not icons or thumbnails."
        )
    for group in _alike_names(classes):
        warnings.append(
            f"Classes {' and '.join(repr(c) for c in group)} differ only in case, spaces or dashes: if they are "
            "one class, give them one name."
        )
    if imbalance >= IMBALANCE_WARNING:
        warnings.append(
            f"Classes are imbalanced ({imbalance:.1f} to 1): consider --class-weight balanced, and read "
            "balanced accuracy rather than accuracy."
        )
    conflicts = [g for g in duplicates if g.label_conflict]
    leaks = [g for g in duplicates if g.leaks and not g.label_conflict]
    if conflicts:
        appear = verb(len(conflicts), "appears", "appear")
        warnings.append(f"{count(len(conflicts), 'image')} {appear} under two or more classes (label conflicts).")
    if leaks:
        warnings.append(
            f"{count(len(leaks), 'image')} {verb(len(leaks), 'appears', 'appear')} in more than one split: scores "
            "on val/test will be too optimistic."
        )
    if len(duplicates) - len(conflicts) - len(leaks):
        warnings.append(
            f"{count(len(duplicates) - len(conflicts) - len(leaks), 'group')} of duplicate images within a class "
            "(kept together in one split)."
        )
    return DatasetReport(
        root=dataset.root,
        kind=dataset.kind,
        classes=classes,
        counts={c: counts[c] for c in classes},
        split_counts=split_counts,
        unreadable=scanned.unreadable,
        ignored=dataset.ignored,
        empty_classes=empty,
        small_classes=small,
        min_per_class=min_per_class,
        imbalance=round(imbalance, 3),
        width_range=(int(sizes[:, 0].min()), int(sizes[:, 0].max())) if len(sizes) else (0, 0),
        height_range=(int(sizes[:, 1].min()), int(sizes[:, 1].max())) if len(sizes) else (0, 0),
        modes=dict(Counter(scanned.modes).most_common()),
        duplicates=tuple(duplicates),
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


def _alike_names(classes: Sequence[str]) -> list[tuple[str, ...]]:
    """Groups of class names that are one name but for case, spaces, underscores or dashes ('Cat', 'cat ',
    'golden-retriever', 'Golden Retriever'): a spreadsheet's typo more often than two classes."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for c in classes:
        by_key[re.sub(r"[\s_-]+", " ", c).strip().casefold()].append(c)
    return [tuple(names) for names in by_key.values() if len(names) > 1]


def _within(path: Path, root: Path) -> Path:
    """`path` from `root` where it lies inside it (a CSV may name files elsewhere)."""
    return path.relative_to(root) if path.is_relative_to(root) else path


def unreadable_warning(files: int) -> str:
    """The check's warning about unreadable files (commands that list them file by file leave it out)."""
    return f"{count(files, 'file')} cannot be read and will be skipped."


def find_duplicates(scanned: ScannedImages) -> list[DuplicateGroup]:
    """Groups of exact copies (same bytes) and near copies (re-saved, resized, recropped)."""
    n = len(scanned)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(scanned.sha256):
        by_hash[h].append(i)
    for members in by_hash.values():
        for j in members[1:]:
            union(members[0], j)
    for i, j in _near_pairs(scanned):
        union(i, j)

    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        exact = len({scanned.sha256[i] for i in members}) == 1
        out.append(
            DuplicateGroup(
                kind="exact" if exact else "near",
                members=tuple(members),
                paths=tuple(scanned.samples[i].path for i in members),
                labels=tuple(scanned.samples[i].label for i in members),
                splits=tuple(scanned.samples[i].split for i in members),
            )
        )
    return sorted(out, key=lambda g: g.members[0])


def group_ids(n: int, duplicates: list[DuplicateGroup] | tuple[DuplicateGroup, ...]) -> list[int]:
    """One id per image; the copies of one photo share an id (for the duplicate-aware split)."""
    ids = list(range(n))
    for g in duplicates:
        for i in g.members:
            ids[i] = g.members[0]
    return ids


def _near_pairs(scanned: ScannedImages, block: int = 1024) -> list[tuple[int, int]]:
    h = scanned.dhash
    if len(h) < 2:  # no pair to compare (and no thumbnail to reshape when nothing could be read)
        return []
    thumbs = scanned.thumbs.reshape(len(h), -1).astype(np.int16)
    pairs = []
    for start in range(0, len(h), block):
        rows = h[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= DHASH_BITS)
        ii = ii + start
        keep = jj > ii
        for i, j in zip(ii[keep], jj[keep], strict=True):
            if scanned.sha256[i] == scanned.sha256[j]:
                continue
            if np.abs(thumbs[i] - thumbs[j]).mean() <= THUMB_MAD:
                pairs.append((int(i), int(j)))
    return pairs


def check_path(
    path: str | Path, *, min_per_class: int = MIN_PER_CLASS, progress: Progress = no_progress
) -> DatasetReport:
    """Find, read and check the dataset at `path` (what `tlearn check` runs)."""
    dataset = load_dataset(path)
    scanned = scan_images(dataset.samples, short_side=CHECK_SHORT_SIDE, progress=progress)
    return check_dataset(dataset, scanned, min_per_class=min_per_class)


def copies_in(reference: ScannedImages, other: ScannedImages, block: int = 1024) -> list[int | None]:
    """For each image of `other`, the index of an exact or near copy of it in `reference`, or None.

    The same rule as `find_duplicates` (same bytes, or dHash and thumbnail within the thresholds), so
    an image kept out of a split as a copy is kept out of the unlabelled pool the same way.
    """
    by_hash = {h: i for i, h in enumerate(reference.sha256)}
    found: list[int | None] = [by_hash.get(h) for h in other.sha256]
    if not len(reference) or not len(other):
        return found
    ref_thumbs = reference.thumbs.reshape(len(reference), -1).astype(np.int16)
    thumbs = other.thumbs.reshape(len(other), -1).astype(np.int16)
    for start in range(0, len(other), block):
        dist = np.bitwise_count(other.dhash[start : start + block, None] ^ reference.dhash[None, :])
        for i, j in zip(*np.nonzero(dist <= DHASH_BITS), strict=True):
            k = int(i) + start
            if found[k] is None and np.abs(thumbs[k] - ref_thumbs[j]).mean() <= THUMB_MAD:
                found[k] = int(j)
    return found
