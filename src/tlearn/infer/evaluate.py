"""How good a model is: metrics of predicted probabilities, and `tlearn evaluate` on a labelled dataset.

Accuracy alone hides a weak class; balanced accuracy and macro F1 weigh every class the same, the
per-class table shows which class fails, log loss and the expected calibration error say whether
the confidences can be trusted.

`evaluate_bundle(bundle, data, split="test")` scores a saved bundle on images it did not train on:
on the bundle's own dataset it takes the part named in the bundle's split.json (so "test" is the
very test set of the run); on another dataset, its test folder or all of its images.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlearn.artifacts.metrics import Metrics, compute_metrics
from tlearn.artifacts.predictions import PredictionRow, worst_mistakes
from tlearn.core.errors import ConfigError, DataError
from tlearn.core.files import read_json_object
from tlearn.core.progress import Progress, no_progress
from tlearn.core.words import count, not_one_of, verb
from tlearn.data.checks import copies_in
from tlearn.data.scan import CHECK_SHORT_SIDE, ScannedImages, Unreadable, scan_images
from tlearn.data.sources import Dataset, Sample, display_path, load_dataset
from tlearn.infer.bundle_images import labelled_splits

if TYPE_CHECKING:
    from tlearn.artifacts.bundle import BundleConfig

PARTS = ("train", "val", "test", "all")  # what `tlearn evaluate --split` accepts


@dataclass(frozen=True)
class Evaluation:
    """A bundle scored on labelled images: the metrics, and everything needed to show where it fails."""

    bundle: Path
    data: Path  # the dataset root (folder or CSV file)
    split: str  # "train", "val", "test" or "all"
    source: str  # which images were scored, in plain words
    classes: tuple[str, ...]  # the bundle's classes, in its order
    paths: tuple[Path, ...]  # (N,) the images scored
    y_true: np.ndarray  # (N,) int64 indices into `classes`
    proba: np.ndarray  # (N, K) predicted probabilities
    metrics: Metrics
    tta: bool
    unreadable: tuple[Unreadable, ...] = ()  # listed and skipped
    unknown: dict[str, int] = field(default_factory=dict)  # classes the bundle does not know -> images left out
    missing: tuple[str, ...] = ()  # files of the bundle's split that the dataset no longer holds
    notes: tuple[str, ...] = ()

    def predictions(self) -> list[PredictionRow]:
        base = _base(self.data)
        pred = self.proba.argmax(axis=1)
        return [
            PredictionRow(
                split=self.split,
                path=_relative(path, base),
                true=self.classes[t],
                predicted=self.classes[p],
                confidence=float(row[p]),
                true_probability=float(row[t]),
            )
            for path, t, p, row in zip(self.paths, self.y_true, pred, self.proba, strict=True)
        ]

    def mistakes(self, n: int = 16) -> list[PredictionRow]:
        """The `n` most confident wrong predictions, worst first."""
        return worst_mistakes(self.predictions(), n)

    @property
    def n_wrong(self) -> int:
        return int((self.proba.argmax(axis=1) != self.y_true).sum())

    def to_dict(self, *, mistakes: int = 20) -> dict[str, Any]:
        """JSON-ready: the metrics, the skipped files and the `mistakes` most confident errors."""
        return {
            "bundle": str(self.bundle),
            "data": str(self.data),
            "split": self.split,
            "source": self.source,
            "tta": self.tta,
            "n": self.metrics.n,
            "metrics": self.metrics.to_dict(),
            "unreadable": [{"path": str(u.path), "label": u.label, "reason": u.reason} for u in self.unreadable],
            "unknown_classes": self.unknown,
            "missing": list(self.missing),
            "notes": list(self.notes),
            "mistakes": [asdict(p) for p in self.mistakes(mistakes)],
        }

    def _repr_html_(self) -> str:
        """A small table in a notebook: what was scored, the metrics, each class, the worst mistakes."""
        from tlearn.infer.notebook import evaluation_html

        return evaluation_html(self)


def evaluate_bundle(
    bundle: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    tta: bool = False,
    batch_size: int = 32,
    progress: Progress = no_progress,
) -> Evaluation:
    """Score the bundle on the `split` part of the labelled dataset `data`. Raises TlearnError.

    On the bundle's own dataset, "train", "val" and "test" are the parts of the bundle's split.json;
    on another dataset, its split folders, or (for "test" when it has none) all of its images, which
    are all new to the model. "all" scores every image. Images of classes the bundle does not know
    are left out and counted; unreadable files are listed and skipped. With `tta`, probabilities are
    averaged with the mirror image's.
    """
    from tlearn.infer.load import load

    if split not in PARTS:
        raise ConfigError(not_one_of("--split", split, PARTS))
    predictor = load(bundle)
    folder = Path(bundle).expanduser()
    folder = folder.parent if folder.is_file() else folder
    dataset = load_dataset(data)
    chosen = _select(dataset, folder, predictor.config, split)
    notes = list(chosen.notes)
    kept, unknown, unknown_notes = _known(chosen.samples, predictor.classes, dataset.root)
    if tta and predictor.config.flip_tta:
        notes.append("The bundle already averages every image with its mirror image, so --tta changes nothing.")
    prep = predictor.preprocessing
    scanned = scan_images(kept, short_side=prep.working_short_side, resample=prep.resample, progress=progress)
    if not len(scanned):
        raise DataError(f"None of the {len(kept)} images to evaluate could be read.", hint=f"Run: tlearn check {data}")
    if not chosen.own:  # the bundle's own parts are apart by construction (copies stay in one part of the split)
        copies = _copies_note(scanned, folder, predictor.config, dataset.root)
        notes += [copies] if copies else [chosen.all_new] if chosen.all_new else []
    proba = _predict(predictor.predict_proba, scanned.pixels.load(), tta=tta, batch_size=batch_size, progress=progress)
    index = {c: i for i, c in enumerate(predictor.classes)}
    y_true = np.array([index[s.label] for s in scanned.samples], dtype=np.int64)
    return Evaluation(
        bundle=folder,
        data=dataset.root,
        split=split,
        source=chosen.source,
        classes=predictor.classes,
        paths=tuple(s.path for s in scanned.samples),
        y_true=y_true,
        proba=proba,
        metrics=compute_metrics(y_true, proba, predictor.classes),
        tta=tta,
        unreadable=scanned.unreadable,
        unknown=unknown,
        missing=chosen.missing,
        notes=(*notes, *unknown_notes),
    )


@dataclass(frozen=True)
class _Chosen:
    """The samples to score, which they are in plain words, files of the split that are gone, notes, whether
    DATA is the bundle's own dataset, and the note that its images are all new (said unless some copy the
    bundle's training images)."""

    samples: list[Sample]
    source: str
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    own: bool = False
    all_new: str | None = None


def _copies_note(scanned: ScannedImages, bundle_dir: Path, config: BundleConfig, root: Path) -> str | None:
    """How many images of another dataset copy images that trained or validated the bundle (the same bytes,
    or a near copy by the check's rule `copies_in`): their scores are too optimistic. None for none."""
    parts = labelled_splits(bundle_dir, config)
    if isinstance(parts, str):
        return None
    seen = [Sample(path, "") for part in ("train", "val") for path in parts[part][0]]
    copy_of = copies_in(scan_images(seen, short_side=CHECK_SHORT_SIDE), scanned)
    copies = [(i, j) for i, j in enumerate(copy_of) if j is not None]
    if not copies:
        return None
    (i, j), base = copies[0], _base(root)
    first = f"{_relative(scanned.samples[i].path, base)} copies {display_path(seen[j].path)}"
    return (
        f"{len(copies)} of the {count(len(scanned), 'image')} {verb(len(copies), 'copies an image', 'copy images')} "
        f"that trained or validated the bundle (first: {first}): the scores on them are too optimistic."
    )


def _select(dataset: Dataset, bundle_dir: Path, config: BundleConfig, split: str) -> _Chosen:
    """The samples to score, and what to say of them.

    DATA is the bundle's own dataset when it is at the recorded path, or when it holds every file the
    bundle's split lists (the dataset moved, or grew): then the parts are the run's own.
    """
    name = dataset.root.name
    base = _base(dataset.root)
    by_path = {_relative(s.path, base): s for s in dataset.samples}
    parts = _bundle_split(bundle_dir)
    same_root = bool(config.data) and Path(config.data).resolve() == dataset.root.resolve()
    listed_all = [p for paths in (parts or {}).values() for p in paths]
    own = parts is not None and (same_root or (bool(listed_all) and all(p in by_path for p in listed_all)))
    if split == "all":
        trained = sum(p in by_path for p in (parts or {}).get("train", [])) if own else 0
        notes = (f"{trained} of these images trained the model, so the scores are optimistic.",) if trained else ()
        return _Chosen(list(dataset.samples), f"all {len(dataset.samples)} images of {name}", notes=notes, own=own)
    if own and parts is not None:
        listed = parts.get(split, [])
        if not listed:
            others = [f"--split {p}" for p in ("val", "test", "train") if p != split and parts.get(p)]
            raise DataError(
                f"The bundle's split has no {split} images.",
                hint=f"Pass {', '.join([*others, '--split all'])} (every image of DATA); the train images are the "
                "ones it learned from, so their scores are optimistic.",
            )
        chosen = [by_path[p] for p in listed if p in by_path]
        missing = tuple(p for p in listed if p not in by_path)
        gone = f"{count(len(missing), 'file')} of the bundle's {split} part {verb(len(missing), 'is', 'are')} no longer"
        source = f"the {split} part of the bundle's split ({len(listed)} images of {name})"
        return _Chosen(chosen, source, missing, (f"{gone} in {name}.",) if missing else (), own=True)
    if dataset.has_splits:
        chosen = [s for s in dataset.samples if s.split == split]
        if not chosen:
            present = sorted({s.split for s in dataset.samples if s.split})
            raise DataError(
                f"{dataset.root} has no {split} part; it has {', '.join(present)}.",
                hint=f"Pass {' or '.join(f'--split {p}' for p in present)}, or --split all to score every image.",
            )
        return _Chosen(chosen, f"the {split} part of {name} ({len(chosen)} images)")
    if split == "test":
        all_new = f"{name} is not the dataset the bundle was trained on, so all of its images are new to the model."
        return _Chosen(list(dataset.samples), f"all {len(dataset.samples)} images of {name}", all_new=all_new)
    raise ConfigError(
        f"--split {split} needs the bundle's own dataset or one with split folders; {dataset.root} is neither.",
        hint="Pass --split test or --split all to score every image.",
    )


def _known(
    samples: Sequence[Sample], classes: Sequence[str], root: Path
) -> tuple[list[Sample], dict[str, int], list[str]]:
    """Leave out images of classes the bundle cannot predict; say which, with close names if any."""
    unknown = dict(sorted(Counter(s.label for s in samples if s.label not in classes).items()))
    kept = [s for s in samples if s.label in classes]
    if not unknown:
        return kept, {}, []
    alike = [f"'{u}' looks like '{m[0]}'" for u in unknown if (m := difflib.get_close_matches(u, classes, n=1))]
    listing = ", ".join(f"{c} ({n})" for c, n in list(unknown.items())[:10]) + (", ..." if len(unknown) > 10 else "")
    if not kept:
        raise DataError(
            f"None of the classes in {root} are classes of the bundle: {listing}. The bundle knows {_names(classes)}.",
            hint=("Rename the class folders: " + "; ".join(alike) + ".")
            if alike
            else "Evaluate on images labelled with the bundle's classes.",
        )
    images, classes = count(sum(unknown.values()), "image"), count(len(unknown), "class")
    note = f"Left out {images} of {classes} the bundle does not know: {listing}."
    if alike:
        note += " (" + "; ".join(alike) + ": rename the folders to include them.)"
    return kept, unknown, [note]


def _predict(
    predict_proba: Callable[..., np.ndarray],
    pixels: Sequence[np.ndarray],
    *,
    tta: bool,
    batch_size: int,
    progress: Progress,
) -> np.ndarray:
    """(N, K) probabilities of decoded images, batch by batch so that the progress bar moves."""
    out = []
    for start in range(0, len(pixels), batch_size):
        chunk = list(pixels[start : start + batch_size])
        out.append(predict_proba(chunk, batch_size=batch_size, tta=tta))
        progress("predict", start + len(chunk), len(pixels))
    return np.concatenate(out)


def _bundle_split(bundle_dir: Path) -> dict[str, list[str]] | None:
    """Part -> relative paths, as the bundle's split.json lists them; None when it has no readable one."""
    doc = read_json_object(bundle_dir / "split.json")
    if doc is None:
        return None
    return {part: [str(p) for p in doc.get(part) or []] for part in ("train", "val", "test")}


def _base(root: Path) -> Path:
    return root if root.is_dir() else root.parent


def _relative(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _names(classes: Sequence[str], limit: int = 8) -> str:
    return ", ".join(classes[:limit]) + (f" and {len(classes) - limit} more" if len(classes) > limit else "")
