"""predictions.csv: one row per scored image of a run (split, path, true and predicted class, confidence)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PREDICTIONS_FILE = "predictions.csv"


@dataclass(frozen=True)
class PredictionRow:
    """One scored image, as a row of predictions.csv. `confidence` is the probability of `predicted`."""

    split: str
    path: str  # relative to the dataset root when the image lies below it
    true: str
    predicted: str
    confidence: float
    true_probability: float

    @property
    def wrong(self) -> bool:
        return self.true != self.predicted


def read_predictions(path: Path) -> list[PredictionRow]:
    """The rows of a run's predictions.csv; [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            PredictionRow(
                split=row["split"],
                path=row["path"],
                true=row["true"],
                predicted=row["predicted"],
                confidence=float(row["confidence"]),
                true_probability=float(row.get("true_probability") or "nan"),
            )
            for row in csv.DictReader(fh)
        ]


def worst_mistakes(predictions: Iterable[PredictionRow], n: int = 16) -> list[PredictionRow]:
    """The `n` wrong predictions made with the most confidence: the errors most worth looking at."""
    wrong = [p for p in predictions if p.wrong]
    return sorted(wrong, key=lambda p: (-p.confidence, p.path))[:n]
