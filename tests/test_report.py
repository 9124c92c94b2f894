"""report.html and its pictures: every section, embedded PNGs, valid HTML, and runs that lack parts."""

from __future__ import annotations

import base64
import csv
import html as html_module
import io
import json
import re
from dataclasses import asdict, replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

import tlearn
from conftest import add_broken_files
from tlearn.artifacts.bundle import BundleConfig
from tlearn.artifacts.history import HistoryRow, write_history
from tlearn.artifacts.metrics import compute_metrics
from tlearn.artifacts.predictions import PredictionRow
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.checks import check_path
from tlearn.models.classifier import HeadSpec
from tlearn.report.page import SECTIONS, write_report
from tlearn.report.plots import SPLIT_COLOURS, plot_confusion, plot_history, plot_mistakes
from tlearn.training.auto import Evidence, Probe, decide

COLOURS = {"cat": (200, 60, 40), "dog": (40, 160, 60), "fox": (50, 70, 200)}
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col"}


def auto_record() -> dict[str, object]:
    """What the auto method stores in the bundle, made by its own code (small data far from ImageNet)."""
    probes = (
        Probe("3", "level 3: blocks.4, 96 channels, stride 16", 96, 0.81),
        Probe("last", "the network's output, 512 features", 512, 0.74),
    )
    evidence = Evidence(80, 4, 20.0, 20, probes, 40.0, {"1": 50.0, "2": 90.0, "all": 900.0}, 600.0)
    decision = decide(evidence, num_stages=4)
    return {
        "evidence": evidence.to_dict(),
        "decision": asdict(decision),
        "explanation": decision.explanation,
        "validation": {"features": 0.8, "finetune": 0.85},
        "chosen": "finetune",
    }


def rgb_of(cls: str, i: int) -> tuple[int, int, int]:
    """The colour of image `i` of a class: each a little lighter than the one before."""
    r, g, b = (min(255, c + 9 * i) for c in COLOURS[cls])
    return r, g, b


def shade(cls: str, i: int) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb_of(cls, i))


def make_run(folder: Path, *, history: str | None = "overfitting", test: bool = True) -> Path:
    """A run folder written by hand (no training): 3 classes of 6 images, two confident mistakes.

    `history` is the kind of training curves (a key of HISTORIES), None for a feature run without epochs.
    """
    data = folder / "data"
    for cls in COLOURS:
        (data / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (48 + 4 * i, 40), rgb_of(cls, i)).save(data / cls / f"{i}.png")
    run = folder / "run"
    run.mkdir()
    classes = list(COLOURS)
    parts = {"train": [0, 1, 2], "val": [3, 4], "test": [5] if test else []}
    if not test:
        parts["train"].append(5)
    rows, metrics = [], {}
    for part in ("val", "test"):
        labels, proba = [], []
        for k, cls in enumerate(classes):
            for i in parts[part]:
                p = np.full(3, 0.05)
                wrong = (cls, i) in {("cat", 3), ("fox", 5)}
                p[(k + 1) % 3 if wrong else k] = 0.9
                labels.append(k)
                proba.append(p)
                pred = int(np.argmax(p))
                rows.append([part, f"{cls}/{i}.png", cls, classes[pred], f"{p[pred]:.4f}", f"{p[k]:.4f}"])
        if labels:
            metrics[part] = compute_metrics(np.array(labels), np.array(proba), classes).to_dict()
    with (run / "predictions.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["split", "path", "true", "predicted", "confidence", "true_probability"], *rows])
    split = {p: [f"{c}/{i}.png" for c in classes for i in ix] for p, ix in parts.items()}
    split.update(format=1, origin="random", seed=0, val_frac=0.3, test_frac=0.2 if test else 0.0)
    split["counts"] = {p: len(split[p]) for p in ("train", "val", "test")}
    (run / "split.json").write_text(json.dumps(split))
    (run / "check.json").write_text(json.dumps(check_path(data, min_per_class=2).to_dict()))
    config = BundleConfig(  # the bundle's own schema, as `tlearn train` writes it
        classes=tuple(classes),
        architecture="resnet18",
        backbone="resnet18",
        create_kwargs={},
        weights="file:/weights/resnet18.safetensors",
        levels=(),
        head=HeadSpec(num_classes=3, in_features=512),
        preprocessing=Preprocessing((224, 224), (0.5,) * 3, (0.5,) * 3, interpolation="bicubic", crop_pct=0.875),
        method="features" if history is None else "scratch" if history == "underfitting" else "finetune",
        details={
            "auto": auto_record(),
            "unfreeze": 2,
            "phases": [{"phase": "head", "epochs": 4}, {"phase": "finetune", "epochs": 6}],
            "note": "<script>alert(1)</script>",
        },
        metrics=metrics,
        seed=0,
        data=str(data),
        command=f"tlearn train {data} --method auto",
        versions={"python": "3.11.7", "tlearn": "0.1.0", "torch": "2.4.0"},
        created="2025-01-01T00:00:00+00:00",
    ).to_dict()
    (run / "tlearn.json").write_text(json.dumps(config))
    if history is not None:
        write_history(run / "history.csv", HISTORIES[history]())
    return run


def overfitting() -> list[HistoryRow]:
    """Phase 1 healthy; in phase 2 training accuracy climbs to 100% while validation stays at 86% and its
    loss bottoms out at epoch 6: a gap of 12 points that grew, and a turn of the loss."""
    head = [HistoryRow("head", e, 1.2 - 0.2 * e, 0.5 + 0.08 * e, 1.1 - 0.18 * e, 0.52 + 0.07 * e, 1e-3, 2, True)
            for e in range(1, 5)]  # fmt: skip
    tune = [
        HistoryRow("finetune", e, 0.4 / (e - 3), min(0.84 + 0.03 * (e - 4), 1), 0.35 + 0.04 * (e - 6) ** 2, 0.86,
                   1e-4, 5, e <= 6)
        for e in range(5, 11)
    ]  # fmt: skip
    return head + tune


def healthy() -> list[HistoryRow]:
    """Validation accuracy a point under training accuracy all along, both levelling off at 95% and 94%;
    validation loss falls to the end."""
    rows = []
    for e in range(1, 11):
        acc = min(0.5 + 0.08 * e, 0.95)
        rows.append(HistoryRow("head" if e <= 4 else "finetune", e, 1.2 - 0.1 * e, acc, 1.1 - 0.08 * e, acc - 0.01,
                               1e-3, 2, True))  # fmt: skip
    return rows


def underfitting() -> list[HistoryRow]:
    """A network from scratch that gets only about half its own training images right after 6 epochs."""
    return [HistoryRow("scratch", e, 2.0 - 0.1 * e, 0.30 + 0.04 * e, 2.0 - 0.1 * e, 0.29 + 0.04 * e, 1e-2, 1, True)
            for e in range(1, 7)]  # fmt: skip


HISTORIES = {"overfitting": overfitting, "healthy": healthy, "underfitting": underfitting}


class StrictHTML(HTMLParser):
    """Fails on a closing tag that does not match the open one; records ids and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "img":
            self.images.append(str(a.get("src")))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(html: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(html)
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def decode_image(src: str) -> Image.Image:
    """An embedded picture: PNG for charts, JPEG for the photo grid, with a matching MIME type."""
    mime, _, payload = src.partition(";base64,")
    img = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert mime == {"PNG": "data:image/png", "JPEG": "data:image/jpeg"}[img.format]
    return img


def pixels(picture: Path | Image.Image) -> np.ndarray:
    """(H, W, 3) int RGB of a picture file or image."""
    img = picture if isinstance(picture, Image.Image) else Image.open(picture)
    return np.asarray(img.convert("RGB")).astype(int)


def coloured(rgb: np.ndarray, colour: str, *, tol: int = 30) -> int:
    """How many pixels are this "#RRGGBB" colour, to `tol` summed over the channels."""
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=2) < tol).sum())


def grey_columns(rgb: np.ndarray) -> list[int]:
    """Columns that are mostly dark grey top to bottom: vertical lines (axes, phase changes)."""
    grey = (rgb.max(axis=2) - rgb.min(axis=2) < 25) & (rgb.mean(axis=2) < 180)
    return [int(x) for x in np.nonzero(grey.sum(axis=0) > 0.2 * rgb.shape[0])[0]]


def dark_cells(rgb: np.ndarray) -> np.ndarray:
    """The cells of a confusion matrix near the top of its colour scale (not the colour bar's end)."""
    from scipy import ndimage

    dark = np.abs(rgb - np.array([8, 48, 107])).sum(axis=2) < 60
    labels, n = ndimage.label(dark)
    sizes = ndimage.sum(dark, labels, range(1, n + 1))
    big = [i + 1 for i, size in enumerate(sizes) if size > 0.01 * dark.size]
    return np.isin(labels, big)


def test_report_has_every_section_and_embeds_its_pictures(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    doc = parse(html)
    assert list(SECTIONS) == [i for i in doc.ids if i in SECTIONS]
    for key, title in SECTIONS.items():
        assert f"<h2>{title}</h2>" in html, key
    drawn = {p.name: p.read_bytes() for p in (run / "plots").iterdir()}
    embedded = [base64.b64decode(src.partition(";base64,")[2]) for src in doc.images]
    assert sorted(embedded) == sorted(drawn.values())  # every picture drawn is in the page, once
    for src in doc.images:
        decode_image(src)  # its MIME type says what it is
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "class_counts.png", "confusion.png", "confusion_normalised.png", "correct.jpg", "curves.png", "mistakes.jpg",
    ]  # fmt: skip
    for external in ('src="http', "<link", "<script", "url("):
        assert external not in html
    assert "<style>" in html and ".card .value {" in html  # styled without any other file

    assert '<div class="value">66.7%</div><div class="label">test accuracy</div>' in html  # 2 of 3 right
    explanation = html_module.escape(auto_record()["explanation"])  # type: ignore[arg-type]
    assert f'<p class="decision">{explanation}</p>' in html  # the paragraph, not a dump of the record
    assert "small and different" in html and "81.0%" in html and "74.0%" in html
    assert "{&#x27;" not in html and "{'" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # unknown detail keys shown, escaped
    assert '<p class="verdict bad"><b>Overfitting.</b> The model overfits: it is right on about 98%' in html
    assert "Validation loss turned at epoch 6" in html and "<code>--unfreeze 1</code>" in html
    assert "cat/3.png" in html and "fox/5.png" in html  # the mistakes table
    assert f"tlearn train {run.parent / 'data'} --method auto" in html and "torch==2.4.0" in html


def auto_facts(run: Path, decision: dict[str, object] | None = None, **evidence: object) -> dict[str, str]:
    """The rows of the report's table of auto facts (label -> cell), its evidence and decision updated first."""
    doc = json.loads((run / "tlearn.json").read_text())
    doc["details"]["auto"]["evidence"].update(evidence)
    doc["details"]["auto"]["decision"].update(decision or {})
    (run / "tlearn.json").write_text(json.dumps(doc))
    html = write_report(run).read_text(encoding="utf-8")
    start = html.index('<table class="kv">', html.index('<p class="decision">'))
    body = html[start : html.index("</tbody></table>", start)]
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", body))


def test_the_auto_facts_have_plain_labels_and_leave_out_what_was_not_measured(tmp_path: Path) -> None:
    facts = auto_facts(make_run(tmp_path), val_images=6, epoch_seconds={})  # not timed: nothing to show
    assert facts["validation images"] == "6" and facts["training images"] == "80"
    assert facts["training images per class"] == "20 (median), 20 (fewest)"
    assert facts["feature layer"] == "3" and facts["kept"] == "finetune"
    assert not [k for k in facts if "_" in k]  # no raw keys: val_images, epoch_seconds, per_class_min...
    assert "time per fine-tuning epoch" not in facts and "<table" not in "".join(facts.values())

    facts = auto_facts(make_run(tmp_path / "timed"), val_images=40, epoch_seconds={"1": 2.5, "2": 4.0, "all": 31.25})
    assert facts["time per fine-tuning epoch"] == "1 stage: 2.5 s, 2 stages: 4.0 s, all stages: 31.2 s"
    assert facts["validation images"] == "40"


def test_the_auto_facts_say_the_cached_views_chosen_apart_from_those_the_estimate_counted(tmp_path: Path) -> None:
    facts = auto_facts(make_run(tmp_path), {"views": 3}, views=6, view_seconds={"1": 3.0, "all": 20.0})
    assert facts["cached views per image"] == "3"  # what fine-tuning ran with
    assert facts["views in the fine-tuning estimate"] == "6"  # what the estimates above count
    assert facts["time per cached view"] == "1 stage: 3.0 s, all stages: 20.0 s"
    assert not [k for k in facts if "_" in k] and "<table" not in "".join(facts.values())
    # Features only, nothing timed: no rows of views that were never chosen or counted.
    facts = auto_facts(make_run(tmp_path / "features"), {"views": 0}, views=0, finetune_estimates={})
    assert "cached views per image" not in facts and "views in the fine-tuning estimate" not in facts


@pytest.mark.parametrize(
    ("kind", "colour", "advice"),
    [
        ("overfitting", "bad", "<li>Unfreeze fewer stages: <code>--unfreeze 1</code>"),
        ("healthy", "good", "<li>Nothing to fix.</li>"),
        ("underfitting", "meh", "<li>Train for more epochs (<code>--epochs</code>)"),
    ],
)
def test_report_gives_the_verdict_the_curves_show(kind: str, colour: str, advice: str, tmp_path: Path) -> None:
    html = write_report(make_run(tmp_path, history=kind)).read_text(encoding="utf-8")
    assert f'<div class="card {colour}"><div class="value">{kind}</div><div class="label">diagnosis</div>' in html
    assert f'<p class="verdict {colour}"><b>{kind.capitalize()}.</b>' in html
    assert advice in html
    others = {"overfitting": "Overfitting.", "healthy": "Healthy.", "underfitting": "Underfitting."}
    assert [v for v in others.values() if f"<b>{v}</b>" in html] == [others[kind]]


def test_a_feature_run_without_test_part_is_reported_on_validation(tmp_path: Path) -> None:
    run = make_run(tmp_path, history=None, test=False)
    html = write_report(run).read_text(encoding="utf-8")
    doc = parse(html)
    assert len(doc.images) == 5  # no curves (counts, 2 confusion matrices, mistakes, right answers)
    assert "No curves: the feature method trains no epochs" in html
    assert "On the val part" in html and "val accuracy" in html
    assert not (run / "plots" / "curves.png").exists()


def test_the_report_title_names_the_dataset_the_method_and_the_folder_once(tmp_path: Path) -> None:
    run = make_run(tmp_path)  # the dataset 'data', the folder 'run': it read "data: finetune run run"
    assert "<h1>data: finetune, in run</h1>" in write_report(run).read_text(encoding="utf-8")
    (tmp_path / "runs").mkdir()
    named = run.rename(tmp_path / "runs" / "data")  # runs/<data name>, train's default folder
    assert "<h1>data: finetune</h1>" in write_report(named).read_text(encoding="utf-8")


def test_the_split_says_when_its_shares_are_not_the_fractions_asked(tmp_path: Path) -> None:
    run = make_run(tmp_path)  # 3 classes of 6 images
    doc = json.loads((run / "split.json").read_text())
    total = sum(doc["counts"].values())
    for asked, said in (((doc["counts"]["val"] / total, doc["counts"]["test"] / total), False), ((0.05, 0.05), True)):
        doc.update(val_frac=asked[0], test_frac=asked[1])  # the shares the parts hold, then far less
        (run / "split.json").write_text(json.dumps(doc))
        html = write_report(run).read_text(encoding="utf-8")
        assert ("were asked, and so few images per class rounded them to the shares below" in html) is said
    assert "5% for validation and 5% for the test were asked" in html


def test_a_run_folder_with_only_its_config_still_gets_a_report(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    for name in ("check.json", "split.json", "predictions.csv", "history.csv"):
        (run / name).unlink()
    html = write_report(run).read_text(encoding="utf-8")
    parse(html)
    assert "no check.json" in html and "no split.json" in html and "no predictions.csv" in html


def test_report_of_a_real_run_lists_the_broken_files(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = add_broken_files(shapes, "green_square")
    out = tmp_path / "run"
    tlearn.train(shapes, method="features", backbone="test_efficientnet", weights="none", input_size=64, out=out, C=1.0)
    res = run_cli("report", out)
    assert res.code == 0, res.err
    assert f"Report: {out / 'report.html'}" in res.out
    html = (out / "report.html").read_text(encoding="utf-8")
    doc = parse(html)
    assert "Unreadable files (3), skipped" in html
    for name in broken:
        assert f"green_square/{name}" in html
    assert len(doc.images) >= 3 and "test accuracy" in html


def test_report_of_a_folder_that_is_not_a_run_is_one_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("report", tmp_path)
    assert res.code == 1
    assert "is not a run folder: it has no tlearn.json" in res.err and "Traceback" not in res.err
    (tmp_path / "tlearn.json").write_text("{ damaged")
    res = run_cli("report", tmp_path)
    assert res.code == 1 and "Cannot read" in res.err and "Traceback" not in res.err
    (tmp_path / "tlearn.json").write_text(json.dumps({"format": 1, "classes": ["a", "b"], "architecture": "resnet18"}))
    res = run_cli("report", tmp_path)  # written by hand, not by `tlearn train`
    assert res.code == 1 and "it has no 'head' field" in res.err and "Traceback" not in res.err


@pytest.mark.parametrize("k", [2, 100])
def test_confusion_matrix_grows_with_the_classes(k: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confusion = rng.poisson(0.3, (k, k)) + np.diag(rng.integers(5, 20, k))
    names = [f"class_{i:03d}" for i in range(k)]
    with Image.open(plot_confusion(confusion, names, tmp_path / "c.png", normalise=True)) as png:
        size = png.size
    assert 400 < size[0] < 800 if k == 2 else size[0] > 1800


def test_curves_mark_the_phase_change_in_both_panels(tmp_path: Path) -> None:
    """A dashed grey line between phase 1 and phase 2, in the accuracy and in the loss panel; none without phases."""
    two = grey_columns(pixels(plot_history(overfitting(), tmp_path / "two.png")))
    one = grey_columns(pixels(plot_history([replace(r, phase="head") for r in overfitting()], tmp_path / "one.png")))
    width = pixels(tmp_path / "two.png").shape[1]
    lines = sorted(set(two) - set(one))  # the axes' own spines are in both
    assert lines, "no phase line"
    assert any(x < width / 2 for x in lines) and any(x > width / 2 for x in lines)
    assert max(lines) - min(lines) > width / 3  # one per panel, not one thick line


def test_curves_show_validation_in_its_own_colour_and_only_when_there_is_validation(tmp_path: Path) -> None:
    with_val = pixels(plot_history(overfitting(), tmp_path / "val.png"))
    no_val = [replace(r, val_loss=None, val_acc=None) for r in overfitting()]
    without = pixels(plot_history(no_val, tmp_path / "train.png"))
    train, val = SPLIT_COLOURS["train"], SPLIT_COLOURS["val"]
    assert coloured(with_val, train) > 500 and coloured(with_val, val) > 500
    assert coloured(without, train) > 500 and coloured(without, val) == 0


def kept_the_features(run: Path) -> Path:
    """Make `run` an auto run that fine-tuned and then kept the features: tlearn.json as that run writes it
    (method "features", auto's record chosen "features"), history.csv the fine-tuning tried, its rows marked
    best as tlearn wrote them before it knew better (the report must not believe them)."""
    doc = json.loads((run / "tlearn.json").read_text())
    doc["method"] = "features"
    doc["details"]["auto"].update(chosen="features", validation={"features": 0.9, "finetune": 0.85})
    (run / "tlearn.json").write_text(json.dumps(doc))
    return run


def drawn_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """The figures the report draws, by file name, as they were when saved (what the PNG shows)."""
    from tlearn.report import plots

    figures: dict[str, Figure] = {}
    real = plots.save_figure

    def keep(fig: Figure, path: Path, **kwargs: object) -> Path:
        figures[Path(path).name] = fig
        return real(fig, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def rings(fig: Figure) -> list[tuple[float, float]]:
    """The (epoch, value) points ringed on the curves: open circles drawn on a panel (not the legend's)."""
    return [
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]))  # type: ignore[index]
        for ax in fig.axes
        for line in ax.lines
        if line.get_marker() == "o" and str(line.get_markerfacecolor()) == "none"
    ]


def words(fig: Figure) -> str:
    """Every text the figure shows: titles, phase names, legend entries."""
    texts = [t.get_text() for t in fig.findobj(Text)]
    return " | ".join(t for t in texts if t)


def section(html: str, key: str) -> str:
    start = html.index(f'<section id="{key}">')
    return html[start : html.index("</section>", start)]


def test_curves_of_fine_tuning_auto_did_not_keep_ring_no_epoch_and_say_the_features_were_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = drawn_figures(monkeypatch)
    tuned = write_report(make_run(tmp_path / "tuned")).read_text(encoding="utf-8")
    assert len(rings(figures["curves.png"])) == 4  # kept fine-tuning: epochs 4 and 6, in both panels
    assert "Rings mark the weights each phase kept" in section(tuned, "curves")

    html = write_report(kept_the_features(make_run(tmp_path / "features"))).read_text(encoding="utf-8")
    fig = figures["curves.png"]
    assert rings(fig) == []  # no epoch's weights are in the bundle: the features' head trains no epochs
    assert "kept weights" not in words(fig) and "tried, not kept" in words(fig)
    curves = section(html, "curves")
    assert "Rings mark" not in curves
    assert "the features were kept" in curves and "features 90.0%, fine-tuned 85.0%" in curves
    diagnosis = section(html, "diagnosis")
    assert "The saved model keeps the weights of epoch" not in diagnosis  # it keeps none of these epochs
    assert "fine-tuning auto tried and did not keep" in diagnosis
    assert '<div class="label">diagnosis</div>' not in html[: html.index("</header>")]  # not of the kept model


def test_confusion_matrix_of_a_perfect_model_is_a_diagonal_and_of_a_one_class_model_a_column(tmp_path: Path) -> None:
    perfect = dark_cells(pixels(plot_confusion(np.diag([5, 5, 5]), list(COLOURS), tmp_path / "p.png", normalise=True)))
    one_class = np.array([[5, 0, 0], [5, 0, 0], [5, 0, 0]])  # says "cat" to everything
    column = dark_cells(pixels(plot_confusion(one_class, list(COLOURS), tmp_path / "c.png", normalise=True)))
    ys, xs = np.nonzero(perfect)
    assert np.corrcoef(xs, ys)[0, 1] > 0.8  # top left to bottom right
    ys, xs = np.nonzero(column)
    assert np.ptp(xs) < 0.5 * np.ptp(ys)  # one column, three times as tall as wide
    assert xs.mean() < np.nonzero(perfect)[1].mean()  # the first column: predicted "cat"


def test_mistakes_grid_shows_the_photo_and_a_grey_tile_for_a_missing_one(tmp_path: Path) -> None:
    Image.new("RGB", (80, 60), (10, 200, 10)).save(tmp_path / "frog.png")
    mistakes = [
        PredictionRow("test", "frog.png", "frog", "toad", 0.97, 0.02),
        PredictionRow("test", "gone.png", "a very long class name indeed", "toad", 0.9, 0.05),
    ]
    grid = pixels(plot_mistakes(mistakes, tmp_path / "m.png", root=tmp_path))
    assert coloured(grid, "#0AC80A") > 5000  # the frog photo
    assert coloured(grid, "#E1E1E1") > 5000  # the tile of the image that is gone


def test_report_mistakes_grid_shows_the_photos_the_model_got_wrong(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    doc = parse(write_report(run).read_text(encoding="utf-8"))
    grid, _right_answers = [pixels(decode_image(s)) for s in doc.images if s.startswith("data:image/jpeg")]
    assert coloured(grid, shade("cat", 3), tol=40) > 5000  # cat/3.png, taken for a dog
    assert coloured(grid, shade("fox", 5), tol=40) > 5000  # fox/5.png, taken for a cat
    assert coloured(grid, shade("dog", 3), tol=60) < 100  # no dog was mistaken


def test_plots_folder_is_rebuilt_in_place(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_report(run)
    assert (run / "plots" / "curves.png").is_file()
    (run / "history.csv").unlink()
    write_report(run)
    assert not (run / "plots" / "curves.png").exists()  # no stale picture of curves that are gone
    assert not [p for p in run.rglob(".*.tmp")]
    assert re.search(r"Rebuild this page with <code>tlearn report .*run</code>", (run / "report.html").read_text())


def test_a_run_without_its_network_shows_its_tiles_and_says_why_there_are_no_heatmaps(tmp_path: Path) -> None:
    html = write_report(make_run(tmp_path)).read_text(encoding="utf-8")
    assert (
        "No heatmaps: the bundle&#x27;s network cannot be loaded" in html or "No heatmaps: the bundle's network" in html
    )
    assert '<section id="attention">' in html and "Right answers with their heatmaps" in html
