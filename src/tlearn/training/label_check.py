"""`tlearn check DATA --labels`: the dataset check, then every label checked against the features.

The images are decoded once, at the size the feature method works at, and serve both the usual
checks and the features, which land in the same cache `tlearn train` reads: checking first makes
the training run after it cheaper, not dearer. The list is the one `tlearn train` counts in its
summary for the same backbone options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlearn.artifacts.label_issues import LabelIssue, replaceable, write_label_issues
from tlearn.core.marks import refuse_to_replace
from tlearn.core.progress import Progress, no_progress
from tlearn.data.checks import DatasetReport, check_dataset, group_ids
from tlearn.data.labelled import LabelledImages
from tlearn.data.scan import scan_images
from tlearn.data.sources import load_dataset
from tlearn.data.split import Split
from tlearn.models.backbones import create_backbone
from tlearn.training.config import TrainConfig
from tlearn.training.feature_method import for_features
from tlearn.training.label_issues import check_images, issue_rows


@dataclass(frozen=True)
class LabelCheck:
    """The dataset check, the flagged images (most certain first) and where the CSV went."""

    dataset: DatasetReport
    issues: tuple[LabelIssue, ...] | None  # None: some class has fewer than two images
    backbone: str
    csv: Path | None

    @property
    def mislabelled(self) -> tuple[LabelIssue, ...]:
        return tuple(i for i in self.issues or () if i.issue == "label")

    @property
    def outliers(self) -> tuple[LabelIssue, ...]:
        return tuple(i for i in self.issues or () if i.issue == "outlier")


def check_labels(
    cfg: TrainConfig, *, csv: Path | None, min_per_class: int = 10, progress: Progress = no_progress
) -> LabelCheck:
    """Check `cfg.data` and its labels with `cfg`'s backbone options; write the CSV to `csv` (if given).

    A dataset that cannot be used (no images, one class) is reported, not checked further. A `csv` that
    holds anything but an earlier list is refused before any work: the check never replaces a user's file.
    """
    if csv is not None:
        refuse_to_replace(csv, ours=replaceable, option="--csv", what="a list")
    dataset = load_dataset(cfg.data)
    backbone = create_backbone(cfg.backbone, weights=cfg.weights, input_size=cfg.input_size, seed=cfg.seed)
    prep = for_features(backbone, cfg).preprocessing
    scanned = scan_images(
        dataset.samples, short_side=prep.working_short_side, resample=prep.resample, progress=progress
    )
    report = check_dataset(dataset, scanned, min_per_class=min_per_class)
    if not report.usable:
        return LabelCheck(report, None, backbone.name, None)
    index = {c: i for i, c in enumerate(report.classes)}
    n = len(scanned)
    everything = np.arange(n, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    data = LabelledImages(
        pixels=scanned.pixels,
        labels=np.array([index[s.label] for s in scanned.samples], dtype=np.int64),
        sha256=scanned.sha256,
        classes=report.classes,
        split=Split(train=everything, val=none, test=none),
    )
    groups = np.array(group_ids(n, report.duplicates))
    found = check_images(backbone, data, cfg, groups=groups, progress=progress)
    if found is None:
        return LabelCheck(report, None, backbone.name, None)
    rows = tuple(issue_rows(found, scanned, data, dataset.root))
    if csv is not None:
        write_label_issues(csv, rows)  # a folder that cannot be written: FileSystemError in the CLI
    return LabelCheck(report, rows, backbone.name, csv)
