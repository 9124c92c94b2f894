"""Using a trained bundle from the shell: `tlearn predict` and `tlearn export`."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tlearn.cli.app import app
from tlearn.cli.render import console, err_console, progress_bar, short_path
from tlearn.core.errors import ConfigError
from tlearn.core.progress import no_progress
from tlearn.core.words import count, not_one_of

if TYPE_CHECKING:
    from tlearn.infer.export import ExportResult
    from tlearn.infer.predictor import BasePredictor
    from tlearn.infer.results import Failure, Predictions

OUTPUT_FORMATS = ("table", "json", "csv")
SHOW_BAR_FROM = 64  # images; below that a run takes about a second and a bar would only flicker


@app.command("predict")
def predict(
    bundle: Annotated[
        Path, typer.Argument(help="A bundle folder from tlearn train, or a .onnx file from tlearn export.")
    ],
    paths: Annotated[
        list[Path], typer.Argument(help="Images, folders (searched recursively), or .txt files listing image paths.")
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes to show per image.", min=1)] = 3,
    output: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
    batch_size: Annotated[int, typer.Option(help="Images per batch.", min=1)] = 32,
    tta: Annotated[bool, typer.Option("--tta", help="Average with the mirror image's (2x compute).")] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="torch, or onnx for ONNX Runtime (default: onnx where it is installed and the images repay "
            "exporting the model, or the bundle was exported; torch with --explain or for a few images)."
        ),
    ] = None,
    explain: Annotated[
        Path | None,
        typer.Option(
            "--explain",
            help="Write a heatmap of each image into this folder (cat.jpg -> cat.png): where the model saw the "
            "predicted class. Needs the torch engine.",
        ),
    ] = None,
    unknown: Annotated[
        bool,
        typer.Option(
            "--unknown/--no-unknown",
            help="Answer 'unknown' for images far from every training image (with the score), when the bundle can.",
        ),
    ] = True,
) -> None:
    """Predict the class of images: top-k classes with probabilities, or 'unknown' when none fits.

    'unknown' answers an image far from every training image. Exit code 1 if none could be read."""
    from tlearn.infer.inputs import find_images
    from tlearn.infer.load import load

    if output not in OUTPUT_FORMATS:
        raise ConfigError(not_one_of("--format", output, OUTPUT_FORMATS))
    files, missing = find_images(paths)
    predictor = load(bundle, engine=engine or ("torch" if explain is not None else "auto"), images=len(files))
    if explain is not None:
        from tlearn.infer.heatmaps import torch_classifier

        torch_classifier(predictor)  # before any work: the ONNX engine has no gradients
    bar = progress_bar() if len(files) >= SHOW_BAR_FROM else nullcontext(no_progress)
    with bar as progress:
        result = predictor.predict_many(
            files, top_k=top_k, batch_size=batch_size, tta=tta, unknown=unknown, progress=progress
        )
    failures = [*missing, *result.failures]
    if output == "json":
        doc = {"predictions": [p.to_dict() for p in result.items], "errors": [f.to_dict() for f in failures]}
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    elif output == "csv":
        _write_csv(result, failures)
    else:
        _render_table(result, failures)
    # Machine-readable output keeps stdout clean: the summary goes to stderr.
    summary = console if output == "table" else err_console
    summary.print(_summary(result, failures, engine=_engine(predictor), tta=tta and not predictor.config.flip_tta))
    if explain is not None and result.items:
        from tlearn.infer.heatmaps import explain_images, write_overlays

        explained, _ = explain_images(predictor, files)  # the unreadable files are listed above already
        written = write_overlays(explained, explain)
        where, n = escape(short_path(explain, None)), len(written)
        summary.print(f"Wrote {count(n, 'heatmap')} to {where}/ (red: where the model saw the class).")
    raise typer.Exit(0 if result.items else 1)


def _render_table(result: Predictions, failures: list[Failure]) -> None:
    if result.items:
        table = Table()
        scored = any(p.unknown_score is not None for p in result.items)
        table.add_column("file", overflow="fold")
        table.add_column("class")
        table.add_column("probability", justify="right")
        if scored:
            table.add_column("unknown score", justify="right")
        if any(len(p.top) > 1 for p in result.items):
            table.add_column("next")
        for p in result.items:
            best, rest = p.top[0], p.top[1:]
            if p.unknown:  # the best guess moves to "next": the answer is that it is none of the classes
                row = [escape(p.source), "[bold yellow]unknown[/]", "", f"{p.unknown_score:.3f}"]
                rest = p.top
            else:
                row = [escape(p.source), escape(best.label), f"{best.probability:.1%}"]
                row += [f"{p.unknown_score:.3f}"] if scored and p.unknown_score is not None else [""] * scored
            if rest:
                row.append(escape(" · ".join(f"{s.label} {s.probability:.1%}" for s in rest)))
            table.add_row(*row)
        console.print(table)
    if failures:
        bad = Table(title=f"Could not predict {count(len(failures), 'file')}", title_justify="left")
        bad.add_column("file", overflow="fold")
        bad.add_column("reason")
        for f in failures:
            bad.add_row(escape(f.source), escape(f.reason), style="yellow")
        console.print(bad)


def _write_csv(result: Predictions, failures: list[Failure]) -> None:
    """One row per (image, rank); an unreadable file is one row with its reason in `error`."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "rank", "class", "probability", "error", "unknown", "unknown_score"])
    for p in result.items:
        score = "" if p.unknown_score is None else f"{p.unknown_score:.6f}"
        flag = "" if p.unknown_score is None else str(p.unknown).lower()
        for rank, s in enumerate(p.top, start=1):
            writer.writerow([p.source, rank, s.label, f"{s.probability:.6f}", "", flag, score])
    for f in failures:
        writer.writerow([f.source, "", "", "", f.reason, "", ""])
    sys.stdout.flush()


def _engine(predictor: BasePredictor) -> str:
    """The engine in words: "the torch engine", "the onnx engine in int8 (why it was chosen)"."""
    words = f"the {predictor.engine} engine"
    if predictor.precision != "float32":
        words += f" in {predictor.precision}"
        words += f" ({escape(predictor.precision_reason)})" if predictor.precision_reason else ""
    return words


def _summary(result: Predictions, failures: list[Failure], *, engine: str, tta: bool) -> str:
    n = len(result.items)
    speed = f" ({result.images_per_second:.0f} images/s)" if n and result.seconds > 0.05 else ""
    text = f"Predicted {count(n, 'image')} in {result.seconds:.1f} s{speed} with {engine}"
    text += " and the mirror-image TTA." if tta else "."
    unknown = sum(p.unknown for p in result.items)
    if unknown:
        text += f" {unknown} {'is' if unknown == 1 else 'are'} none of the classes (unknown)."
    if failures:
        colour = "red" if not n else "yellow"
        text += f" [{colour}]{len(failures)} could not be read[/] (listed above)."
    return text


@app.command("export")
def export(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder from tlearn train.")],
    to: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Model file (default: model.onnx or model.pt in the bundle).")
    ] = None,
    int8: Annotated[
        str,
        typer.Option(
            "--int8",
            help="off; on: also write an int8 model (model.int8.onnx) and predict with it; auto: write it and "
            "predict with it only if it keeps the validation accuracy within 0.5 point and is faster here.",
        ),
    ] = "off",
    input_type: Annotated[
        str, typer.Option("--input", help="Input the model takes: float (RGB in [0, 1]) or uint8 (RGB 0-255).")
    ] = "float",
    opset: Annotated[int, typer.Option(help="ONNX opset (17 to 20).")] = 17,
) -> None:
    """Export a bundle to ONNX or TorchScript (probabilities out, normalisation inside), checked against PyTorch."""
    from tlearn.infer.export import export_bundle

    if to == "onnx":
        from tlearn.core.onnx import import_onnxruntime

        import_onnxruntime()  # fail before any work when the extra is missing
    with progress_bar() as progress:
        result = export_bundle(
            bundle, format=to, out=out, input_type=input_type, int8=int8, opset=opset, progress=progress
        )
    _render_export(result)


def _render_export(r: ExportResult) -> None:
    c, h, w = r.input_shape
    dtype, value_range = ("uint8", "0-255") if r.input_type == "uint8" else ("float32", "[0, 1]")
    console.print(f"Exported [bold]{escape(short_path(r.path, None))}[/] ({r.size_bytes / 1e6:.2f} MB, {r.format}).")
    console.print(
        escape(f"  input  'image'          {dtype} [batch, {c}, {h}, {w}], RGB in {value_range}, normalisation inside")
    )
    console.print(
        escape(f"  output 'probabilities'  float32 [batch, {len(r.classes)}], classes in the order of the JSON")
    )
    if r.unknown_outputs and r.format == "onnx":
        console.print(escape("  output 'unknown_score'  float32 [batch], higher = further from the training images"))
        console.print(escape("  output 'unknown'        bool [batch], unknown_score above the bundle's threshold"))
    console.print(f"Classes and preprocessing: [bold]{escape(short_path(r.sidecar, None))}[/]")
    runtime = "ONNX Runtime" if r.format == "onnx" else "the reloaded TorchScript module"
    ck = r.check
    console.print(
        f"Checked with {runtime}: max |exported - PyTorch| probability {ck.random_diff:.1e} on {ck.random_n} "
        f"random inputs, {ck.real_diff:.1e} on {ck.real_n} {ck.real_source}.",
        markup=False,
    )
    q = r.int8
    if q is None or r.int8_path is None:
        return
    calibrated = f", calibrated on {q.calibration_images} training images" if q.method == "static" else ""
    console.print(
        f"int8 ({q.method} quantization{calibrated}): [bold]{escape(short_path(r.int8_path, None))}[/], "
        f"{q.float_bytes / 1e6:.2f} MB -> {q.int8_bytes / 1e6:.2f} MB."
    )
    _render_int8_measures(r)


def _render_int8_measures(r: ExportResult) -> None:
    """What int8 costs and buys, and the one line saying whether prediction uses it."""
    q, choice = r.int8, r.int8_choice
    assert q is not None
    change = q.accuracy_change
    if change is None or q.accuracy_float is None or q.accuracy_int8 is None or q.agreement is None:
        console.print(f"  [yellow]Accuracy not checked:[/] {escape(q.skipped or '')}.")
    else:
        colour = "green" if change >= -0.005 else "yellow" if change >= -0.03 else "red"
        unknown = "" if q.unknown_agreement is None else f", the same unknown answer for {q.unknown_agreement:.1%}"
        console.print(
            f"  Accuracy on the {q.part} split ({q.n} images): {q.accuracy_float:.1%} float -> {q.accuracy_int8:.1%} "
            f"int8 ([{colour}]{change * 100:+.1f} points[/]); the same top-1 class for {q.agreement:.1%} of the "
            f"images{unknown}."
        )
    if q.float_ips is not None and q.int8_ips is not None and q.speedup is not None:
        console.print(
            f"  Engine alone on this machine: {q.float_ips:.0f} images/s float, {q.int8_ips:.0f} int8 "
            f"({q.speedup:.2f}x)."
        )
    if choice is not None:
        verdict = "[green]int8 used for prediction[/]" if choice.use else "[yellow]float used for prediction[/]"
        console.print(f"{verdict} with --engine onnx: {escape(choice.reason)}.")
