"""Train / validation / test splits: stratified, seeded, duplicate-aware, saved as JSON.

A split is three arrays of indices into the scanned images. Copies of one photo (exact or near
duplicates, found by the checks) are kept in the same split, so the test set never holds an image the
model was trained on. The test images depend only on the seed and `test_frac`, not on `val_frac`: a
run with a validation set is scored on the same test images as a run without one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tlearn.core.errors import ConfigError, DataError
from tlearn.core.files import write_json_atomic
from tlearn.data.sources import Sample

SPLIT_FORMAT = 1


@dataclass(frozen=True)
class Split:
    """Indices into the scanned images; `origin` says where the assignment came from."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    origin: Literal["random", "dataset", "file"] = "random"
    seed: int | None = None
    val_frac: float | None = None
    test_frac: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def stratified_split(
    labels: Sequence[str],
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> Split:
    """Split indices 0..n-1 so that each class keeps its share in every part, where counts allow.

    `groups[i]` names the group of image i (duplicates share a group); a group never straddles two
    parts. Every class with at least 3 images gets at least one image in each part whose fraction is
    above zero, and every class keeps at least one training image.
    """
    _check_fracs(val_frac, test_frac)
    labels = list(labels)
    groups = list(range(len(labels))) if groups is None else list(groups)
    units_by_class: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    owner: dict[int, str] = {}
    for i, (label, group) in enumerate(zip(labels, groups, strict=True)):
        cls = owner.setdefault(group, label)  # a group with mixed labels goes with its first image's class
        units_by_class[cls][group].append(i)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in sorted(units_by_class):
        units = list(units_by_class[cls].values())
        order = rng.permutation(len(units))
        units = [units[k] for k in order]
        n = sum(len(u) for u in units)
        n_test, n_val = _counts(n, test_frac), _counts(n, val_frac)
        n_val = min(n_val, max(n - 1 - n_test, 0))  # every class keeps a training image
        taken = 0
        for unit in units:
            if taken < n_test:
                part = "test"
            elif taken < n_test + n_val:
                part = "val"
            else:
                part = "train"
            parts[part] += unit
            taken += len(unit)
    train, val, test = (np.array(sorted(parts[p]), dtype=np.int64) for p in ("train", "val", "test"))
    return Split(
        train,
        val,
        test,
        origin="random",
        seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
    )


def split_from_dataset(
    samples: Sequence[Sample], *, val_frac: float = 0.15, seed: int = 0, groups: Sequence[int] | None = None
) -> Split:
    """Honour the split the dataset gives (split folders, or a CSV split column).

    Without a validation part, one is carved out of the training part (stratified, `val_frac` of all
    images); without a test part, there is none and results are reported on validation.
    """
    given = {
        p: np.array([i for i, s in enumerate(samples) if s.split == p], dtype=np.int64)
        for p in ("train", "val", "test")
    }
    notes = []
    train, val = given["train"], given["val"]
    if len(val) == 0 and val_frac > 0 and len(train):
        sub_groups = None if groups is None else [groups[i] for i in train]
        inner = stratified_split(
            [samples[i].label for i in train],
            val_frac=min(val_frac * len(samples) / len(train), 0.5),
            test_frac=0.0,
            seed=seed,
            groups=sub_groups,
        )
        train, val = train[inner.train], train[inner.val]
        notes.append(f"The dataset has no validation part: {len(val)} training images were held out for it.")
    if len(given["test"]) == 0:
        notes.append("The dataset has no test part: results are reported on the validation part.")
    return Split(train, val, given["test"], origin="dataset", seed=seed, val_frac=val_frac, notes=tuple(notes))


def save_split(split: Split, samples: Sequence[Sample], root: Path, path: Path) -> None:
    """Write the split as JSON lists of paths relative to the dataset root (atomically)."""
    base = root if root.is_dir() else root.parent

    def rel(i: int) -> str:
        p = samples[i].path
        return p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)

    doc = {
        "format": SPLIT_FORMAT,
        "origin": split.origin,
        "seed": split.seed,
        "val_frac": split.val_frac,
        "test_frac": split.test_frac,
        "counts": {p: len(ix) for p, ix in split.parts().items()},
        **{p: [rel(int(i)) for i in ix] for p, ix in split.parts().items()},
    }
    write_json_atomic(path, doc)


def load_split(path: Path, samples: Sequence[Sample], root: Path) -> Split:
    """Read a split saved by `save_split`, matched to these samples by relative path."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"Cannot read the split file {path}: {err}.") from None
    base = root if root.is_dir() else root.parent
    index = {}
    for i, s in enumerate(samples):
        key = s.path.relative_to(base).as_posix() if s.path.is_relative_to(base) else str(s.path)
        index[key] = i
    parts: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for p in ("train", "val", "test"):
        listed = doc.get(p, [])
        missing += [r for r in listed if r not in index]
        parts[p] = np.array(sorted(index[r] for r in listed if r in index), dtype=np.int64)
    notes: tuple[str, ...] = ()
    if missing:
        notes = (f"{len(missing)} images of the split file are not in the dataset (first: {missing[0]}).",)
    return Split(
        parts["train"],
        parts["val"],
        parts["test"],
        origin="file",
        seed=doc.get("seed"),
        val_frac=doc.get("val_frac"),
        test_frac=doc.get("test_frac"),
        notes=notes,
    )


def _counts(n: int, frac: float) -> int:
    if frac <= 0 or n < 2:
        return 0
    k = int(n * frac + 0.5)
    return min(max(k, 1), n - 1) if n >= 3 else 1


def _check_fracs(val_frac: float, test_frac: float) -> None:
    problems = []
    for flag, value in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if not 0 <= value < 1:
            problems.append(f"{flag} must be at least 0 and below 1. Got {value}.")
    if not problems and val_frac + test_frac >= 1:
        problems.append(f"--val-frac plus --test-frac must leave images for training. Got {val_frac} + {test_frac}.")
    if problems:
        raise ConfigError(" ".join(problems))
