"""`tlearn augment`: see what an augmentation preset does to your images before training with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tlearn.cli import options as opt
from tlearn.cli.app import app
from tlearn.cli.render import console, short_path
from tlearn.core.words import count


@app.command("augment")
@opt.option_groups
def augment(
    data: opt.Data,
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("augment_preview.png"),
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", help="Show this file instead of one per class (repeat for more).", metavar="FILE"),
    ] = None,
    rows: Annotated[int, typer.Option(help="Classes to show (one image each).", min=1, max=50)] = 6,
    cols: Annotated[int, typer.Option(help="Columns: the original, then COLS - 1 views.", min=2, max=20)] = 6,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed draws the same views.", min=0)] = 0,
    input_size: Annotated[
        int | None, typer.Option(help="Side of the square model input in pixels (default 224).", min=16)
    ] = None,
    flags: opt.AugmentFlags,  # --preset, --hflip ... --cutmix, expanded by @opt.option_groups
) -> None:
    """Draw a grid of random training views of a few images: the original, then augmented copies."""
    from dataclasses import replace

    from tlearn.data.augment import preset as named_preset
    from tlearn.report.augment_preview import DEFAULT_PREP, write_preview

    cfg = flags.config()
    name = flags.preset.strip().lower()
    if cfg != named_preset(name):
        name += " (changed)"
    prep = DEFAULT_PREP if input_size is None else replace(DEFAULT_PREP, input_size=(input_size, input_size))
    preview = write_preview(data, out, cfg=cfg, name=name, prep=prep, images=images, rows=rows, cols=cols, seed=seed)
    for bad in preview.skipped:
        console.print(f"[yellow]Skipped[/] {escape(short_path(bad.path, Path(data)))}: {escape(bad.reason)}")
    console.print(f"Augmentation: {', '.join(preview.ops) or 'none'}.")
    if cfg.has_batch_mix:
        console.print("MixUp and CutMix mix images within a training batch; the preview does not show them.")
    (w, h), n = preview.size, len(preview.rows)
    images_x_views = f"{count(n, 'image')} x {count(preview.cols - 1, 'view')}"
    console.print(f"Wrote {images_x_views} ({w} x {h} px) to [bold]{preview.path}[/].")
