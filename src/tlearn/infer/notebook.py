"""How evaluations and predictions show in a notebook: `Evaluation._repr_html_`, `Predictions._repr_html_`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlearn.artifacts.notebook import metrics_by_part_table, per_class_table
from tlearn.core.notebook import html_block, html_facts, html_note, html_table, percent

if TYPE_CHECKING:
    from tlearn.infer.evaluate import Evaluation
    from tlearn.infer.results import Predictions

MISTAKES_SHOWN = 10


def evaluation_html(evaluation: Evaluation) -> str:
    """What was scored, the metrics, each class, the most confident mistakes and what was left out."""
    e = evaluation
    facts = {
        "bundle": e.bundle,
        "images": e.source,
        "mirror averaging (tta)": "yes" if e.tta else "no",
        "wrong": f"{e.n_wrong:,} of {e.metrics.n:,}",
    }
    if e.unreadable:
        facts["unreadable, skipped"] = f"{len(e.unreadable):,}"
    if e.unknown:
        facts["left out (classes the bundle does not know)"] = ", ".join(f"{c} ({n})" for c, n in e.unknown.items())
    if e.missing:
        facts["files of the split no longer there"] = f"{len(e.missing):,}"
    mistakes = e.mistakes(MISTAKES_SHOWN)
    rows = [[m.path, m.true, m.predicted, percent(m.confidence)] for m in mistakes]
    return html_block(
        f"Evaluation on {e.split}",
        html_facts(facts),
        metrics_by_part_table({e.split: e.metrics}),
        per_class_table(e.metrics),
        html_note(f"The {len(mistakes)} most confident mistakes:") if mistakes else "",
        html_table(("image", "true", "predicted", "confidence"), rows, numeric=(3,)) if mistakes else "",
        *(html_note(n) for n in e.notes),
    )


def predictions_html(predictions: Predictions) -> str:
    """One row per image: its top-k classes with their probabilities; then the inputs that failed and why."""
    p = predictions
    k = max((len(item.top) for item in p.items), default=0)
    header = ["image", *(f"top {i + 1}" for i in range(k))]
    rows = [
        [item.source, *(f"{s.label} ({percent(s.probability)})" for s in item.top), *([""] * (k - len(item.top)))]
        for item in p.items
    ]
    title = f"Predictions: {len(p.items):,} image{'' if len(p.items) == 1 else 's'}"
    if p.failures:
        title += f", {len(p.failures):,} failed"
    failures = [[f.source, f.reason] for f in p.failures]
    return html_block(
        title + f" ({p.seconds:.1f} s)",
        html_table(header, rows) if rows else "",
        html_note("Failed:") if failures else "",
        html_table(("image", "reason"), failures) if failures else "",
    )
