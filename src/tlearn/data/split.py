"""Train / validation / test splits: stratified, seeded, duplicate-aware, saved as JSON.

A split is three arrays of indices into the scanned images. Copies of one photo (exact or near
duplicates, found by the checks) are kept in the same split, so the test set never holds an image the
model was trained on. The test images depend only on the seed and `test_frac`, not on `val_frac`: a
run with a validation set is scored on the same test images as a run without one.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tlearn.core.errors import ConfigError, DataError
from tlearn.core.files import write_json_atomic
from tlearn.data.sources import SPLIT_FOLDERS, Sample, display_path

SPLIT_FORMAT = 1
PARTS = ("train", "val", "test")


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
        for k, unit in enumerate(units):
            last = k == len(units) - 1  # the class's last group always trains, however large the others
            if taken < n_test and not last:
                part = "test"
            elif taken < n_test + n_val and not last:
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
    _check_classes_are_trained(samples, given)
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


def _check_classes_are_trained(samples: Sequence[Sample], given: dict[str, np.ndarray]) -> None:
    """Raise DataError when val or test hold a class that train lacks: no model could predict it."""
    trained = {samples[i].label for i in given["train"]}
    problems = []
    for part in ("val", "test"):
        lacking = sorted({samples[i].label for i in given[part]} - trained)
        if not lacking:
            continue
        folders = {c: _class_folder(samples, part, c) for c in lacking}
        shown = ", ".join(f"{c} ({folders[c]})" if folders[c] else c for c in lacking[:5])
        shown += f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
        folder, train_dir = _split_folder(samples, part), _split_folder(samples, "train") or "train"
        where, train = (f"{folder}/", f"{train_dir}/") if folder else (f"The {part} part", "the train part")
        classes = "a class" if len(lacking) == 1 else "classes"
        problems.append(f"{where} holds {classes} {'that ' if folder else ''}{train} lacks: {shown}.")
    if problems:
        raise DataError(
            " ".join(problems) + " A model cannot learn to predict a class it never sees in training.",
            hint="Add training images of each such class, or take its images out of val and test.",
        )


def _class_folder(samples: Sequence[Sample], part: str, label: str) -> Path | None:
    """The folder of class `label` in split folder `part` (photos/val/zebra); None for a CSV's rows."""
    for s in samples:
        if s.split == part and s.label == label:
            for p in s.path.parents:
                if p.name == label and SPLIT_FOLDERS.get(p.parent.name.lower()) == part:
                    return p
            return None
    return None


def _split_folder(samples: Sequence[Sample], part: str) -> str | None:
    """The name of the folder that holds split `part` ("val", "validation"...); None for a CSV."""
    folder = next((_class_folder(samples, part, s.label) for s in samples if s.split == part), None)
    return folder.parent.name if folder is not None else None


def split_key(path: Path, base: Path) -> str:
    """How split.json names a file: relative to the dataset's folder, as display_path writes it (valid UTF-8)."""
    return display_path(path.relative_to(base).as_posix() if path.is_relative_to(base) else path)


def save_split(split: Split, samples: Sequence[Sample], root: Path, path: Path) -> None:
    """Write the split as JSON lists of paths relative to the dataset root (atomically)."""
    base = root if root.is_dir() else root.parent

    def rel(i: int) -> str:
        return split_key(samples[i].path, base)

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
    """Read a split saved by `save_split`, matched to these samples by relative path.

    Raises DataError unless the file is a split file that puts each of these samples in exactly one
    part and names no other file: a split from another dataset (or from before the dataset changed)
    would quietly train and score on a part of the images.
    """
    path = Path(path)
    doc = _read_split_file(path)
    base = root if root.is_dir() else root.parent
    index = {}
    for i, s in enumerate(samples):
        index[split_key(s.path, base)] = i
    listed = {p: doc[p] for p in ("train", "val", "test")}
    names = [r for part in listed.values() for r in part]
    twice = [r for r, n in Counter(names).items() if n > 1]
    if twice:
        raise DataError(
            f"The split file {path} puts {_images(len(twice))} in two parts (first: {twice[0]}): the model would "
            "be scored on images it trained on.",
            hint=_SPLIT_FILE_HINT,
        )
    unknown = [r for r in names if r not in index]
    left_out = len(samples) - (len(names) - len(unknown))
    if unknown or left_out:
        said = []
        if left_out:
            said.append(f"leaves out {left_out} of the {_images(len(samples))} of {root}")
        if unknown:
            said.append(f"names {len(unknown)} files that {root} does not hold (first: {unknown[0]})")
        raise DataError(
            f"The split file {path} does not fit the dataset: it {' and '.join(said)}.",
            hint="The split file is probably from another dataset (or from before this one changed): pass the "
            "split.json of a run on this dataset, or leave out --split-file for a new split.",
        )
    if not listed["train"]:
        raise DataError(f"The split file {path} puts no images in train.", hint=_SPLIT_FILE_HINT)
    parts = {p: np.array(sorted(index[r] for r in rows), dtype=np.int64) for p, rows in listed.items()}
    return Split(
        parts["train"],
        parts["val"],
        parts["test"],
        origin="file",
        seed=doc.get("seed"),
        val_frac=doc.get("val_frac"),
        test_frac=doc.get("test_frac"),
    )


_SPLIT_FILE_HINT = "Pass the split.json of an earlier run on this dataset (every bundle holds one)."


def _read_split_file(path: Path) -> dict[str, Any]:
    """The split file as a dict with lists of paths under "train", "val" and "test". Raises DataError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DataError(f"Cannot read the split file {path}: {reason}.", hint=_SPLIT_FILE_HINT) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"The split file {path} is not JSON ({err.msg}, line {err.lineno}).", hint=_SPLIT_FILE_HINT
        ) from None
    if not isinstance(doc, dict) or "train" not in doc:
        doc = None
    else:
        doc = {**doc, "val": doc.get("val", []), "test": doc.get("test", [])}
        if not all(isinstance(doc[p], list) and all(isinstance(r, str) for r in doc[p]) for p in PARTS):
            doc = None
    if doc is None:
        raise DataError(
            f"The file {path} is not a split file: it needs lists of image paths under train, val and test.",
            hint=_SPLIT_FILE_HINT,
        )
    return doc


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


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
