"""`tlearn compare`: the methods side by side on the same images: one table, one chart, one bundle each."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tlearn.cli import options as opt
from tlearn.cli.app import app
from tlearn.cli.render import console, progress_bar
from tlearn.cli.train import print_epoch

if TYPE_CHECKING:
    from tlearn.core.progress import Progress
    from tlearn.training.compare import Comparison, MethodRun

FEAT = "Feature method (features, auto)"


def _feat(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=FEAT)


@app.command("compare")
@opt.option_groups
def compare(
    data: opt.Data,
    *,
    methods: Annotated[
        str, typer.Option(help="Comma-separated: features, finetune, scratch, auto.")
    ] = "features,finetune,scratch",
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    input_size: Annotated[
        int | None, typer.Option(help="Model input side in pixels (default: the weights'; 150 from scratch).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the comparison (default runs/<data name>-compare).")
    ] = None,
    overwrite: opt.Overwrite = False,
    seed: opt.Seed = 0,
    val_frac: opt.ValFrac = 0.15,
    test_frac: opt.TestFrac = 0.15,
    split_file: opt.SplitFile = None,
    class_weight: opt.ClassWeight = "none",
    tta: opt.Tta = True,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    device: opt.Device = "auto",
    views: opt.Views = None,
    head: Annotated[str, _feat("--head", help="logistic, svm or softmax.")] = "logistic",
    c: Annotated[float | None, _feat("--C", help="Inverse regularisation (default: chosen by CV).")] = None,
    training: opt.TrainingLengthFlags,  # --head-epochs, --head-lr, --epochs, --lr, --patience
    augment: opt.AugmentFlags,  # --preset, --hflip ... --cutmix, expanded by @opt.option_groups
) -> None:
    """Train several methods on DATA with the same split and seed, and compare them.

    Prints one table: accuracy, balanced accuracy, macro F1, time and parameters trained per method.

    Writes OUT/compare.png (validation accuracy per epoch), OUT/compare.json and a bundle per method.

    A method that fails is reported and the others still run; the exit code is 1 only if all fail.
    """
    _refuse_several_processes()
    result = compare_with_progress(
        data, methods=methods.split(","), out=out, backbone=backbone, weights=weights, input_size=input_size,
        seed=seed, val_frac=val_frac, test_frac=test_frac, split_file=split_file, class_weight=class_weight,
        tta=tta, batch_size=batch_size, views=views, head=head, C=c, augment=augment.config(),
        finetune=training.config(), device=device, overwrite=overwrite,
    )  # fmt: skip
    render_comparison(result)
    raise typer.Exit(_exit_code(result))


def _exit_code(result: Comparison) -> int:
    """130 when Ctrl-C stopped a method (what ran is saved), 1 when every method failed, else 0."""
    from tlearn.core.errors import Interrupted

    if any(r.interrupted for r in result.runs):
        return Interrupted.exit_code
    return 0 if result.ok else 1


def _refuse_several_processes() -> None:
    from tlearn.core.distributed import launched_world
    from tlearn.core.errors import ConfigError

    if launched_world()[1] > 1:
        raise ConfigError(
            "tlearn compare runs in one process: it cannot be launched by torchrun with several.",
            hint="Under torchrun, run tlearn train once per method (--method features, finetune, scratch).",
        )


def compare_with_progress(data: Path, *, methods: list[str], out: Path | None, **options: Any) -> Comparison:
    """The library's compare with a rule, fresh progress bars and the epoch lines for each method, and
    one line when it ends. `options` are TrainConfig fields."""
    from tlearn.training.compare import compare as run_compare

    with ExitStack() as bars:
        current: list[Progress] = []  # the bars of the method running now

        def start(method: str) -> None:
            console.rule(f"[bold]{escape(method)}[/]", align="left")
            current[:] = [bars.enter_context(progress_bar())]

        def end(run: MethodRun) -> None:
            bars.close()  # each method reads the images again: fresh bars, not finished ones
            current.clear()
            print_method_line(run)

        def progress(stage: str, done: int, total: int) -> None:
            if current:
                current[0](stage, done, total)

        return run_compare(
            data, methods=methods, out=out, progress=progress, on_epoch_end=print_epoch,
            on_method_start=start, on_method_end=end, **options,
        )  # fmt: skip


def print_method_line(run: MethodRun) -> None:
    """One line when a method ends: its headline accuracy and time, or why it failed."""
    if run.result is None:
        console.print(f"[red]{escape(run.method)} failed:[/] {escape(run.error or '?')}", soft_wrap=True)
        return
    headline = run.result.headline
    score = f"{headline[1].accuracy:.1%} {headline[0]} accuracy" if headline else "no score"
    console.print(f"[bold]{escape(run.method)}[/]: {score} in {run.seconds:.1f}s, bundle {run.out}")


def render_comparison(result: Comparison) -> None:
    """The table, the failures, then where the chart, the JSON and the bundles went."""
    part = result.part or "test"
    counts = next((r.result.split_counts for r in result.runs if r.result is not None), None)
    caption = f"every method scored on the same {counts[part]} {part} images" if counts else None
    table = Table(
        title=f"Methods compared on {result.data}", caption=caption, title_justify="left", caption_justify="left"
    )
    for col in ("method", f"{part} accuracy ± s.e.", "balanced acc.", "macro F1", "time", "parameters trained"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for run in result.runs:
        m = run.metrics(result.part)
        if m is None:
            table.add_row(run.label, "[red]failed[/]" if not run.ok else "-", "-", "-", f"{run.seconds:.1f}s", "-")
            continue
        table.add_row(
            run.label, m.accuracy_text(), f"{m.balanced_accuracy:.1%}", f"{m.macro_f1:.3f}", f"{run.seconds:.1f}s",
            _parameters(run.trained_parameters, run.total_parameters),
        )  # fmt: skip
    console.print()
    console.print(table)
    for run in result.runs:
        if run.error:
            console.print(f"[red]{escape(run.method)} failed:[/] {escape(run.error)}", soft_wrap=True)
        elif run.interrupted:
            console.print(f"[yellow]{escape(run.method)} was interrupted:[/] its bundle holds the best epoch so far.")
    if result.skipped:
        console.print(f"[yellow]Not run (interrupted):[/] {', '.join(result.skipped)}.")
    if result.plot is not None:
        console.print(f"Chart: [bold]{result.plot}[/]")
    console.print(f"JSON: [bold]{result.json}[/]")
    for run in result.runs:
        if run.ok:
            console.print(f"Bundle ({escape(run.method)}): [bold]{run.out}[/]")


def _parameters(trained: int | None, total: int | None) -> str:
    """'5.1k of 4.2M' (trained of all): how much of the network each method changed."""
    if trained is None:
        return "-"
    return _short(trained) + (f" of {_short(total)}" if total is not None and total != trained else " (all)")


def _short(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
