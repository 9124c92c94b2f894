"""Commands about how good a model is: `tlearn evaluate` and `tlearn report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tlearn.cli.app import app
from tlearn.cli.render import console, progress_bar, short_path

if TYPE_CHECKING:
    from tlearn.artifacts.metrics import Metrics
    from tlearn.infer.evaluate import Evaluation

MISTAKES_PLOTTED = 16
PLOT_FILES = ("confusion.png", "confusion_normalised.png", "mistakes.jpg")  # what --plots writes


@app.command("evaluate")
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="The bundle folder that `tlearn train` wrote.")],
    data: Annotated[Path, typer.Argument(help="A labelled dataset: class folders, split folders, or a CSV.")],
    split: Annotated[
        str,
        typer.Option(
            help="train, val or test: that part of the bundle's split on its own dataset (or the dataset's "
            "split folder); all: every image of DATA."
        ),
    ] = "test",
    tta: Annotated[bool, typer.Option(help="Average each image's prediction with its mirror image's.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the evaluation as JSON.")] = False,
    plots: Annotated[
        Path | None,
        typer.Option(help="Folder to write pictures into: confusion matrices and the most confident mistakes."),
    ] = None,
    show: Annotated[int, typer.Option(help="How many mistakes and skipped files to list.", min=0)] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", min=1)] = 32,
) -> None:
    """Measure a trained bundle on labelled images: accuracy, per-class scores, calibration, mistakes."""
    from tlearn.core.marks import is_tlearn_picture, refuse_to_replace
    from tlearn.infer.evaluate import evaluate_bundle

    for picture in [plots / name for name in PLOT_FILES] if plots is not None else []:
        refuse_to_replace(picture, ours=is_tlearn_picture, option="--plots", what="a picture")
    with progress_bar() as progress:
        result = evaluate_bundle(bundle, data, split=split, tta=tta, batch_size=batch_size, progress=progress)
    written = _write_plots(result, plots) if plots is not None else []
    if as_json:
        print(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
        return
    render_evaluation(result, show=show)
    for path in written:
        console.print(f"Picture: [bold]{path}[/]")


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `tlearn train` (its --out).")],
) -> None:
    """Rebuild RUN_DIR/report.html: one self-contained page with the data, curves, metrics and mistakes."""
    from tlearn.report.page import write_report

    path = write_report(run_dir)
    console.print(f"Report: [bold]{path}[/]  (open it in a browser; pictures in {path.parent / 'plots'})")


def render_evaluation(result: Evaluation, *, show: int) -> None:
    m = result.metrics
    console.print(
        f"[bold]{m.n:,}[/] images scored: {result.source}"
        + (f" ({len(result.unreadable)} unreadable, skipped)" if result.unreadable else "")
        + (", with mirror averaging (--tta)" if result.tta else "")
        + "."
    )
    for u in result.unreadable[:show]:
        console.print(f"  [yellow]skipped[/] {escape(short_path(u.path, result.data))}: {escape(u.reason)}")
    if len(result.unreadable) > show:
        console.print(f"  ... and {len(result.unreadable) - show} more (--show, or --json lists all).")
    for note in result.notes:
        console.print(f"[yellow]Note:[/] {note}", soft_wrap=True)
    console.print(_summary_table(m))
    console.print(_per_class_table(m, show=show))
    mistakes = result.mistakes(show)
    if mistakes:
        table = Table(title=f"Most confident mistakes ({result.n_wrong} of {m.n} images are wrong)")
        for col in ("image", "true class", "predicted", "confidence"):
            table.add_column(col, justify="right" if col == "confidence" else "left")
        for p in mistakes:
            table.add_row(p.path, p.true, p.predicted, f"{p.confidence:.1%}")
        console.print(table)
    elif m.n:
        console.print("[green]No mistakes.[/]")


def _summary_table(m: Metrics) -> Table:
    table = Table(title="Overall")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what it says", style="dim")
    table.add_row("accuracy", m.accuracy_text(), "share of images predicted right, ± one standard error")
    table.add_row("balanced accuracy", f"{m.balanced_accuracy:.1%}", "mean recall: every class weighs the same")
    table.add_row("macro F1", f"{m.macro_f1:.3f}", "mean F1 over classes")
    table.add_row("weighted F1", f"{m.weighted_f1:.3f}", "F1 weighted by class size")
    for k, v in sorted(m.top_k.items()):
        table.add_row(f"top-{k} accuracy", f"{v:.1%}", f"true class among the {k} most probable")
    table.add_row("log loss", f"{m.log_loss:.3f}", "lower is better; punishes confident mistakes")
    table.add_row("calibration error (ECE)", f"{m.ece:.3f}", "how far confidence is from accuracy")
    return table


def _per_class_table(m: Metrics, *, show: int) -> Table:
    """Every class when there are few; else the `show` (at least 10) with the lowest recall."""
    from tlearn.artifacts.metrics import ranked_by_recall  # here: `tlearn --help` does not load scikit-learn

    ranked = ranked_by_recall(m.per_class)
    shown = ranked if len(ranked) <= 20 else ranked[: max(show, 10)]
    rest = f"; {len(ranked) - len(shown)} more with --json" if len(shown) < len(ranked) else ""
    table = Table(title=f"Per class, lowest recall first{rest}")
    for col in ("class", "precision", "recall", "F1", "images"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in shown:
        style = "yellow" if c.is_weak(m.accuracy) else "dim" if not c.support else None
        table.add_row(c.name, c.precision_text(), c.recall_text(), c.f1_text(), str(c.support), style=style)
    return table


def _write_plots(result: Evaluation, folder: Path) -> list[Path]:
    from tlearn.report.plots import plot_confusion, plot_mistakes

    part = result.split
    confusion, classes = result.metrics.confusion, result.classes
    counts, shares, mistakes_file = (folder / name for name in PLOT_FILES)
    written = [
        plot_confusion(confusion, classes, counts, title=f"Confusion matrix on {part}: counts"),
        plot_confusion(
            confusion,
            classes,
            shares,
            normalise=True,
            title=f"Confusion matrix on {part}: share of each true class",
        ),
    ]
    mistakes = result.mistakes(MISTAKES_PLOTTED)
    if mistakes:
        written.append(plot_mistakes(mistakes, mistakes_file, root=result.data))
    return written
