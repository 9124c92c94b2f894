"""How a training run shows in a notebook: `TrainResult._repr_html_`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlearn.artifacts.notebook import metrics_by_part_table, per_class_table
from tlearn.core.notebook import html_block, html_facts, html_note

if TYPE_CHECKING:
    from tlearn.training.run import TrainResult


def train_result_html(result: TrainResult) -> str:
    """The method and its summary, the classes, the split, the bundle's path; metrics per part and per class."""
    r = result
    facts = {"method": r.method}
    linear = r.details.linear
    if r.details.summary:
        facts["what was trained"] = r.details.summary
    elif linear is not None:
        strength = f", C {linear.C:.3g}" if linear.C is not None else ""
        facts["what was trained"] = f"a {linear.head} head on {linear.feature_layer} features{strength}"
    facts |= {
        "classes": f"{len(r.classes)}: " + ", ".join(r.classes),
        "split": ", ".join(f"{part} {n:,}" for part, n in r.split_counts.items()),
        "bundle": str(r.out),
        "time": f"{sum(r.timings.values()):.1f} s",
    }
    headline = r.headline
    return html_block(
        f"tlearn run: {r.method} on {r.dataset.root.name}",
        html_facts(facts),
        metrics_by_part_table(r.metrics) if r.metrics else html_note("No validation or test images: no metrics."),
        html_note(f"Per class, on {headline[0]}:") if headline else "",
        per_class_table(headline[1]) if headline else "",
        html_note(f"Why this method: {r.details.auto.explanation}") if r.details.auto is not None else "",
        *(html_note(n) for n in r.notes),
    )
