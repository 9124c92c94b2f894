"""report.html and its pictures: every section, embedded PNGs, valid HTML, and runs that lack parts."""

from __future__ import annotations

import base64
import csv
import html as html_module
import io
import json
import re
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlearn
from conftest import add_broken_files
from tlearn.artifacts.bundle import BundleConfig
from tlearn.artifacts.history import read_history
from tlearn.artifacts.metrics import compute_metrics
from tlearn.artifacts.predictions import PredictionRow
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.checks import check_path
from tlearn.models.classifier import HeadSpec
from tlearn.report.page import SECTIONS, write_report
from tlearn.report.plots import plot_confusion, plot_history, plot_mistakes
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


def make_run(folder: Path, *, history: bool = True, test: bool = True) -> Path:
    """A run folder written by hand (no training): 3 classes of 6 images, two confident mistakes."""
    data = folder / "data"
    for cls, rgb in COLOURS.items():
        (data / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (48 + 4 * i, 40), tuple(min(255, c + 9 * i) for c in rgb)).save(data / cls / f"{i}.png")
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
        method="finetune" if history else "features",
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
    if history:
        lines = ["phase,epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,best"]
        for e in range(1, 5):
            lines.append(f"head,{e},{1.2 - 0.2 * e},{0.5 + 0.08 * e},{1.1 - 0.18 * e},{0.52 + 0.07 * e},0.001,2,1")
        for e in range(5, 11):  # phase 2: training accuracy climbs, validation loss bottoms out at epoch 6
            train_acc, val_loss = min(0.84 + 0.03 * (e - 4), 1), 0.35 + 0.04 * (e - 6) ** 2
            lines.append(f"finetune,{e},{0.4 / (e - 3)},{train_acc},{val_loss},0.86,0.0001,5,{int(e <= 6)}")
        (run / "history.csv").write_text("\n".join(lines) + "\n")
    return run


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
    assert len(doc.images) == 5
    for src in doc.images:
        assert decode_image(src).width > 200
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "class_counts.png", "confusion.png", "confusion_normalised.png", "curves.png", "mistakes.jpg",
    ]  # fmt: skip
    for external in ('src="http', "<link", "<script", "url("):
        assert external not in html

    assert '<div class="value">66.7%</div><div class="label">test accuracy</div>' in html  # 2 of 3 right
    explanation = html_module.escape(auto_record()["explanation"])  # type: ignore[arg-type]
    assert f'<p class="decision">{explanation}</p>' in html  # the paragraph, not a dump of the record
    assert "small and different" in html and "81.0%" in html and "74.0%" in html
    assert "{&#x27;" not in html and "{'" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # unknown detail keys shown, escaped
    assert "Overfitting." in html or "overfits slightly" in html
    assert "Validation loss turned at epoch 6" in html and "<code>--unfreeze 1</code>" in html
    assert "cat/3.png" in html and "fox/5.png" in html  # the mistakes table
    assert f"tlearn train {run.parent / 'data'} --method auto" in html and "torch==2.4.0" in html


def test_a_feature_run_without_test_part_is_reported_on_validation(tmp_path: Path) -> None:
    run = make_run(tmp_path, history=False, test=False)
    html = write_report(run).read_text(encoding="utf-8")
    doc = parse(html)
    assert len(doc.images) == 4  # no curves
    assert "No curves: the feature method trains no epochs" in html
    assert "On the val part" in html and "val accuracy" in html
    assert not (run / "plots" / "curves.png").exists()


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


@pytest.mark.parametrize("k", [2, 100])
def test_confusion_matrix_grows_with_the_classes(k: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confusion = rng.poisson(0.3, (k, k)) + np.diag(rng.integers(5, 20, k))
    names = [f"class_{i:03d}" for i in range(k)]
    with Image.open(plot_confusion(confusion, names, tmp_path / "c.png", normalise=True)) as png:
        size = png.size
    assert 400 < size[0] < 800 if k == 2 else size[0] > 1800


def test_curves_and_mistakes_draw_what_they_can(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text(
        "phase,epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,best\nscratch,1,2.0,0.3,,,0.01,1,1\n"
    )
    with Image.open(plot_history(read_history(history), tmp_path / "curves.png")) as png:
        assert png.width > 800
    Image.new("RGB", (80, 60), (10, 200, 10)).save(tmp_path / "frog.png")
    mistakes = [
        PredictionRow("test", "frog.png", "frog", "toad", 0.97, 0.02),
        PredictionRow("test", "gone.png", "a very long class name indeed", "toad", 0.9, 0.05),
    ]
    with Image.open(plot_mistakes(mistakes, tmp_path / "m.png", root=tmp_path)) as png:
        assert png.width > 400


def test_plots_folder_is_rebuilt_in_place(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_report(run)
    assert (run / "plots" / "curves.png").is_file()
    (run / "history.csv").unlink()
    write_report(run)
    assert not (run / "plots" / "curves.png").exists()  # no stale picture of curves that are gone
    assert not [p for p in run.rglob(".*.tmp")]
    assert re.search(r"Rebuild this page with <code>tlearn report .*run</code>", (run / "report.html").read_text())
