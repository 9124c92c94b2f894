"""`tlearn train`: photos in, a trained model bundle out.

Under torchrun (`torchrun --nproc-per-node N -m tlearn train ...`) every process runs this command;
rank 0 alone draws the progress bars and prints the epochs and the summary, the others stay quiet.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tlearn.cli import options as opt
from tlearn.cli.app import app
from tlearn.cli.heap import long_lived
from tlearn.cli.render import LABELS_NOT_CHECKED, console, progress_bar, shell_join, short_path
from tlearn.core.progress import no_progress
from tlearn.core.words import count, verb

if TYPE_CHECKING:
    from tlearn.artifacts.details import MethodDetails
    from tlearn.training.run import TrainResult

FEAT = "Feature method (--method features, auto)"


def _feat(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=FEAT)


@app.command("train")
@opt.option_groups
def train(
    data: opt.Data,
    *,
    method: Annotated[str, typer.Option(help="auto, features, finetune or scratch.")] = "auto",
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    input_size: opt.InputSize = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<data name>).")] = None,
    overwrite: opt.Overwrite = False,
    seed: opt.Seed = 0,
    val_frac: opt.ValFrac = 0.15,
    test_frac: opt.TestFrac = 0.15,
    split_file: opt.SplitFile = None,
    class_weight: opt.ClassWeight = "none",
    tta: opt.Tta = True,
    unknown_recall: opt.UnknownRecall = 0.95,
    batch_size: Annotated[
        int, typer.Option(help="Images per batch (per training step of all processes together under torchrun).")
    ] = 32,
    device: opt.Device = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto, bf16 or fp32: training steps on a GPU (auto: bf16 where supported, else fp16). "
            "The CPU and frozen layers run in fp32, as the saved model does."
        ),
    ] = "auto",
    time_budget: Annotated[
        str | None, typer.Option(help="Time for the whole run, e.g. 10m or 90s (default 4m30s for auto, else none).")
    ] = None,
    unlabelled: Annotated[
        Path | None,
        _feat(
            "--unlabelled",
            help="A folder of photos without labels: the head also learns from its confident guesses on them, "
            "while validation improves.",
        ),
    ] = None,
    feature_layer: Annotated[str, _feat("--feature-layer", help="last, or level numbers like 3 or 2,3.")] = "last",
    views: opt.Views = None,
    head: Annotated[str, _feat("--head", help="logistic, svm or softmax.")] = "logistic",
    c: Annotated[float | None, _feat("--C", help="Inverse regularisation (default: chosen by CV).")] = None,
    finetune: opt.FinetuneFlags,  # --head-epochs ... --patience, expanded by @opt.option_groups
    resume: Annotated[
        Path | None, opt.finetune_option("--resume", help="Continue the interrupted run in this folder.")
    ] = None,
    augment: opt.AugmentFlags,  # --preset, --hflip ... --cutmix
) -> None:
    """Train a classifier on DATA and save it as a bundle (a folder) with its metrics."""
    with long_lived():  # the network libraries' objects: never scanned by the collector (see heap.py)
        from tlearn.training.config import TrainConfig
        from tlearn.training.run import run

    cfg = TrainConfig(
        data=data, out=resume or out, method=method, backbone=backbone, weights=weights, input_size=input_size,
        seed=seed, val_frac=val_frac, test_frac=test_frac, split_file=split_file, batch_size=batch_size,
        feature_layer=feature_layer, views=views, head=head, C=c, class_weight=class_weight, tta=tta,
        augment=augment.config(), finetune=finetune.config(), time_budget=opt.parse_duration(time_budget),
        unlabelled=unlabelled,
        resume=resume is not None, overwrite=overwrite, device=device, precision=precision,
        unknown_recall=unknown_recall, command=shell_join(["tlearn", *sys.argv[1:]]),
    )  # fmt: skip
    main = quiet_unless_main()
    with progress_bar() if main else nullcontext(no_progress) as progress:
        result = run(cfg, progress=progress, on_epoch_end=print_epoch if main else None)
    if main:
        render_result(result)
    if result.details.interrupted:  # the bundle of the best epoch is saved, but the run did not finish
        from tlearn.core.errors import Interrupted

        raise typer.Exit(Interrupted.exit_code)


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


NOT_MEASURED = (
    "[yellow]Accuracy not measured:[/] no image could be held out for validation or test (the classes are too "
    "small). Add images, or score the bundle on new ones with tlearn evaluate BUNDLE DATA."
)


def render_result(result: TrainResult) -> None:
    from tlearn.artifacts.metrics import ranked_by_recall  # here: `tlearn --help` does not load scikit-learn
    from tlearn.data.checks import unreadable_warning

    report = result.dataset
    counts = result.split_counts
    console.print(
        f"[bold]{report.total:,}[/] images in [bold]{len(result.classes)}[/] classes"
        + (f" ({len(report.unreadable)} unreadable, skipped)" if report.unreadable else "")
        + f". Split: train {counts['train']}, val {counts['val']}, test {counts['test']}."
    )
    for u in report.unreadable[:10]:
        console.print(f"  [yellow]skipped[/] {escape(short_path(u.path, report.root))}: {escape(u.reason)}")
    for warning in report.warnings:  # what `tlearn check` would warn of (the unreadable files are listed above)
        if warning != unreadable_warning(len(report.unreadable)):
            console.print(f"[yellow]Warning:[/] {escape(warning)}")
    for note in result.notes:
        console.print(f"  {note}")
    if result.details.auto is not None:
        console.print(f"[bold]Auto:[/] {result.details.auto.explanation}")
    console.print(describe_method(result.details))
    if result.details.unlabelled is not None:
        console.print(escape(result.details.unlabelled.summary))

    table = Table()
    for col in ("split", "images", "accuracy ± s.e.", "balanced acc.", "macro F1"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for part, m in result.metrics.items():
        table.add_row(part, str(m.n), m.accuracy_text(), f"{m.balanced_accuracy:.1%}", f"{m.macro_f1:.3f}")
    console.print(table if result.metrics else NOT_MEASURED)
    headline = result.headline
    if headline is not None:
        part, m = headline
        worst = ranked_by_recall(m.per_class)
        shown = worst if len(worst) <= 20 else worst[:10]
        some = f" (the {len(shown)} lowest of {len(worst)}; the report lists all)" if len(shown) < len(worst) else ""
        console.print(f"Recall per class on {part}, worst first{some}:")
        recall = Table()
        recall.add_column("class")
        recall.add_column("recall", justify="right")
        recall.add_column("images", justify="right")
        for c in shown:
            recall.add_row(c.name, c.recall_text(), str(c.support), style="yellow" if c.is_weak(m.accuracy) else None)
        console.print(recall)
    labels = label_summary(result)
    if labels:
        console.print(labels)
    times = " · ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    console.print(f"Time: {times}")
    console.print(f"Bundle: [bold]{result.out}[/]  (load it with tlearn.load('{result.out}'))")
    console.print(f"Report: [bold]{result.out / 'report.html'}[/]")
    if result.details.interrupted:
        console.print(
            f"[yellow]Interrupted[/] during the {result.details.interrupted} phase: the bundle holds the best epoch "
            f"so far. To go on from the last epoch, add --resume {result.out} to the command."
        )


def label_summary(result: TrainResult) -> str:
    """One line about the label check: how many images may be mislabelled or far from every class."""
    if result.label_issues is None:  # the scratch CNN has no pretrained features to judge labels by
        return "" if result.method == "scratch" else LABELS_NOT_CHECKED
    found = []
    if result.mislabelled:
        n = result.mislabelled
        found.append(f"{count(n, 'image')} may be mislabelled")
    if result.outliers:
        n = result.outliers
        found.append(f"{count(n, 'image')} {verb(n, 'looks', 'look')} far from every class")
    if not found:
        return f"Labels: no image looks mislabelled ({result.dataset.total:,} checked)."
    from tlearn.artifacts.label_issues import LABEL_ISSUES_FILE

    where = escape(str(result.out / LABEL_ISSUES_FILE))
    return f"[yellow]Labels:[/] {' and '.join(found)}: see [bold]{where}[/] (nothing was moved)."


def describe_method(details: MethodDetails) -> str:
    lin = details.linear
    if lin is not None:
        cv = "" if lin.C is None else f", C={lin.C:.3g}" + (f" by {lin.cv_folds}-fold CV" if lin.cv_folds else "")
        extras = []
        if lin.mirror:
            extras.append("mirror views and test-time flip")
        if lin.views:
            extras.append(f"{lin.views} augmented views per image")
        return (
            f"Method: features ({lin.feature_layer} layer, {lin.feature_dim}-d) + {lin.head} head{cv}"
            + (f"; {', '.join(extras)}" if extras else "")
            + "."
        )
    return f"Method: {details.method}" + (f": {details.summary}" if details.summary else ".")
