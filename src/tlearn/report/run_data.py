"""A run folder read once into a frozen `Run`: everything the report shows comes from here.

Only tlearn.json is required; it is read as the bundle's own `BundleConfig`, so the report sees the
same typed fields as the code that loads the model. The other files are optional: a feature run has
no history.csv, a run folder copied without its dataset check has no check.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tlearn.artifacts.bundle import CHECK_FILE, CONFIG_FILE, SPLIT_FILE, BundleConfig
from tlearn.artifacts.history import HISTORY_FILE, HistoryRow, not_kept, read_history
from tlearn.artifacts.label_issues import LABEL_ISSUES_FILE, LabelIssue, read_label_issues
from tlearn.artifacts.metrics import Metrics
from tlearn.artifacts.predictions import PREDICTIONS_FILE, PredictionRow, read_predictions
from tlearn.core.errors import BundleError
from tlearn.core.files import read_json, read_json_object
from tlearn.report.details import MethodDetails, read_details


@dataclass(frozen=True)
class Run:
    """What a run folder holds. `metrics` are by part ("val", "test"); `details` is the method's own record."""

    folder: Path
    config: BundleConfig
    details: MethodDetails = field(default_factory=MethodDetails)
    metrics: dict[str, Metrics] = field(default_factory=dict)
    check: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    predictions: list[PredictionRow] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    label_issues: list[LabelIssue] | None = None  # None: the run did not check its labels

    @property
    def epochs_kept(self) -> bool:
        """Whether the bundle's weights come from the epochs of history.csv. Not when auto tried fine-tuning
        and kept the features: tlearn.json's method is then "features" (its head is fitted in one step, no
        epochs) and history.csv holds the fine-tuning tried."""
        return self.config.method != "features"

    @property
    def headline(self) -> str | None:
        """The part to quote: test when there is one, else validation."""
        return next((p for p in ("test", "val") if p in self.metrics), None)

    @property
    def data(self) -> Path | None:
        return Path(self.config.data) if self.config.data else None

    @property
    def name(self) -> str:
        """The dataset's name, the method and the folder: "flowers: finetune, in run-3"; without the folder
        where it repeats the dataset's name ("flowers: features" for runs/flowers)."""
        data, folder = self.data, self.folder.name
        dataset = data.stem if data else folder
        where = "" if folder == dataset else f", in {folder}"
        return f"{dataset}: {self.config.method or '?'}{where}"


def read_run(run_dir: str | Path) -> Run:
    """Read a run folder; raises BundleError when it has no readable, complete tlearn.json."""
    folder = Path(run_dir).expanduser()
    config = _read_config(folder / CONFIG_FILE)
    run = Run(
        folder=folder,
        config=config,
        details=read_details(config.details or {}),
        metrics={part: Metrics.from_dict(d) for part, d in config.metrics.items()},
        check=read_json_object(folder / CHECK_FILE),
        split=read_json_object(folder / SPLIT_FILE),
        predictions=read_predictions(folder / PREDICTIONS_FILE),
        history=read_history(folder / HISTORY_FILE),
        label_issues=read_label_issues(folder / LABEL_ISSUES_FILE),
    )
    # Runs of earlier versions marked the best epochs of the fine-tuning tried as if they were kept.
    return run if run.epochs_kept else replace(run, history=not_kept(run.history))


def _read_config(path: Path) -> BundleConfig:
    if not path.is_file():
        raise BundleError(
            f"{path.parent} is not a run folder: it has no {CONFIG_FILE}.",
            hint="Pass the folder that `tlearn train` wrote (--out).",
        )
    try:
        raw = read_json(path)
    except (OSError, ValueError) as err:
        raise BundleError(f"Cannot read {path}: {err}.") from None
    try:
        return BundleConfig.from_dict(raw)
    except KeyError as err:
        raise BundleError(
            f"Cannot read {path}: it has no {err.args[0]!r} field.",
            hint="It was not written by `tlearn train`, or was edited by hand: train again to get a complete one.",
        ) from None
    except (TypeError, ValueError, AttributeError) as err:
        raise BundleError(f"Cannot read {path}: {err}.") from None
