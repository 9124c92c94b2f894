"""`tlearn train`: photos in, a trained model bundle out.

Under torchrun (`torchrun --nproc-per-node N -m tlearn train ...`) every process runs this command;
rank 0 alone draws the progress bars and prints the epochs and the summary, the others stay quiet.
"""

from __future__ import annotations

import logging
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from tlearn.cli import options as opt
from tlearn.cli.app import app
from tlearn.cli.render import console, progress_bar, short_path
from tlearn.core.progress import no_progress

if TYPE_CHECKING:
    from tlearn.training.run import TrainResult

FT = "Fine-tuning (--method finetune, scratch, auto)"
FEAT = "Feature method (--method features, auto)"


def _ft(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=FT)


def _feat(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=FEAT)


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="A folder with one subfolder per class, split folders, or a CSV.")],
    method: Annotated[str, typer.Option(help="auto, features, finetune or scratch.")] = "auto",
    backbone: Annotated[str | None, typer.Option(help="A timm model name (tlearn backbones lists them).")] = None,
    weights: Annotated[
        str | None, typer.Option(help="Local weights file (.safetensors, .pth), or 'none' for random init.")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Model input side in pixels (default: the weights').")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<data name>).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (split, augmentation, training).")] = 0,
    val_frac: Annotated[float, typer.Option(help="Fraction of images for validation.")] = 0.15,
    test_frac: Annotated[float, typer.Option(help="Fraction of images for the test.")] = 0.15,
    split_file: Annotated[Path | None, typer.Option(help="Reuse the split.json of an earlier run.")] = None,
    class_weight: Annotated[str, typer.Option(help="none, or balanced for imbalanced classes.")] = "none",
    tta: Annotated[bool, typer.Option(help="Average predictions with the mirror image (when --hflip).")] = True,
    batch_size: Annotated[
        int, typer.Option(help="Images per batch (per training step of all processes together under torchrun).")
    ] = 32,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto, bf16 or fp32. auto: bf16 frozen layers on CPUs that have it; mixed precision on GPUs."
        ),
    ] = "auto",
    time_budget: Annotated[str | None, typer.Option(help="Cap for auto's fine-tuning time, e.g. 10m or 90s.")] = None,
    feature_layer: Annotated[str, _feat("--feature-layer", help="last, or level numbers like 3 or 2,3.")] = "last",
    views: Annotated[
        int | None,
        typer.Option(help="Augmented views per training image, computed once (default: 0 features, 6 finetune)."),
    ] = None,
    head: Annotated[str, _feat("--head", help="logistic, svm or softmax.")] = "logistic",
    c: Annotated[float | None, _feat("--C", help="Inverse regularisation (default: chosen by CV).")] = None,
    head_epochs: Annotated[int, _ft("--head-epochs", help="Phase 1 (frozen base) epochs.")] = 30,
    head_lr: Annotated[float, _ft("--head-lr", help="Phase 1 learning rate.")] = 1e-3,
    epochs: Annotated[int | None, _ft("--epochs", help="Phase 2 epochs (default 12; 40 from scratch).")] = None,
    lr: Annotated[
        float | None, _ft("--lr", help="Phase 2 rate of the last stage (default 3e-4; 1e-3 from scratch).")
    ] = None,
    lr_decay: Annotated[float, _ft("--lr-decay", help="Each earlier stage's rate times this.")] = 0.7,
    unfreeze: Annotated[str, _ft("--unfreeze", help="Stages to unfreeze in phase 2: a number or all.")] = "2",
    weight_decay: Annotated[float, _ft("--weight-decay", help="AdamW weight decay (L2).")] = 1e-4,
    label_smoothing: Annotated[float, _ft("--label-smoothing", help="Label smoothing.")] = 0.1,
    dropout: Annotated[float, _ft("--dropout", help="Dropout before the head.")] = 0.2,
    hidden: Annotated[int, _ft("--hidden", help="Width of a hidden layer in the head (0 = none).")] = 0,
    schedule: Annotated[str, _ft("--schedule", help="cosine, onecycle, step, constant or exponential.")] = "cosine",
    warmup_epochs: Annotated[int, _ft("--warmup-epochs", help="Linear warm-up epochs (cosine).")] = 1,
    patience: Annotated[int, _ft("--patience", help="Early stopping patience (epochs).")] = 5,
    resume: Annotated[Path | None, _ft("--resume", help="Continue the interrupted run in this folder.")] = None,
    preset: opt.Preset = "standard",
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
    """Train a classifier on DATA and save it as a bundle (a folder) with its metrics."""
    from tlearn.training.config import FinetuneConfig, TrainConfig
    from tlearn.training.run import run

    augment = opt.augment_config(
        preset, hflip=hflip, vflip=vflip, rotation=rotation, zoom=zoom, crop_scale=crop_scale,
        crop_ratio=crop_ratio, no_crop=no_crop, translate=translate, shear=shear, brightness=brightness,
        contrast=contrast, saturation=saturation, hue=hue, grayscale=grayscale, blur=blur,
        blur_sigma=blur_sigma, erasing=erasing, fill=fill, fill_color=fill_color, mixup=mixup, cutmix=cutmix,
    )  # fmt: skip
    finetune = FinetuneConfig(
        head_epochs=head_epochs, head_lr=head_lr, epochs=epochs, lr=lr, lr_decay=lr_decay,
        unfreeze=_unfreeze(unfreeze), weight_decay=weight_decay, label_smoothing=label_smoothing,
        dropout=dropout, hidden=hidden, schedule=schedule, warmup_epochs=warmup_epochs, patience=patience,
    )  # fmt: skip
    cfg = TrainConfig(
        data=data, out=resume or out, method=method, backbone=backbone, weights=weights, input_size=input_size,
        seed=seed, val_frac=val_frac, test_frac=test_frac, split_file=split_file, batch_size=batch_size,
        feature_layer=feature_layer, views=views, head=head, C=c, class_weight=class_weight, tta=tta,
        augment=augment, finetune=finetune, time_budget=parse_duration(time_budget), resume=resume is not None,
        device=device, precision=precision, command=shlex.join(["tlearn", *sys.argv[1:]]),
    )  # fmt: skip
    main = quiet_unless_main()
    with progress_bar() if main else nullcontext(no_progress) as progress:
        result = run(cfg, progress=progress, on_epoch_end=print_epoch if main else None)
    if main:
        render_result(result)


def quiet_unless_main() -> bool:
    """Is this process rank 0 of its torchrun job (or alone)? Other ranks log errors only."""
    from tlearn.core.distributed import launched_world

    rank, _ = launched_world()
    if rank != 0:
        logging.getLogger("tlearn").setLevel(logging.ERROR)
    return rank == 0


def print_epoch(row: dict[str, Any]) -> None:
    """One line per epoch: phase, epoch, train and val loss / accuracy, learning rate, time; * = kept."""
    if row["epoch"] == 1:
        console.print("  phase     epoch  train loss   acc   val loss   acc      lr     time", style="dim")
    val = f"{row['val_loss']:8.3f} {row['val_acc']:6.1%}" if row.get("val_loss") is not None else "       -      -"
    best = " *" if row.get("best") else ""
    console.print(
        f"  {row['phase']:<9}{row['epoch']:>5}  {row['train_loss']:9.3f} {row['train_acc']:6.1%}"
        f" {val}  {row['lr']:.1e} {row['seconds']:6.1f}s{best}",
        highlight=False,
    )


def render_result(result: TrainResult) -> None:
    report = result.dataset
    counts = result.split_counts
    console.print(
        f"[bold]{report.total:,}[/] images in [bold]{len(result.classes)}[/] classes"
        + (f" ({len(report.unreadable)} unreadable, skipped)" if report.unreadable else "")
        + f". Split: train {counts['train']}, val {counts['val']}, test {counts['test']}."
    )
    for u in report.unreadable[:10]:
        console.print(f"  [yellow]skipped[/] {short_path(u.path, report.root)}: {u.reason}")
    for note in result.notes:
        console.print(f"  {note}")
    auto = result.details.get("auto")
    if auto:
        console.print(f"[bold]Auto:[/] {auto['explanation']}")
    console.print(describe_method(result.details))

    table = Table()
    for col in ("split", "images", "accuracy", "balanced acc.", "macro F1"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for part, m in result.metrics.items():
        table.add_row(part, str(m.n), f"{m.accuracy:.1%}", f"{m.balanced_accuracy:.1%}", f"{m.macro_f1:.3f}")
    console.print(table)
    headline = result.headline
    if headline is not None:
        part, m = headline
        worst = sorted(m.per_class, key=lambda c: c.recall)
        shown = worst if len(worst) <= 20 else worst[:10]
        console.print(f"Recall per class on {part}, worst first:")
        recall = Table()
        recall.add_column("class")
        recall.add_column("recall", justify="right")
        recall.add_column("images", justify="right")
        for c in shown:
            style = "yellow" if c.recall < m.accuracy - 0.1 else None
            recall.add_row(c.name, f"{c.recall:.1%}", str(c.support), style=style)
        console.print(recall)
    times = " · ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    console.print(f"Time: {times}")
    console.print(f"Bundle: [bold]{result.out}[/]  (load it with tlearn.load('{result.out}'))")
    console.print(f"Report: [bold]{result.out / 'report.html'}[/]")
    if result.details.get("interrupted"):
        console.print(
            f"[yellow]Interrupted:[/] the bundle holds the best epoch so far. To continue the run, repeat the "
            f"command with --resume {result.out}"
        )


def describe_method(details: dict[str, Any]) -> str:
    method = details.get("method", "?")
    if method == "features":
        cv = (
            f"C={details['C']:.3g} by {details['cv_folds']}-fold CV"
            if details.get("cv_folds")
            else f"C={details['C']:.3g}"
        )
        extras = []
        if details.get("mirror"):
            extras.append("mirror views and test-time flip")
        if details.get("views"):
            extras.append(f"{details['views']} augmented views per image")
        layer = details.get("feature_layer", "last")
        return (
            f"Method: features ({layer} layer, {details.get('feature_dim')}-d) + {details.get('head')} head, {cv}"
            + (f"; {', '.join(extras)}" if extras else "")
            + "."
        )
    summary = details.get("summary")
    return f"Method: {method}" + (f": {summary}" if summary else ".")


def parse_duration(text: str | None) -> float | None:
    """'10m', '90s', '1h', '1h30m' or plain seconds -> seconds."""
    from tlearn.core.errors import ConfigError

    if text is None:
        return None
    import re

    total, rest = 0.0, text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return float(rest)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", rest)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != rest.replace(" ", ""):
        raise ConfigError(f"--time-budget must look like 10m, 90s or 1h30m. Got {text!r}.")
    for amount, unit in parts:
        total += float(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def _unfreeze(text: str) -> int | Literal["all"]:
    from tlearn.core.errors import ConfigError

    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--unfreeze must be a number of stages or 'all'. Got {text!r}.") from None
