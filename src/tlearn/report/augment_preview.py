"""A picture of what augmentation does: for a few images, the original and several random views.

`write_preview` picks one image per class (the first readable one, so the choice is stable) or the
files it is given, makes the eval view and `cols - 1` seeded training views of each, and draws them
in a grid, one row per image, titled with the preset and its active ops. The PNG's pixel size
depends only on the number of rows and columns (`preview_size`), never on the images or labels.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tlearn.core.errors import ConfigError, DataError, ImageError
from tlearn.core.marks import is_tlearn_picture, refuse_to_replace
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import (
    AugmentConfig,
    Transform,
    augmented_view,
    build_eval_transform,
    build_train_transform,
    describe,
    view_seed,
)
from tlearn.data.images import decode_image
from tlearn.data.scan import Unreadable
from tlearn.data.sources import Dataset, Sample, load_dataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A preview needs no backbone: the usual 224 px input, cropped as most ImageNet models are.
DEFAULT_PREP = Preprocessing((224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875)

# Layout in pixels at DPI. Each image gets a cell of CELL_W x CELL_H (a 224 px view at about its
# own resolution), each row a label line above its images, the figure a header: the title, up to
# three lines of ops and a note.
DPI = 100
CELL_W = 232
CELL_H = 232
LABEL_H = 26
HEADER_H = 104
# save_figure's tight bounding box adds pad_inches (0.1) on every side.
PAD = 10
# matplotlib truncates the canvas size to whole pixels: half a pixel extra keeps float rounding
# from ever cutting one off.
_HALF = 0.5


def preview_size(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for `rows` images and `cols` columns."""
    return cols * CELL_W + 2 * PAD, HEADER_H + rows * (LABEL_H + CELL_H) + 2 * PAD


@dataclass(frozen=True)
class PreviewRow:
    """One image: `original` is the eval view, `views` the training views, uint8 (H, W, 3) each."""

    label: str
    path: Path
    original: np.ndarray
    views: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Preview:
    path: Path
    size: tuple[int, int]  # (width, height) in pixels
    rows: tuple[tuple[str, Path], ...]  # (label, file) of each row
    cols: int
    ops: tuple[str, ...]
    skipped: tuple[Unreadable, ...]  # files that could not be read and were passed over


def write_preview(
    data: str | Path,
    out: str | Path,
    *,
    cfg: AugmentConfig,
    name: str = "custom",
    prep: Preprocessing = DEFAULT_PREP,
    images: Sequence[Path] | None = None,
    rows: int = 6,
    cols: int = 6,
    seed: int = 0,
) -> Preview:
    """Write the preview grid of dataset `data` to the PNG `out`; `name` titles it (the preset's).

    Without `images`, shows the first readable image of each class, for the first `rows` classes;
    with `images`, shows those files (all of them), labelled with their class in `data` when they
    belong to it, else with their folder's name. Raises DataError when nothing can be shown.
    """
    if cols < 2:
        raise ConfigError(f"--cols must be at least 2 (the original and one view). Got {cols}.")
    if rows < 1:
        raise ConfigError(f"--rows must be at least 1. Got {rows}.")
    refuse_to_replace(Path(out), ours=is_tlearn_picture, option="--out", what="a picture")
    dataset = load_dataset(data)
    if images:
        picked, skipped = _given_images(dataset, images, prep)
    else:
        picked, skipped = _one_per_class(dataset, prep, rows=rows)
    if not picked:
        where = "of the given files" if images else f"in {dataset.root}"
        raise DataError(f"No readable image {where} to preview.", hint="Run tlearn check to see why.")
    train, evaluate = build_train_transform(cfg, prep), build_eval_transform(prep)
    grid = [
        _make_row(sample, pixels, train, evaluate, cols=cols, seed=seed, index=i)
        for i, (sample, pixels) in enumerate(picked)
    ]
    ops = describe(cfg)
    path = plot_preview(grid, Path(out), title=f"Augmentation preview: {name}", ops=ops, seed=seed)
    return Preview(
        path=path,
        size=preview_size(len(grid), cols),
        rows=tuple((r.label, r.path) for r in grid),
        cols=cols,
        ops=tuple(ops),
        skipped=tuple(skipped),
    )


def _decode(sample: Sample, prep: Preprocessing) -> np.ndarray | Unreadable:
    try:
        return decode_image(sample.path, short_side=prep.working_short_side, resample=prep.resample).pixels
    except ImageError as err:
        return Unreadable(sample.path, sample.label, err.message)


def _one_per_class(
    dataset: Dataset, prep: Preprocessing, *, rows: int
) -> tuple[list[tuple[Sample, np.ndarray]], list[Unreadable]]:
    """First readable image of each class (training split first), in class order, up to `rows`."""
    picked: list[tuple[Sample, np.ndarray]] = []
    skipped: list[Unreadable] = []
    ordered = sorted(dataset.samples, key=lambda s: s.split not in (None, "train"))  # stable
    for label in dataset.classes[:rows]:
        for sample in (s for s in ordered if s.label == label):
            result = _decode(sample, prep)
            if isinstance(result, Unreadable):
                skipped.append(result)
                continue
            picked.append((sample, result))
            break
    return picked, skipped


def _given_images(
    dataset: Dataset, images: Sequence[Path], prep: Preprocessing
) -> tuple[list[tuple[Sample, np.ndarray]], list[Unreadable]]:
    labels = {s.path.resolve(): s.label for s in dataset.samples}
    picked: list[tuple[Sample, np.ndarray]] = []
    skipped: list[Unreadable] = []
    for path in map(Path, images):
        sample = Sample(path, labels.get(path.resolve(), path.resolve().parent.name))
        result = _decode(sample, prep)
        if isinstance(result, Unreadable):
            skipped.append(result)
        else:
            picked.append((sample, result))
    return picked, skipped


def _make_row(
    sample: Sample,
    pixels: np.ndarray,
    train: Transform,
    evaluate: Transform,
    *,
    cols: int,
    seed: int,
    index: int,
) -> PreviewRow:
    """The eval view and `cols - 1` training views; view k of row i is seeded by (seed, i, k)."""
    original = evaluate(pixels)
    views = [augmented_view(pixels, train, seed=view_seed(seed, index, k)) for k in range(cols - 1)]
    return PreviewRow(sample.label, sample.path, _to_uint8(original), tuple(_to_uint8(v) for v in views))


def _to_uint8(chw: torch.Tensor) -> np.ndarray:
    """Float (3, H, W) in [0, 1] -> uint8 (H, W, 3) for drawing."""
    return (chw.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def plot_preview(grid: Sequence[PreviewRow], path: Path, *, title: str, ops: Sequence[str], seed: int) -> Path:
    """Draw the grid: a header, then per image a label line and its views. Size: `preview_size`."""
    import matplotlib.pyplot as plt

    from tlearn.report.plots import save_figure

    rows, cols = len(grid), 1 + len(grid[0].views)
    width, height = cols * CELL_W + _HALF, HEADER_H + rows * (LABEL_H + CELL_H) + _HALF
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    # An empty axes over the whole figure pins the tight bounding box to the figure's own edges.
    fig.add_axes((0, 0, 1, 1), zorder=-1).set_axis_off()

    chars = int(cols * CELL_W / 6.2)  # characters of 9 pt text that fit across the figure
    op_text = " · ".join(ops) if ops else "no augmentation: training sees the eval view"
    op_lines = textwrap.wrap(op_text, chars, max_lines=3, placeholder=" …")
    views = "1 random training view" if cols == 2 else f"{cols - 1} random training views"
    note = f"Left: the original, as evaluation sees it. Then {views} (seed {seed})."
    _text(fig, 8, 6, title, size=13, weight="bold", chars=int(cols * CELL_W / 8.5))
    _text(fig, 8, 32, "\n".join(op_lines), size=9)
    _text(fig, 8, 36 + 16 * len(op_lines), note, size=8, color="#555555", chars=int(cols * CELL_W / 5.2))

    for r, row in enumerate(grid):
        top = HEADER_H + r * (LABEL_H + CELL_H)
        label = f"{row.label}  ·  {row.path.name}"
        _text(fig, 8, top + 6, label, size=9, weight="bold", chars=int(cols * CELL_W / 6.5))
        for c, img in enumerate((row.original, *row.views)):
            ax = fig.add_axes(_cell_box(c * CELL_W + 4, top + LABEL_H, CELL_W - 8, CELL_H - 8, width, height))
            ax.imshow(img, interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            edge = "#333333" if c == 0 else "#bbbbbb"  # the original framed darker than the views
            for spine in ax.spines.values():
                spine.set_edgecolor(edge)
                spine.set_linewidth(1.5 if c == 0 else 0.8)
    return save_figure(fig, path, dpi=DPI)


def _cell_box(x: float, y: float, w: float, h: float, fig_w: float, fig_h: float) -> tuple[float, float, float, float]:
    """A box given in pixels from the top-left corner, as matplotlib's (left, bottom, width, height)."""
    return (x / fig_w, 1 - (y + h) / fig_h, w / fig_w, h / fig_h)


def _text(fig: Figure, x: float, y: float, text: str, *, chars: int | None = None, **style: Any) -> None:
    """Text with its top-left corner at pixel (x, y) from the figure's top-left, cut to `chars`."""
    if chars is not None and len(text) > chars:
        text = text[: chars - 1] + "…"
    fig_w, fig_h = fig.get_figwidth() * DPI, fig.get_figheight() * DPI
    fig.text(x / fig_w, 1 - y / fig_h, text, ha="left", va="top", **style)
