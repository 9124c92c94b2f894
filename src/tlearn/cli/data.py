"""Commands about datasets: `tlearn sample-data` and `tlearn check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tlearn.cli import options as opt
from tlearn.cli.app import app
from tlearn.cli.render import LABELS_NOT_CHECKED, console, err_console, progress_bar, shell_word, short_path
from tlearn.core.words import count

if TYPE_CHECKING:
    from tlearn.data.checks import DatasetReport
    from tlearn.training.label_check import LabelCheck

LABELS = "Label check (--labels): the backbone options of tlearn train"


def _labels_option(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=LABELS)


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into (one subfolder per class).")],
    classes: Annotated[int, typer.Option(help="Number of classes (2 to 6).", min=2, max=6)] = 4,
    per_class: Annotated[int, typer.Option(help="Images per class.", min=1)] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a small synthetic dataset (coloured shapes) to try tlearn without data of your own."""
    from tlearn.core.errors import OutputError
    from tlearn.data.synthetic import CLASSES, make_sample_dataset

    shapes = {c.name for c in CLASSES}  # an earlier sample dataset is written again; anything else is the user's
    theirs = []
    if out.is_dir():
        theirs = sorted(p.name for p in out.iterdir() if p.name not in shapes and not p.name.startswith("."))
    if theirs:
        more = f" and {count(len(theirs) - 1, 'more thing')}" if len(theirs) > 1 else ""
        raise OutputError(
            f"{short_path(out, None)} already holds {theirs[0]}{more}: the sample's class folders would mix with it.",
            hint="Pass a new folder, such as demo.",
        )
    make_sample_dataset(out, classes=classes, per_class=per_class, seed=seed)
    console.print(
        f"Wrote {classes * per_class} images in {classes} classes to [bold]{escape(short_path(out, None))}[/]."
    )
    console.print(f"Next: [bold]tlearn check {escape(shell_word(out))}[/]")


@app.command("check")
def check(
    data: opt.Data,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a bar chart of images per class (PNG).")] = None,
    min_per_class: Annotated[int, typer.Option(help="Warn about classes with fewer images.", min=1)] = 10,
    show: Annotated[int, typer.Option(help="How many broken files, duplicates and label issues to list.", min=0)] = 20,
    labels: Annotated[
        bool,
        _labels_option("--labels", help="Also find images whose label looks wrong and images far from every class."),
    ] = False,
    csv: Annotated[Path, _labels_option("--csv", help="Where --labels writes its list.")] = Path("label_issues.csv"),
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    input_size: opt.InputSize = None,
    feature_layer: opt.FeatureLayer = "last",
    seed: opt.Seed = 0,
) -> None:
    """Check a dataset: counts per class, balance, sizes, broken files, duplicates and leakage.

    With --labels, likely label errors and outliers too (nothing is moved: a CSV lists them)."""
    from tlearn.core.marks import is_tlearn_picture, refuse_to_replace
    from tlearn.data.checks import check_path

    if plot is not None:
        refuse_to_replace(plot, ours=is_tlearn_picture, option="--plot", what="a picture")
    found: LabelCheck | None = None
    with progress_bar() as progress:
        if labels:
            from tlearn.training.config import TrainConfig
            from tlearn.training.label_check import check_labels

            cfg = TrainConfig(
                data=data, backbone=backbone, weights=weights, input_size=input_size, feature_layer=feature_layer,
                seed=seed,
            )  # fmt: skip
            found = check_labels(cfg, csv=csv, min_per_class=min_per_class, progress=progress)
            report = found.dataset
        else:
            report = check_path(data, min_per_class=min_per_class, progress=progress)
    if plot is not None and report.counts:
        from tlearn.report.plots import plot_class_counts

        plot_class_counts(report.counts, plot, split_counts=report.split_counts or None)
    if as_json:
        doc = report.to_dict()
        if found is not None:
            doc["label_check"] = _label_json(found)
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        _render_report(report, show=show)
        if found is not None:
            _render_labels(found, show=show)
        if plot is not None and report.counts:
            console.print(f"Class balance chart: [bold]{escape(short_path(plot, None))}[/]")
        if report.usable:
            console.print(f"Next: [bold]tlearn train {escape(shell_word(data))}[/]")
    raise typer.Exit(0 if report.usable else 1)


def _render_report(report: DatasetReport, *, show: int) -> None:
    root = report.root
    kinds = {"folders": "one folder per class", "splits": "split folders", "csv": "CSV file"}
    console.print(f"[bold]{escape(short_path(root, None))}[/] ({kinds.get(report.kind, report.kind)})")
    table = Table()
    table.add_column("class")
    splits = [s for s in ("train", "val", "test") if s in report.split_counts]
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("images", justify="right")
    for c in report.classes:
        style = "yellow" if c in report.small_classes else None
        row = [escape(c)] + [str(report.split_counts[s].get(c, 0)) for s in splits] + [str(report.counts[c])]
        table.add_row(*row, style=style)
    for c in report.empty_classes:
        table.add_row(escape(c), *["0"] * len(splits), "0", style="red")
    table.add_section()
    totals = [str(sum(report.split_counts[s].values())) for s in splits]
    table.add_row("total", *totals, str(report.total), style="bold")
    console.print(table)

    if report.total:
        (w0, w1), (h0, h1) = report.width_range, report.height_range
        modes = ", ".join(f"{m} {n}" for m, n in report.modes.items())
        console.print(f"Image sizes: width {w0} to {w1} px, height {h0} to {h1} px. Modes: {modes}.")
        console.print(f"Imbalance: {report.imbalance:.2f} to 1 (largest class / smallest).")

    if report.unreadable:
        bad = Table(title=f"Unreadable files ({len(report.unreadable)}), skipped", title_justify="left")
        bad.add_column("file")
        bad.add_column("reason")
        for u in report.unreadable[:show]:
            bad.add_row(escape(short_path(u.path, root)), escape(u.reason))
        console.print(bad)
        _more(len(report.unreadable), show)
    if report.ignored:
        console.print(f"Ignored {count(len(report.ignored), 'file')} (not images, or listed already):")
        for i in report.ignored[:show]:
            console.print(f"  {escape(short_path(i.path, root))}: {escape(i.reason)}")
        _more(len(report.ignored), show)
    if report.duplicates:
        dup = Table(title=f"Duplicate groups ({len(report.duplicates)})", title_justify="left")
        dup.add_column("kind")
        dup.add_column("where")
        dup.add_column("files")
        for g in report.duplicates[:show]:
            style = "red" if g.label_conflict or g.leaks else None
            dup.add_row(g.kind, g.scope, escape(", ".join(short_path(p, root) for p in g.paths)), style=style)
        console.print(dup)
        _more(len(report.duplicates), show)
    for w in report.warnings:
        console.print(f"[yellow]Warning:[/] {escape(w)}")
    if report.usable:
        console.print(f"[green]Usable:[/] {report.total:,} images in {len(report.classes)} classes.")
    else:
        for p in report.problems:
            err_console.print(f"[bold red]Not usable:[/] {escape(p)}")


def _label_json(found: LabelCheck) -> dict[str, Any]:
    from dataclasses import asdict

    def row(i: Any) -> dict[str, Any]:
        d = asdict(i)
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}  # NaN is not JSON

    return {
        "backbone": found.backbone,
        "checked": found.issues is not None,
        "csv": None if found.csv is None else str(found.csv),
        "mislabelled": [row(i) for i in found.mislabelled],
        "outliers": [row(i) for i in found.outliers],
    }


def _render_labels(found: LabelCheck, *, show: int) -> None:
    if found.issues is None:
        if found.dataset.usable:
            console.print(LABELS_NOT_CHECKED)
        return
    wrong, far = found.mislabelled, found.outliers
    if wrong:
        table = Table(title=f"Images that may be mislabelled ({len(wrong)}), most likely first", title_justify="left")
        for col in ("file", "given", "suggested", "confidence", "margin"):
            table.add_column(col, justify="right" if col in ("confidence", "margin") else "left")
        for i in wrong[:show]:
            table.add_row(escape(i.path), escape(i.given), escape(i.suggested), f"{i.confidence:.0%}", f"{i.score:.2f}")
        console.print(table)
        _more(len(wrong), show)
    if far:
        table = Table(title=f"Images far from every class ({len(far)}), farthest first", title_justify="left")
        for col in ("file", "given", "distance"):
            table.add_column(col, justify="right" if col == "distance" else "left")
        for i in far[:show]:
            table.add_row(escape(i.path), escape(i.given), f"{i.score:.2f}")
        console.print(table)
        _more(len(far), show)
    n = len(found.dataset.classes)
    if not wrong and not far:
        console.print(f"[green]Labels:[/] no image looks mislabelled or far from its {n} classes ({found.backbone}).")
    else:
        console.print(
            f"Labels checked with {escape(found.backbone)}: a logistic regression cross-validated on its features. "
            "Nothing was moved or deleted."
        )
    if found.csv is not None:
        console.print(f"List: [bold]{escape(short_path(found.csv, None))}[/] (path,given,suggested,score,...)")


def _more(n: int, show: int) -> None:
    if n > show:
        console.print(f"  ... and {n - show} more (--show {n} lists all, --json gives everything).")
