"""`tlearn train`: dataset -> checks -> split -> backbone -> method -> evaluation -> bundle.

`run(cfg)` reads top to bottom as the list above; each step takes the previous step's value. The run
folder is the bundle: weights and config, plus the split, the dataset check, the predictions on
val/test and (for methods that train in epochs) the history. A new run writes it in a temporary folder
beside `--out` and renames it into place once the bundle is saved (`run_folder`), so a failed run never
leaves a folder that mixes its files with an older bundle's; `--resume` works in its folder in place.

Launched by torchrun, every process runs this same function inside one `distributed.session`: each
reads the dataset, the methods split the heavy work between them, and rank 0 alone chooses the run
folder and writes into it. Every process returns the same result.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tlearn.artifacts.bundle import CHECK_FILE, SPLIT_FILE, BundleConfig, save_bundle
from tlearn.artifacts.details import MethodDetails
from tlearn.artifacts.label_issues import LABEL_ISSUES_FILE, LabelIssue, write_label_issues
from tlearn.artifacts.metrics import Metrics, compute_metrics
from tlearn.artifacts.predictions import PREDICTIONS_FILE
from tlearn.core import distributed
from tlearn.core.errors import ConfigError, DataError, FileSystemError, Interrupted, TlearnError
from tlearn.core.files import atomic_path, read_json_object, write_json_atomic
from tlearn.core.progress import Progress, no_progress
from tlearn.core.timing import Deadline, Timer
from tlearn.data.checks import DatasetReport, check_dataset, group_ids
from tlearn.data.labelled import LabelledImages
from tlearn.data.scan import ScannedImages, scan_images
from tlearn.data.sources import Dataset, display_path, load_dataset
from tlearn.data.split import Split, load_split, save_split, split_from_dataset, split_key, stratified_split
from tlearn.data.unlabelled import UnlabelledImages, check_unlabelled_place, load_unlabelled
from tlearn.models.backbones import Backbone, create_backbone
from tlearn.report.page import write_report
from tlearn.training.calibrate import calibrated
from tlearn.training.config import TrainConfig
from tlearn.training.feature_method import for_features
from tlearn.training.features import digest
from tlearn.training.fitted import Fitted
from tlearn.training.label_issues import check_images, issue_rows
from tlearn.training.loop import CHECKPOINT_FILE
from tlearn.training.run_folder import RunFolder, abandon, check_out, open_folder, publish
from tlearn.training.unknown import with_unknown

log = logging.getLogger(__name__)


EpochCallback = Callable[[dict[str, Any]], None]
T = TypeVar("T")


@dataclass(frozen=True)
class TrainResult:
    out: Path  # the run folder, which is the bundle
    method: str
    classes: tuple[str, ...]
    metrics: dict[str, Metrics]  # "val" / "test"
    timings: dict[str, float]  # seconds per stage
    dataset: DatasetReport
    split_counts: dict[str, int]
    details: MethodDetails = field(default_factory=lambda: MethodDetails(""))
    notes: tuple[str, ...] = ()
    label_issues: tuple[LabelIssue, ...] | None = None  # None: labels not checked (scratch, tiny classes)

    @property
    def mislabelled(self) -> int:
        return sum(i.issue == "label" for i in self.label_issues or ())

    @property
    def outliers(self) -> int:
        return sum(i.issue == "outlier" for i in self.label_issues or ())

    @property
    def headline(self) -> tuple[str, Metrics] | None:
        """The part to quote: test if there is one, else validation."""
        for part in ("test", "val"):
            if part in self.metrics:
                return part, self.metrics[part]
        return None

    def _repr_html_(self) -> str:
        """A small table in a notebook: the method, metrics per part and per class, the bundle's path."""
        from tlearn.training.notebook import train_result_html

        return train_result_html(self)


def train(data: str | Path, **options: Any) -> TrainResult:
    """Python entry point: `tlearn.train("photos/", method="features", backbone="resnet50")`.

    Options are TrainConfig's fields. An `out` folder that holds a bundle is refused (OutputError)
    unless `overwrite=True`. Ctrl-C during the epochs of fine-tuning or training from scratch keeps
    the best epoch so far: the bundle is saved and the result returned as usual, with
    `result.details.interrupted` naming the phase it stopped in ("head", "finetune", "scratch");
    `resume=True` with the same `out` goes on from there. Ctrl-C at any other step raises `Interrupted`.

    In a Jupyter notebook it draws a progress bar per stage (tqdm); elsewhere it reports nothing.
    """
    from tlearn.core.notebook import in_notebook, notebook_progress

    progress = notebook_progress() if in_notebook() else no_progress
    return run(TrainConfig(data=Path(data), **options), progress=progress)


def run(
    cfg: TrainConfig, *, progress: Progress = no_progress, on_epoch_end: EpochCallback | None = None
) -> TrainResult:
    with distributed.session(cfg.device):
        try:
            return _run(cfg, progress=progress, on_epoch_end=on_epoch_end)
        except KeyboardInterrupt:  # outside the training steps, which say what they keep
            raise Interrupted("Interrupted.") from None


def _run(cfg: TrainConfig, *, progress: Progress, on_epoch_end: EpochCallback | None) -> TrainResult:
    # The folder's checks are about paths only: they fail before any work.
    _on_main(lambda: check_out(cfg.out, data=cfg.data, overwrite=cfg.overwrite, resume=cfg.resume))
    if cfg.unlabelled is not None:
        check_unlabelled_place(cfg.unlabelled, data=cfg.data)
    deadline = Deadline.after(cfg.budget_seconds)  # the budget covers everything from here to the report
    timer = Timer()
    with timer.stage("load"):
        dataset = load_dataset(cfg.data)
        backbone = _backbone(cfg)
    folder = _on_main(lambda: open_folder(cfg.out, data=cfg.data, overwrite=cfg.overwrite, resume=cfg.resume))
    try:
        return _train(
            cfg, dataset, backbone, folder, timer, progress=progress, on_epoch_end=on_epoch_end, deadline=deadline
        )
    except BaseException:
        if distributed.is_main():
            abandon(folder)
        raise


def _train(
    cfg: TrainConfig,
    dataset: Dataset,
    backbone: Backbone,
    folder: RunFolder,
    timer: Timer,
    *,
    progress: Progress,
    on_epoch_end: EpochCallback | None,
    deadline: Deadline,
) -> TrainResult:
    """Every step after the run folder exists: all of them write into `folder.work`."""
    main, out = distributed.is_main(), folder.work
    # Decode at the working size of the network as the method runs it: the feature method runs
    # convolutional networks above their input size (see for_features). auto decodes for fine-tuning,
    # so that its fine-tuning sees the pixels --method finetune sees; its features scale those pixels
    # up (measured on flowers17, 3 seeds: 95.6% against 95.5% from pixels decoded at the larger size).
    prep = for_features(backbone, cfg).preprocessing if cfg.method == "features" else backbone.preprocessing
    with timer.stage("decode"):
        scanned = scan_images(
            dataset.samples,
            short_side=prep.working_short_side,
            resample=prep.resample,
            progress=progress,
            write_cache=main,
        )
    report = check_dataset(dataset, scanned, min_per_class=cfg.min_per_class)
    if not report.usable:
        raise DataError(f"{cfg.data} cannot be used: {report.problems[0]}", hint=f"Run: tlearn check {cfg.data}")
    split = _resumed_split(out / SPLIT_FILE, scanned, dataset.root) if cfg.resume and cfg.split_file is None else None
    split = split or _split(cfg, dataset, scanned, report)
    data = _labelled(scanned, report, split)
    pool = None
    if cfg.unlabelled is not None:
        if not len(split.val):
            raise ConfigError(
                "--unlabelled needs validation images to choose how many of its guesses to trust. Got none.",
                hint="Keep --val-frac above 0 (or give the dataset a val/ folder).",
            )
        with timer.stage("unlabelled"):
            pool = load_unlabelled(
                cfg.unlabelled, scanned, short_side=prep.working_short_side, resample=prep.resample,
                progress=progress, write_cache=main,
            )  # fmt: skip
    distributed.check_same(
        digest([data.sha256, data.labels.tolist(), [ix.tolist() for ix in split.parts().values()]]),
        "images, labels and split",
        hint="Every process must read the same dataset at the same path: on several machines, the same copy.",
    )
    if main:
        save_split(split, scanned.samples, dataset.root, out / SPLIT_FILE)
        write_json_atomic(out / CHECK_FILE, report.to_dict())

    val_files = [scanned.samples[i].path for i in split.val]
    with timer.stage("fit"):
        fitted = _fit(
            cfg, backbone, data, progress=progress, on_epoch_end=on_epoch_end, folder=folder, deadline=deadline,
            unlabelled=pool,
        )  # fmt: skip
        fitted = calibrated(fitted, data)  # probabilities that mean what they say; no prediction changes
        fitted = with_unknown(  # "not one of my classes", its threshold set as prediction scores validation
            fitted, data, recall=cfg.unknown_recall, seed=cfg.seed,
            val_files=val_files, prep=fitted.preprocessing or backbone.preprocessing,
        )  # fmt: skip
    with timer.stage("evaluate"):
        metrics = {
            part: compute_metrics(data.labels[idx], fitted.proba[part], data.classes)
            for part, idx in split.parts().items()
            if part != "train" and len(idx) and part in fitted.proba
        }
    with timer.stage("labels"):
        issues = _label_issues(cfg, backbone, scanned, report, data, dataset.root, progress)
    if main:
        _write_predictions(out / PREDICTIONS_FILE, scanned, data, fitted, dataset.root)
        if issues is not None:
            write_label_issues(out / LABEL_ISSUES_FILE, issues)
        with timer.stage("save"):
            save_bundle(fitted.classifier, _bundle_config(cfg, backbone, data, fitted, metrics, timer), out)
            publish(folder)
        with timer.stage("report"):
            write_report(folder.final)  # in place: the page names its folder
    return TrainResult(
        out=folder.final,
        method=fitted.details.method,
        classes=data.classes,
        metrics=metrics,
        timings=dict(timer.seconds),
        dataset=report,
        split_counts={p: len(ix) for p, ix in split.parts().items()},
        details=fitted.details,
        notes=split.notes,
        label_issues=None if issues is None else tuple(issues),
    )


def _backbone(cfg: TrainConfig) -> Backbone:
    if cfg.method == "scratch":
        from tlearn.models.scratch_cnn import SCRATCH_ARCH

        return create_backbone(
            SCRATCH_ARCH, weights="none", input_size=cfg.input_size, seed=cfg.seed, warn_random=False
        )
    return create_backbone(cfg.backbone, weights=cfg.weights, input_size=cfg.input_size, seed=cfg.seed)


def _split(cfg: TrainConfig, dataset: Dataset, scanned: ScannedImages, report: DatasetReport) -> Split:
    groups = group_ids(len(scanned), report.duplicates)
    if cfg.split_file is not None:
        split = load_split(cfg.split_file, scanned.samples, dataset.root)
    elif dataset.has_splits:
        split = split_from_dataset(scanned.samples, val_frac=cfg.val_frac, seed=cfg.seed, groups=groups)
    else:
        labels = [s.label for s in scanned.samples]
        split = stratified_split(labels, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.seed, groups=groups)
    if not len(split.train):  # a split file with an empty train part is refused when read
        hint = "Lower --val-frac / --test-frac." if split.origin == "random" else "Add images to its train part."
        raise DataError("The split leaves no images to train on.", hint=hint)
    return split


def _resumed_split(path: Path, scanned: ScannedImages, root: Path) -> Split | None:
    """The split the interrupted run began with (the split.json it wrote first), or None if it left none. A
    new split of a dataset that changed since would move images the checkpoint trained on into val or test."""

    def read() -> Split | str | None:  # on rank 0, whose run folder it is; an error as its text, for the others
        try:
            split = load_split(path, scanned.samples, root) if path.is_file() else None
        except DataError as err:
            return err.message
        began = read_json_object(path) or {}  # the run's own split: random or the dataset's, as it began
        return split if split is None else replace(split, origin=began.get("origin", split.origin))

    split = distributed.from_main(read)
    if isinstance(split, str):
        raise DataError(
            f"Cannot resume: {split[0].lower()}{split[1:]}",
            hint="Put the dataset back as it was when the run began, or start a new run without --resume.",
        )
    return split


def _labelled(scanned: ScannedImages, report: DatasetReport, split: Split) -> LabelledImages:
    index = {c: i for i, c in enumerate(report.classes)}
    return LabelledImages(
        pixels=scanned.pixels,
        labels=np.array([index[s.label] for s in scanned.samples], dtype=np.int64),
        sha256=scanned.sha256,
        classes=report.classes,
        split=split,
    )


def _label_issues(
    cfg: TrainConfig,
    backbone: Backbone,
    scanned: ScannedImages,
    report: DatasetReport,
    data: LabelledImages,
    root: Path,
    progress: Progress,
) -> list[LabelIssue] | None:
    """Every image's label checked against a model cross-validated on its features (cached by the fit
    for the features and auto methods: seconds). The scratch CNN has no pretrained features to judge by."""
    if cfg.method == "scratch":
        return None
    groups = np.array(group_ids(len(scanned), report.duplicates))
    issues = check_images(backbone, data, cfg, groups=groups, progress=progress)
    return None if issues is None else issue_rows(issues, scanned, data, root)


def _fit(
    cfg: TrainConfig,
    backbone: Backbone,
    data: LabelledImages,
    *,
    progress: Progress,
    on_epoch_end: EpochCallback | None,
    folder: RunFolder,
    deadline: Deadline,
    unlabelled: UnlabelledImages | None = None,
) -> Fitted:
    from tlearn.training.auto import fit_auto
    from tlearn.training.feature_method import fit_feature_method
    from tlearn.training.finetune import fit_finetune
    from tlearn.training.scratch import fit_scratch

    method, out = cfg.method, folder.work
    try:
        if method == "auto":
            return fit_auto(
                backbone,
                data,
                cfg,
                out=out,
                progress=progress,
                on_epoch_end=on_epoch_end,
                deadline=deadline,
                unlabelled=unlabelled,
            )
        if method == "features":
            return fit_feature_method(for_features(backbone, cfg), data, cfg, progress=progress, unlabelled=unlabelled)
        if method == "finetune":
            return fit_finetune(
                backbone, data, cfg, out=out, progress=progress, on_epoch_end=on_epoch_end, deadline=deadline
            )
        if method == "scratch":
            return fit_scratch(
                backbone, data, cfg, out=out, progress=progress, on_epoch_end=on_epoch_end, deadline=deadline
            )
        raise TlearnError(f"--method {method} is not available yet.")
    except KeyboardInterrupt:
        if (out / CHECKPOINT_FILE).exists():  # the run folder keeps it (see run_folder.abandon)
            raise Interrupted(
                "Interrupted. The checkpoint of the last finished epoch is kept.",
                hint=f"Add --resume {folder.final} to the command to go on from it.",
            ) from None
        raise Interrupted(
            "Interrupted. Features computed so far are cached.", hint="Run the same command again to go on faster."
        ) from None


def _bundle_config(
    cfg: TrainConfig,
    backbone: Backbone,
    data: LabelledImages,
    fitted: Fitted,
    metrics: dict[str, Metrics],
    timer: Timer,
) -> BundleConfig:
    return BundleConfig(
        classes=data.classes,
        architecture=backbone.architecture,
        backbone=backbone.name,
        create_kwargs=backbone.create_kwargs,
        weights=backbone.weights,
        levels=tuple(fitted.classifier.trunk.levels),
        head=fitted.head,
        preprocessing=fitted.preprocessing or backbone.preprocessing,
        method=fitted.details.method,
        flip_tta=fitted.classifier.flip_tta,
        temperature=fitted.classifier.temperature,
        unknown=None if fitted.classifier.unknown is None else fitted.classifier.unknown.rule,
        details={**fitted.details.to_dict(), "timings": dict(timer.seconds), "config": cfg.to_dict()},
        metrics={part: m.to_dict() for part, m in metrics.items()},
        seed=cfg.seed,
        data=display_path(Path(cfg.data).resolve()),
        command=cfg.command,
    )


def _on_main(make: Callable[[], T]) -> T:
    """`make()` on rank 0 (choosing or checking the run folder), its value or its TlearnError on every rank."""

    def attempt() -> tuple[T | None, tuple[type[TlearnError], str, str | None] | None]:
        try:
            return make(), None
        except TlearnError as err:
            return None, (type(err), err.message, err.hint)
        except OSError as err:  # a folder that cannot be read: every rank says so, none waits
            known = FileSystemError.from_os_error(err)
            if known is None:
                raise
            return None, (FileSystemError, known.message, known.hint)

    value, error = distributed.from_main(attempt)
    if error is not None:
        kind, message, hint = error
        raise kind(message, hint=hint)
    return value  # type: ignore[return-value]


def _write_predictions(path: Path, scanned: ScannedImages, data: LabelledImages, fitted: Fitted, root: Path) -> None:
    """One row per val/test image: the file, its class, the prediction and its confidence."""
    base = root if root.is_dir() else root.parent
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["split", "path", "true", "predicted", "confidence", "true_probability"])
    for part, idx in data.split.parts().items():
        if part == "train" or part not in fitted.proba:
            continue
        for i, p in zip(idx, fitted.proba[part], strict=True):
            sample = scanned.samples[i]
            rel = split_key(sample.path, base)
            pred = int(p.argmax())
            writer.writerow(
                [
                    part,
                    rel,
                    data.classes[data.labels[i]],
                    data.classes[pred],
                    f"{p[pred]:.4f}",
                    f"{p[data.labels[i]]:.4f}",
                ]
            )
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
