"""Pictures users look at: charts drawn with matplotlib, readable at a glance, sized for many classes; the grids
of photos (mistakes, right answers, label check) are drawn by `photo_grid`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from tlearn.artifacts.history import HistoryRow, kept_epochs
from tlearn.core.files import atomic_path
from tlearn.core.marks import jpeg_comment, png_metadata
from tlearn.report.photo_grid import TILE, photo_grid

if TYPE_CHECKING:
    from tlearn.artifacts.details import Reliability
    from tlearn.artifacts.label_issues import LabelIssue
    from tlearn.artifacts.predictions import PredictionRow

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868", "?": "#8C8C8C"}
PHASE_LABELS = {"head": "phase 1: head", "finetune": "phase 2: fine-tuning", "scratch": "from scratch"}
ANNOTATE_MAX = 25  # confusion matrices up to this many classes show the number in each cell


def save_figure(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    """Save as PNG (or JPEG for a .jpg path) atomically, and close the figure (never left open)."""
    path = Path(path)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    with atomic_path(path) as tmp:
        # Light PNG compression: pictures are written after every run, where zlib's default level
        # costs a second per picture for files a third smaller.
        # The mark (core/marks.py) tells a later run that this picture is tlearn's to replace.
        if jpeg:
            options, metadata = {"quality": 85, "comment": jpeg_comment()}, None
        else:
            options, metadata = {"compress_level": 1}, png_metadata()
        fig.savefig(
            tmp, format="jpeg" if jpeg else "png", dpi=dpi, bbox_inches="tight", pil_kwargs=options, metadata=metadata
        )
    plt.close(fig)
    return path


def plot_class_counts(
    counts: Mapping[str, int],
    path: Path,
    *,
    split_counts: Mapping[str, Mapping[str, int]] | None = None,
    title: str = "Images per class",
) -> Path:
    """Horizontal bars, one per class (stacked by split when the dataset has splits)."""
    classes = list(counts)
    height = max(2.5, 0.32 * len(classes) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    y = list(range(len(classes)))
    if split_counts:
        left = [0] * len(classes)
        for split in ("train", "val", "test", "?"):
            if split not in split_counts:
                continue
            values = [split_counts[split].get(c, 0) for c in classes]
            ax.barh(y, values, left=left, color=SPLIT_COLOURS[split], label=split)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), frameon=False)  # beside the bars, clear of the counts
    else:
        ax.barh(y, [counts[c] for c in classes], color=SPLIT_COLOURS["train"])
    top = max(counts.values()) if counts else 1
    for yi, c in zip(y, classes, strict=True):
        ax.text(counts[c] + top * 0.01, yi, str(counts[c]), va="center", fontsize=8)
    ax.set_yticks(y, classes, fontsize=9 if len(classes) < 40 else 7)
    ax.set_ylim(len(classes) - 0.5, -0.5)  # first class on top, no empty margin however many classes
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("images")
    ax.set_xlim(0, top * 1.12)
    total = sum(counts.values())
    ax.set_title(f"{title}: {total} images, {len(classes)} classes")
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, path)


def plot_history(rows: Sequence[HistoryRow], path: Path, *, kept: bool = True) -> Path:
    """Accuracy and loss per epoch, train and validation, with phase changes and kept epochs marked.

    Two panels side by side; a dashed vertical line where a phase starts (phase 1 -> phase 2), a ring
    on the validation curve at the epoch whose weights each phase kept. `kept=False`: the bundle holds
    none of these epochs' weights (auto tried fine-tuning and kept the features), so the curves are
    drawn dashed and named "tried, not kept", with no ring.
    """
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = [r.epoch for r in rows]
    has_val = any(r.val_acc is not None for r in rows)
    ringed = kept_epochs(rows) if kept else {}
    style = {"marker": "o", "ms": 3} if kept else {"marker": "o", "ms": 3, "ls": "--", "alpha": 0.8}
    tried = "" if kept else " (tried, not kept)"
    for ax, metric, label in ((acc_ax, "acc", "accuracy"), (loss_ax, "loss", "loss")):
        train = [getattr(r, f"train_{metric}") for r in rows]
        ax.plot(epochs, train, color=SPLIT_COLOURS["train"], label=f"train {label}{tried}", **style)
        if has_val:
            val = [np.nan if (v := getattr(r, f"val_{metric}")) is None else v for r in rows]
            ax.plot(epochs, val, color=SPLIT_COLOURS["val"], label=f"validation {label}{tried}", **style)
            for epoch in ringed.values():
                i = epochs.index(epoch)
                ax.plot([epoch], [val[i]], "o", ms=10, mfc="none", mec="black", mew=1.2)
        _mark_phases(ax, rows)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    handles, labels = acc_ax.get_legend_handles_labels()
    if has_val and ringed:
        handles.append(Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec="black"))
        labels.append("kept weights")
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, 1.06))
    of = "" if kept else " of the fine-tuning tried"
    acc_ax.set_title(f"Accuracy per epoch{of}" + ("" if has_val else " (no validation split)"), loc="left")
    loss_ax.set_title(f"Loss per epoch{of}", loc="left")
    fig.tight_layout()
    return save_figure(fig, path)


def _mark_phases(ax: Axes, rows: Sequence[HistoryRow]) -> None:
    """A dashed line between phases and each phase's name at the top of its stretch."""
    starts: dict[str, int] = {}
    for r in rows:
        starts.setdefault(r.phase, r.epoch)
    if len(starts) < 2:
        return
    for i, (phase, start) in enumerate(starts.items()):
        if i:
            ax.axvline(start - 0.5, color="#555555", ls="--", lw=1)
        ax.text(
            start - 0.5 + 0.2,
            1.0,
            PHASE_LABELS.get(phase, phase),
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize=8,
            color="#555555",
        )


# Methods in the order given get these colours: a method keeps its colour however many are compared.
METHOD_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")


@dataclass(frozen=True)
class MethodCurve:
    """One method on the comparison chart.

    `rows` are its epochs (history.csv); a method that does not train in epochs (the feature method)
    gives `level` instead, its validation accuracy, drawn as a horizontal line. `score` is its final
    accuracy (a fraction) quoted in the legend; `note` replaces it when there is none ("failed").
    """

    label: str
    rows: Sequence[HistoryRow] = ()
    level: float | None = None
    score: float | None = None
    note: str = ""


def plot_comparison(
    curves: Sequence[MethodCurve],
    path: Path,
    *,
    title: str = "Validation accuracy per epoch",
    score_part: str = "test",
    scored_images: int | None = None,
    chance: float | None = None,
) -> Path:
    """Validation accuracy per epoch of several methods on one chart, to see which starts higher,
    climbs faster and ends higher.

    One line per method; where a method changes phase (fine-tuning unfreezing the base) a dotted
    vertical line in its colour says so, and a ring marks the epoch whose weights it kept. Methods
    without epochs are horizontal dashed lines. The legend, beside the chart, gives each method's
    final accuracy on `score_part` (`scored_images` of them: a reminder of how noisy it is); `chance`
    (1 / classes) is a grey dotted line.
    """
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    last_epoch = max((r.epoch for c in curves for r in c.rows), default=1)
    shown: list[float] = [] if chance is None else [chance]
    handles: list[Line2D] = []
    labels: list[str] = []
    rings = False
    for i, curve in enumerate(curves):
        line, label, values, ringed = _draw_method(ax, curve, METHOD_COLOURS[i % len(METHOD_COLOURS)])
        handles.append(line)
        labels.append(label)
        shown += values
        rings = rings or ringed
    if rings:
        handles.append(Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec="#555555"))
        labels.append("kept weights")
    if chance is not None:
        handles.append(ax.axhline(chance, color="#999999", ls=":", lw=1.2))
        labels.append(f"chance ({chance:.0%})")
    if len(shown) <= (0 if chance is None else 1):
        message = "No validation split: nothing to draw per epoch."
        ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#555555")
    _accuracy_axes(ax, low=min(shown, default=0.0), last_epoch=last_epoch)
    legend_title = f"final {score_part} accuracy" + (f" ({scored_images} images)" if scored_images else "")
    ax.legend(
        handles,
        labels,
        title=legend_title,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        alignment="left",
    )
    ax.set_title(title, loc="left")
    fig.tight_layout()
    return save_figure(fig, path)


def _draw_method(ax: Axes, curve: MethodCurve, colour: str) -> tuple[Line2D, str, list[float], bool]:
    """Draw one method: its line, or its level; returns the legend handle and label, the values drawn, and
    whether a ring marks its kept epoch."""
    score = f"{curve.score:.1%}" if curve.score is not None else curve.note or "no score"
    val = [np.nan if r.val_acc is None else r.val_acc for r in curve.rows]
    if curve.rows and not all(np.isnan(val)):
        epochs = [r.epoch for r in curve.rows]
        (line,) = ax.plot(epochs, val, color=colour, marker="o", ms=3.5, lw=2)
        kept = kept_epochs(curve.rows).get(curve.rows[-1].phase)  # the last phase's kept epoch is in the bundle
        at = epochs.index(kept) if kept is not None else None
        ringed = at is not None and not np.isnan(val[at])
        if at is not None and ringed:
            ax.plot([epochs[at]], [val[at]], "o", ms=11, mfc="none", mec=colour, mew=1.5)
        _mark_phase_changes(ax, curve.rows, colour, curve.label)
        return line, f"{curve.label}: {score}", [v for v in val if not np.isnan(v)], ringed
    if curve.level is not None:
        line = ax.axhline(curve.level, color=colour, ls="--", lw=2)
        return line, f"{curve.label}: {score} (one fit, no epochs)", [curve.level], False
    return Line2D([], [], ls="none", marker="x", color=colour), f"{curve.label}: {score}", [], False


def _accuracy_axes(ax: Axes, *, low: float, last_epoch: int) -> None:
    """Epochs 1..last_epoch across, validation accuracy up from a round tenth below `low` to 100%."""
    ax.set_ylim(max(0.0, np.floor((low - 0.05) * 10) / 10), 1.04)
    ax.set_xlim(0.5, last_epoch + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _mark_phase_changes(ax: Axes, rows: Sequence[HistoryRow], colour: str, label: str) -> None:
    """A dotted line in the method's colour where each later phase starts, named at the bottom right of it."""
    starts: dict[str, int] = {}
    for r in rows:
        starts.setdefault(r.phase, r.epoch)
    for phase, start in list(starts.items())[1:]:
        ax.axvline(start - 0.5, color=colour, ls=":", lw=1.3)
        ax.text(
            start - 0.5 + 0.15,
            0.02,
            f"{label} → {PHASE_LABELS.get(phase, phase)}",
            transform=ax.get_xaxis_transform(),
            va="bottom",
            fontsize=8,
            color=colour,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )


def plot_confusion(
    confusion: np.ndarray,
    classes: Sequence[str],
    path: Path,
    *,
    normalise: bool = False,
    title: str | None = None,
) -> Path:
    """The (K, K) confusion matrix, rows the true class; `normalise` shows each row as fractions (recall).

    Cells hold their numbers while they fit (up to ANNOTATE_MAX classes); the figure grows with the
    classes and labels shrink and turn so that 100 class names stay legible.
    """
    k = len(classes)
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    values = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalise else counts
    side = max(4.5, (0.34 if k <= 50 else 0.2) * k + 2.2)  # inches: about 37 px per class, 22 past 50
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    vmax = 1.0 if normalise else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, shrink=min(1.0, 8.0 / side))
    if normalise:
        cbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    else:
        cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    font = 9 if k <= 20 else 7 if k <= 50 else 5
    ax.set_xticks(range(k), classes, rotation=45 if k <= 20 else 90, ha="right" if k <= 20 else "center")
    ax.set_yticks(range(k), classes)
    ax.tick_params(labelsize=font, length=0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= ANNOTATE_MAX:
        for i in range(k):
            for j in range(k):
                if counts[i, j] == 0:
                    continue
                text = f"{values[i, j]:.0%}" if normalise else f"{int(counts[i, j])}"
                dark = values[i, j] > 0.55 * vmax
                ax.text(j, i, text, ha="center", va="center", fontsize=font - 1, color="white" if dark else "black")
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", lw=0.5 if k <= 50 else 0.2)
    ax.tick_params(which="minor", length=0)
    default = "Confusion matrix, share of each true class" if normalise else "Confusion matrix, image counts"
    ax.set_title(title or default, loc="left")
    return save_figure(fig, path)


def plot_mistakes(
    mistakes: Sequence[PredictionRow],
    path: Path,
    *,
    root: Path | None,
    cols: int = 4,
    title: str = "Most confident mistakes",
    overlays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """A grid of images the model got wrong, each titled "true → predicted" with the confidence.

    `mistakes` come in the order to show (worst first, see `worst_mistakes`); their paths are relative
    to `root` (the dataset). A missing or unreadable image becomes a grey tile that says so. An image
    with an entry in `overlays` (by path) shows it instead: the heatmap over the image as the model saw it.
    """
    subtitle = "true class → predicted class (confidence)"
    if overlays:
        subtitle += "; red: where the model saw the predicted class"
    return plot_predictions(mistakes, path, root=root, cols=cols, title=f"{title}: {subtitle}", overlays=overlays)


def plot_predictions(
    rows: Sequence[PredictionRow],
    path: Path,
    *,
    root: Path | None,
    title: str,
    cols: int = 4,
    overlays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """A grid of scored images, each titled "true → predicted" (just the class when right) with the
    confidence and the file; a row's entry in `overlays` (by path) is shown in place of its photo."""
    tiles = []
    for m in rows:
        label = f"{_clip(m.true)} → {_clip(m.predicted)}" if m.wrong else _clip(m.true, 30)
        tiles.append((m.path, f"{label}\n{m.confidence:.1%} · {_clip_left(m.path, 30)}"))
    return image_grid(tiles, path, root=root, cols=cols, title=title, empty="No mistakes", overlays=overlays)


def plot_label_issues(issues: Sequence[LabelIssue], path: Path, *, root: Path | None, cols: int = 4) -> Path:
    """A grid of flagged images: "given → suggested" with the confidence, or "far from every class"."""
    tiles = []
    for i in issues:
        what = (
            f"{_clip(i.given)} → {_clip(i.suggested)} {i.confidence:.0%}"
            if i.issue == "label"
            else f"{_clip(i.given)}: far from every class"
        )
        tiles.append((i.path, f"{what}\n{_clip_left(i.path, 30)}"))
    title = "Label check: given label → suggested label (confidence)"
    return image_grid(tiles, path, root=root, cols=cols, title=title, empty="Nothing flagged")


def image_grid(
    tiles: Sequence[tuple[str, str]],
    path: Path,
    *,
    root: Path | None,
    cols: int,
    title: str,
    empty: str,
    overlays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Images (paths relative to `root`, the dataset) in a grid, each with its two-line caption; an image
    with an entry in `overlays` (by path, uint8 (H, W, 3)) shows that instead."""
    shown = []
    for image, caption in tiles:
        pixels = (overlays or {}).get(image)
        if pixels is None:
            pixels = _thumbnail(Path(image) if root is None else _base(root) / image)
        shown.append((pixels, caption))
    return photo_grid(shown, path, cols=cols, title=title, empty=empty)


def _thumbnail(path: Path) -> np.ndarray | None:
    """The photo's centre square at the grid's size (so tiles line up), or None when it cannot be read."""
    from tlearn.core.errors import ImageError
    from tlearn.data.images import decode_image

    try:
        pixels = decode_image(path, short_side=TILE).pixels
    except ImageError:
        return None
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return pixels[top : top + side, left : left + side]


def _base(root: Path) -> Path:
    return root if root.is_dir() else root.parent


def _clip(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_left(text: str, limit: int) -> str:
    """Keep the end of a path, where the file name is."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def plot_reliability(parts: Sequence[Reliability], path: Path) -> Path:
    """Reliability diagram, one panel per part: accuracy against confidence per bin, before and after the
    temperature. On the diagonal, a confidence of 80% is right 80% of the time; below it, overconfident."""
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 4.2), squeeze=False)
    for ax, r in zip(axes[0], parts, strict=True):
        ax.plot([0, 1], [0, 1], color="#8C8C8C", lw=1, ls=":", label="perfectly calibrated")
        for label, counts, conf, acc, style in (
            (f"before (ECE {r.ece_before:.3f})", r.count_before, r.confidence_before, r.accuracy_before, "before"),
            (f"after (ECE {r.ece_after:.3f})", r.count_after, r.confidence_after, r.accuracy_after, "after"),
        ):
            points = [(c, a, n) for c, a, n in zip(conf, acc, counts, strict=True) if c is not None and a is not None]
            if not points:
                continue
            xs, ys, ns = (list(v) for v in zip(*points, strict=True))
            colour = "#8C8C8C" if style == "before" else SPLIT_COLOURS.get(r.part, "#4C72B0")
            ax.plot(xs, ys, color=colour, ls="--" if style == "before" else "-", lw=1.5, label=label)
            sizes = [20 + 180 * n / max(ns) for n in ns]  # dot area: images in the bin
            ax.scatter(xs, ys, s=sizes, color=colour, alpha=0.5 if style == "before" else 0.85, zorder=3)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("confidence (top class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{r.part}: {r.images} images")
        ax.legend(loc="upper left", fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Reliability: is a confidence of p right p of the time? (dot size: images)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
