"""Pictures users look at: PNGs drawn with matplotlib, readable at a glance, sized for many classes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tlearn.files import atomic_path

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868", "?": "#8C8C8C"}


def save_figure(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    """Save as PNG atomically and close the figure (figures are never left open)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
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
        ax.legend(loc="lower right", frameon=False)
    else:
        ax.barh(y, [counts[c] for c in classes], color=SPLIT_COLOURS["train"])
    top = max(counts.values()) if counts else 1
    for yi, c in zip(y, classes, strict=True):
        ax.text(counts[c] + top * 0.01, yi, str(counts[c]), va="center", fontsize=8)
    ax.set_yticks(y, classes, fontsize=9 if len(classes) < 40 else 7)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_xlim(0, top * 1.12)
    total = sum(counts.values())
    ax.set_title(f"{title}: {total} images, {len(classes)} classes")
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, path)
