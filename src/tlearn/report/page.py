"""report.html: one self-contained page per run that shows how good the model is and why.

`write_report(run_dir)` reads what the run saved (tlearn.json, check.json, split.json,
predictions.csv, history.csv, label_issues.csv), draws the pictures into `run_dir/plots/` and writes `report.html`
with those pictures embedded as base64 and its styles inlined, so the file can be mailed or archived
alone. Every part is optional except tlearn.json: a feature run has no curves, a run without a test
part is reported on validation, a run whose dataset has moved shows grey tiles for the mistakes.

The page's frame and styles are package data (assets/report.html, assets/report.css); the sections
are drawn by `tlearn.report.sections`, the run folder is read by `tlearn.report.run_data`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from string import Template

from tlearn.artifacts.predictions import PredictionRow, worst_mistakes
from tlearn.core.files import write_text_atomic
from tlearn.core.notebook import escape
from tlearn.report.heatmaps import CORRECT_PER_CLASS, Tiles, correct_sample, heatmap_tiles
from tlearn.report.model_card import write_model_card
from tlearn.report.run_data import Run, read_run
from tlearn.report.sections import LABEL_ISSUES_SHOWN, MISTAKES_SHOWN, SECTIONS, render_body

__all__ = ["PLOTS_DIR", "REPORT_FILE", "SECTIONS", "draw_pictures", "render_html", "write_report"]

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
PICTURE_FILES = frozenset(
    {
        "class_counts.png",
        "curves.png",
        "confusion.png",
        "confusion_normalised.png",
        "mistakes.jpg",
        "mistakes.png",
        "label_issues.jpg",
        "correct.jpg",
        "reliability.png",
    }
)


def write_report(run_dir: str | Path) -> Path:
    """Draw the pictures into `run_dir/plots/` and write `run_dir/report.html` and the model card
    `run_dir/README.md`; returns the report's path.

    Raises BundleError when `run_dir` has no readable tlearn.json. Rebuilding is safe: files are replaced atomically.
    """
    run = read_run(run_dir)
    tiles = heatmap_tiles(run, [*worst_mistakes(run.predictions, MISTAKES_SHOWN), *correct_sample(run)])
    pictures = draw_pictures(run, run.folder / PLOTS_DIR, tiles=tiles)
    path = run.folder / REPORT_FILE
    write_text_atomic(path, render_html(run, pictures, heatmaps_missing=tiles.missing))
    write_model_card(run)
    return path


def render_html(run: Run, pictures: Mapping[str, Path], *, heatmaps_missing: str = "") -> str:
    """The whole page: the frame of assets/report.html with the styles inlined and every section.
    `heatmaps_missing` says why the tiles have no heatmaps, when they have none."""
    page = Template(_asset("report.html"))
    body = render_body(run, pictures, heatmaps_missing=heatmaps_missing)
    return page.substitute(title=f"tlearn report: {escape(run.name)}", css=_asset("report.css"), body=body)


def draw_pictures(run: Run, out: Path, *, tiles: Tiles | None = None) -> dict[str, Path]:
    """The pictures of the report, by name: counts, curves, confusion, confusion_normalised, mistakes,
    correct (a few right answers per class), label_issues; mistakes and correct show `tiles`' heatmaps."""
    from tlearn.report.plots import (
        plot_class_counts,
        plot_confusion,
        plot_history,
        plot_label_issues,
        plot_mistakes,
        plot_predictions,
        plot_reliability,
    )

    pictures: dict[str, Path] = {}
    counts = (run.check or {}).get("counts") or {}
    if counts:
        split_counts = _split_counts(counts, run.predictions)
        pictures["counts"] = plot_class_counts(counts, out / "class_counts.png", split_counts=split_counts)
    if run.history:
        pictures["curves"] = plot_history(run.history, out / "curves.png", kept=run.epochs_kept)
    part = run.headline
    if part is not None:
        confusion, classes = run.metrics[part].confusion, run.config.classes
        title = f"Confusion matrix on {part}: image counts"
        pictures["confusion"] = plot_confusion(confusion, classes, out / "confusion.png", title=title)
        title = f"Confusion matrix on {part}: share of each true class"
        pictures["confusion_normalised"] = plot_confusion(
            confusion, classes, out / "confusion_normalised.png", normalise=True, title=title
        )
    cal = run.details.calibration
    if cal is not None and cal.reliability:
        pictures["reliability"] = plot_reliability(cal.reliability, out / "reliability.png")
    overlays = tiles.overlays if tiles is not None else None
    mistakes = worst_mistakes(run.predictions, MISTAKES_SHOWN)
    if mistakes:
        # photos: JPEG is a fifth of the PNG's size and quicker to write
        pictures["mistakes"] = plot_mistakes(mistakes, out / "mistakes.jpg", root=run.data, overlays=overlays)
    correct = correct_sample(run)
    if correct:
        title = f"Right answers on {run.headline}, {CORRECT_PER_CLASS} per class"
        if overlays:
            title += "; red: where the model saw the class"
        pictures["correct"] = plot_predictions(
            correct, out / "correct.jpg", root=run.data, title=title, overlays=overlays
        )
    if run.label_issues:
        shown = run.label_issues[:LABEL_ISSUES_SHOWN]
        pictures["label_issues"] = plot_label_issues(shown, out / "label_issues.jpg", root=run.data)
    for name in PICTURE_FILES - {p.name for p in pictures.values()}:  # from an earlier build, now stale
        (out / name).unlink(missing_ok=True)
    return pictures


def _split_counts(counts: Mapping[str, int], predictions: Sequence[PredictionRow]) -> dict[str, dict[str, int]] | None:
    """Images per class in each part of the run's split: val and test from the predictions, train the rest."""
    scored = Counter((p.split, p.true) for p in predictions)
    present = {p.split for p in predictions}
    parts: dict[str, dict[str, int]] = {
        part: {c: scored[part, c] for c in counts} for part in ("val", "test") if part in present
    }
    train = {c: n - sum(p[c] for p in parts.values()) for c, n in counts.items()}
    if not parts or min(train.values()) < 0:
        return None
    return {"train": train, **parts}


@cache
def _asset(name: str) -> str:
    """A file of assets/, read once per process."""
    return (files("tlearn.report") / "assets" / name).read_text(encoding="utf-8")
