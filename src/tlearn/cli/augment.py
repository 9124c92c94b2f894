"""`tlearn augment`: see what an augmentation preset does to your images before training with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlearn.cli import options as opt
from tlearn.cli.app import app
from tlearn.cli.render import console, short_path


@app.command("augment")
def augment(
    data: Annotated[Path, typer.Argument(help="A folder with one subfolder per class, split folders, or a CSV.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("augment_preview.png"),
    preset: opt.Preset = "standard",
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
    hflip: opt.HFlip = None,
    vflip: opt.VFlip = None,
    rotation: opt.Rotation = None,
    zoom: opt.Zoom = None,
    crop_scale: opt.CropScale = None,
    crop_ratio: opt.CropRatio = None,
    no_crop: opt.NoCrop = False,
    translate: opt.Translate = None,
    shear: opt.Shear = None,
    brightness: opt.Brightness = None,
    contrast: opt.Contrast = None,
    saturation: opt.Saturation = None,
    hue: opt.Hue = None,
    grayscale: opt.Grayscale = None,
    blur: opt.Blur = None,
    blur_sigma: opt.BlurSigma = None,
    erasing: opt.Erasing = None,
    fill: opt.Fill = None,
    fill_color: opt.FillColor = None,
    mixup: opt.Mixup = None,
    cutmix: opt.Cutmix = None,
) -> None:
    """Draw a grid of random training views of a few images: the original, then augmented copies."""
    from dataclasses import replace

    from tlearn.data.augment import preset as named_preset
    from tlearn.report.augment_preview import DEFAULT_PREP, write_preview

    cfg = opt.augment_config(
        preset,
        hflip=hflip,
        vflip=vflip,
        rotation=rotation,
        zoom=zoom,
        crop_scale=crop_scale,
        crop_ratio=crop_ratio,
        no_crop=no_crop,
        translate=translate,
        shear=shear,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
        grayscale=grayscale,
        blur=blur,
        blur_sigma=blur_sigma,
        erasing=erasing,
        fill=fill,
        fill_color=fill_color,
        mixup=mixup,
        cutmix=cutmix,
    )
    name = preset.strip().lower()
    if cfg != named_preset(name):
        name += " (changed)"
    prep = DEFAULT_PREP if input_size is None else replace(DEFAULT_PREP, input_size=(input_size, input_size))
    preview = write_preview(data, out, cfg=cfg, name=name, prep=prep, images=images, rows=rows, cols=cols, seed=seed)
    for bad in preview.skipped:
        console.print(f"[yellow]Skipped[/] {short_path(bad.path, Path(data))}: {bad.reason}")
    console.print(f"Augmentation: {', '.join(preview.ops) or 'none'}.")
    if cfg.has_batch_mix:
        console.print("MixUp and CutMix mix images within a training batch; the preview does not show them.")
    (w, h), n = preview.size, len(preview.rows)
    images_x_views = f"{n} image{'s' * (n != 1)} x {preview.cols - 1} view{'s' * (preview.cols != 2)}"
    console.print(f"Wrote {images_x_views} ({w} x {h} px) to [bold]{preview.path}[/].")
