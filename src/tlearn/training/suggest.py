"""`tlearn suggest BUNDLE FOLDER`: which unlabelled photos to label next, and a folder to sort them in.

The bundle's own network gives each photo its probabilities and its pooled features (the features its
head reads); `ranking.rank_for_labelling` orders the photos by uncertainty spread over feature space.
Written to `--out`:

- `suggestions.csv`: every readable photo (path, guess, confidence, score, rank), best first;
- `contact_sheet.html`: the first `n`, thumbnails with the model's current guess;
- `to_label/<class>/`: one folder per class of the bundle, each suggestion copied (never moved) into
  the folder of its guess. Move the wrong ones to the right folder, then add the folders to the dataset.

Unreadable files are listed and skipped. Photos that copy an image the bundle was trained, validated or
tested on (exact or near copies: `copies_in`, the rule of `--unlabelled`) are left out: labelling them again
would add nothing. Copies within the folder stay; the ranking picks one of them.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlearn.core.errors import ConfigError, DataError, OutputError
from tlearn.core.files import atomic_path
from tlearn.core.progress import Progress, no_progress
from tlearn.data.checks import copies_in
from tlearn.data.scan import CHECK_SHORT_SIDE, ScannedImages, scan_images
from tlearn.data.sources import Sample, display_path
from tlearn.data.unlabelled import Excluded
from tlearn.infer.bundle_images import PARTS, labelled_splits
from tlearn.infer.inputs import find_images
from tlearn.infer.predictor import Predictor
from tlearn.infer.results import Failure
from tlearn.models.classifier import Classifier
from tlearn.models.tta import mirror_logits
from tlearn.report.contact_sheet import Tile, write_contact_sheet
from tlearn.training.ranking import Strategy, rank_for_labelling

CSV_FILE = "suggestions.csv"
SHEET_FILE = "contact_sheet.html"
FOLDER = "to_label"


@dataclass(frozen=True)
class Suggestion:
    path: Path
    guess: str
    confidence: float  # the model's probability of its guess
    score: float  # how much labelling it would help (see rank_for_labelling)
    rank: int  # 1 = label this first


@dataclass(frozen=True)
class Suggestions:
    ranked: tuple[Suggestion, ...]  # every readable photo, best first
    n: int  # the first n are the suggestions
    failures: tuple[Failure, ...]  # files that could not be read (skipped)
    out: Path
    excluded: tuple[Excluded, ...] = ()  # copies of the bundle's labelled images (the ranking spreads out the rest)
    not_compared: str | None = None  # why the photos could not be compared with the labelled images

    @property
    def picked(self) -> tuple[Suggestion, ...]:
        return self.ranked[: self.n]

    @property
    def csv(self) -> Path:
        return self.out / CSV_FILE

    @property
    def sheet(self) -> Path:
        return self.out / SHEET_FILE

    @property
    def folder(self) -> Path:
        return self.out / FOLDER


def embed_and_score(
    predictor: Predictor, paths: Sequence[Path], *, batch_size: int = 32, progress: Progress = no_progress
) -> tuple[list[int], np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """The bundle's pooled features (n, D) and probabilities (n, K) of the photos that can be read.

    Returns the positions read, features, probabilities and (position, reason) of the others. With the
    mirror TTA in the bundle, features are the mean of the photo's and its mirror image's, and the
    probabilities are what the bundle predicts (mirror rule and temperature included).
    """
    clf = predictor.classifier
    assert isinstance(clf, Classifier)  # what load_bundle builds
    done: list[int] = []
    feats: list[np.ndarray] = []
    probas: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    for idx, x, bad in predictor.input_batches(paths, batch_size=batch_size):
        failed += [(i, err.message) for i, err in bad]
        if len(idx):
            t = torch.from_numpy(np.ascontiguousarray(x))
            with torch.inference_mode():
                f = clf.features(t)
                logits = clf.head(f)
                if clf.flip_tta:
                    fm = clf.features(t.flip(-1))
                    logits = mirror_logits(logits, clf.head(fm))
                    f = (f + fm) / 2
                probas.append((logits / clf.temperature).softmax(dim=1).float().numpy())
            feats.append(f.float().numpy())
            done += idx
        progress("predict", len(done) + len(failed), len(paths))
    if not done:
        return [], np.zeros((0, 0), np.float32), np.zeros((0, len(predictor.classes)), np.float32), failed
    return done, np.concatenate(feats), np.concatenate(probas), failed


def suggest(
    bundle: str | Path,
    folder: str | Path,
    *,
    n: int = 20,
    out: str | Path = "suggestions",
    strategy: Strategy = "diverse",
    batch_size: int = 32,
    seed: int = 0,
    progress: Progress = no_progress,
) -> Suggestions:
    """Rank the photos of `folder` for labelling with the bundle's model and write CSV, sheet and folders."""
    from tlearn.infer.load import load

    if n < 1:
        raise ConfigError(f"--n must be 1 or more. Got {n}.")
    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if not folder.is_dir():
        raise DataError(f"No such folder: {display_path(folder)}.", hint="Pass the folder of unlabelled photos.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"{display_path(out)} already exists and is not empty.",
            hint="Pass another --out, or remove it (the photos there are copies).",
        )
    predictor = load(bundle, engine="torch")
    assert isinstance(predictor, Predictor)  # engine="torch"
    found, missing = find_images([folder])
    if not found:
        raise DataError(f"{display_path(folder)} holds no image files.", hint="Pass the folder of unlabelled photos.")
    labelled, not_compared = _labelled_images(Path(bundle).expanduser(), predictor, progress)
    scanned = scan_images([Sample(p, "") for p in found], short_side=CHECK_SHORT_SIDE, progress=progress)
    copy_of = copies_in(labelled, scanned)
    excluded = tuple(
        Excluded(scanned.samples[i].path, labelled.samples[j].path) for i, j in enumerate(copy_of) if j is not None
    )
    paths = [scanned.samples[i].path for i, j in enumerate(copy_of) if j is None]
    if not paths and excluded:
        raise DataError(
            f"Every readable photo in {display_path(folder)} is a copy of an image the bundle was trained, validated "
            "or tested on: none is new to label.",
            hint="Pass a folder of photos that are not in the bundle's dataset yet.",
        )
    done, feats, proba, failed = embed_and_score(predictor, paths, batch_size=batch_size, progress=progress)
    unreadable = [Failure(display_path(u.path), u.reason) for u in scanned.unreadable]
    failures = (*missing, *unreadable, *(Failure(display_path(paths[i]), reason) for i, reason in failed))
    if not done:
        raise DataError(f"None of the {len(found)} image files in {display_path(folder)} could be read.")
    order, score = rank_for_labelling(proba, feats, n, strategy=strategy, seed=seed)
    ranked = tuple(
        Suggestion(
            path=paths[done[j]],
            guess=predictor.classes[int(proba[j].argmax())],
            confidence=float(proba[j].max()),
            score=float(score[j]),
            rank=r,
        )
        for r, j in enumerate(order, start=1)
    )
    result = Suggestions(
        ranked=ranked, n=min(n, len(ranked)), failures=tuple(failures), out=out, excluded=excluded,
        not_compared=not_compared,
    )  # fmt: skip
    _write(result, predictor)
    return result


def _labelled_images(bundle: Path, predictor: Predictor, progress: Progress) -> tuple[ScannedImages, str | None]:
    """The bundle's labelled images (train, validation and test), hashed for `copies_in`; none, and why, when
    its dataset is not there. Their check data is in the scan cache since training: nothing is decoded again."""
    splits = labelled_splits(bundle, predictor.config)
    if isinstance(splits, str):
        return scan_images([], short_side=CHECK_SHORT_SIDE), splits
    samples = [Sample(path, "") for part in PARTS for path in splits[part][0]]
    return scan_images(samples, short_side=CHECK_SHORT_SIDE, progress=progress), None


def _write(result: Suggestions, predictor: Predictor) -> None:
    result.out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "guess", "confidence", "score", "rank"])
    for s in result.ranked:
        writer.writerow([display_path(s.path), s.guess, f"{s.confidence:.4f}", f"{s.score:.4f}", s.rank])
    with atomic_path(result.csv) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")

    for c in predictor.classes:
        (result.folder / _folder_name(c)).mkdir(parents=True, exist_ok=True)
    tiles = []
    for s in result.picked:
        target = result.folder / _folder_name(s.guess) / f"{s.rank:03d}_{s.path.name}"
        shutil.copy2(s.path, target)  # a copy: the original stays where it is
        tiles.append(
            Tile(
                pixels=predictor.pixels(s.path),
                title=f"{s.rank}. {s.path.name}",
                caption=f"guess: {s.guess} ({s.confidence:.0%})",
            )
        )
    write_contact_sheet(
        result.sheet,
        tiles,
        title=f"{len(tiles)} photos to label next",
        note=(
            f"Ranked by the model of {predictor.source}: uncertain photos, spread over what the model sees. "
            f"Each is copied into {FOLDER}/<its guess>/: move the wrong ones to the right class folder, "
            "then add the class folders to your dataset."
        ),
    )


def _folder_name(label: str) -> str:
    """A class name as a folder name (path separators replaced)."""
    return label.replace("/", "_").replace("\\", "_") or "_"
