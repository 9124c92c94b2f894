"""How metrics show in a notebook: `Metrics._repr_html_`, and the tables the run and evaluation views reuse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tlearn.core.notebook import html_block, html_table, percent

if TYPE_CHECKING:
    from tlearn.artifacts.metrics import Metrics

SUMMARY_HEADER = ("part", "images", "accuracy ± s.e.", "balanced accuracy", "macro F1", "log loss", "calibration error")


def metrics_html(metrics: Metrics, *, title: str = "Metrics") -> str:
    """The headline numbers, then precision, recall and F1 of every class."""
    return html_block(
        f"{title}: {metrics.n:,} images",
        html_table(SUMMARY_HEADER[1:], [_summary_row(metrics)], numeric=range(6)),
        per_class_table(metrics),
    )


def metrics_by_part_table(metrics: Mapping[str, Metrics]) -> str:
    """One row per part of a split ("val", "test"): the headline numbers side by side."""
    return html_table(SUMMARY_HEADER, [[part, *_summary_row(m)] for part, m in metrics.items()], numeric=range(1, 7))


def per_class_table(metrics: Metrics) -> str:
    rows = [[c.name, c.precision_text(), c.recall_text(), c.f1_text(), c.support] for c in metrics.per_class]
    return html_table(("class", "precision", "recall", "F1", "images"), rows, numeric=range(1, 5))


def _summary_row(m: Metrics) -> list[str]:
    return [
        f"{m.n:,}",
        m.accuracy_text(),
        percent(m.balanced_accuracy),
        percent(m.macro_f1),
        f"{m.log_loss:.3f}",
        f"{m.ece:.3f}",
    ]
