"""history.csv: one row per epoch of a run that trains in epochs, the one schema its writer and readers share.

The training loop writes it after every epoch (atomically, so Ctrl-C never leaves half a file); the
report, its diagnosis and `tlearn compare` read it back. Numbers are written with 6 significant
digits and a missing value (no validation split) as an empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tlearn.core.files import atomic_path

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ("phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "best")


@dataclass(frozen=True)
class HistoryRow:
    """One epoch of history.csv. Accuracies are fractions (0 to 1), `lr` the last group's rate, `seconds` wall time.

    `phase` is "head" (frozen backbone), "finetune" (unfrozen stages) or "scratch"; `epoch` counts from 1
    across phases; `best` marks an epoch whose weights were the best so far in its phase, on the way to the
    kept model: the last one marked in each phase is what the phase kept. Fine-tuning that auto tried and
    did not keep (it kept the features) has no row marked: none of its weights are in the bundle.
    """

    phase: str
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None = None
    val_acc: float | None = None
    lr: float = 0.0
    seconds: float = 0.0
    best: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistoryRow:
        """From a CSV row (strings, "" for missing) or a row dict of the training loop (numbers, None)."""
        return cls(
            phase=str(d.get("phase") or "train"),
            epoch=int(float(d["epoch"])),
            train_loss=_number(d.get("train_loss")) or 0.0,
            train_acc=_number(d.get("train_acc")) or 0.0,
            val_loss=_number(d.get("val_loss")),
            val_acc=_number(d.get("val_acc")),
            lr=_number(d.get("lr")) or 0.0,
            seconds=_number(d.get("seconds")) or 0.0,
            best=str(d.get("best", "")).strip().lower() in ("1", "1.0", "true", "yes"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The row as the training loop keeps it: numbers, None for a missing value, `best` as 0 or 1."""
        return {
            "phase": self.phase,
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "lr": self.lr,
            "seconds": self.seconds,
            "best": int(self.best),
        }


def write_history(path: Path, rows: Iterable[HistoryRow]) -> None:
    """Replace `path` with these rows, atomically (it is rewritten after every epoch)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.to_dict().items()})
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def read_history(path: Path) -> list[HistoryRow]:
    """The rows of a history.csv; [] when the file does not exist (methods that do not train in epochs)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [HistoryRow.from_dict(row) for row in csv.DictReader(fh) if row.get("epoch")]


def kept_epochs(rows: Sequence[HistoryRow]) -> dict[str, int]:
    """Phase -> the epoch whose weights the phase kept (its last row marked best), in phase order; a phase
    with no row marked kept nothing (see `not_kept`)."""
    kept: dict[str, int] = {}
    for r in rows:
        if r.best:
            kept[r.phase] = r.epoch
    return kept


def not_kept(rows: Iterable[HistoryRow]) -> list[HistoryRow]:
    """The rows of a training that was tried and not kept (auto kept the features instead): none marked
    best, since no epoch's weights are in the bundle."""
    return [replace(r, best=False) for r in rows]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return float(value)
