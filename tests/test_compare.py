"""The scratch baseline and `tlearn compare`: what a user reads and the files they get."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlearn
from tlearn.artifacts.bundle import load_bundle
from tlearn.artifacts.history import HistoryRow
from tlearn.core.errors import TlearnError
from tlearn.report.plots import MethodCurve, plot_comparison
from tlearn.training import feature_method
from tlearn.training import scratch as baseline
from tlearn.training.compare import compare, count_parameters
from tlearn.training.config import FinetuneConfig, TrainConfig
from tlearn.training.run import run

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--input-size", "64"]
# Short, at high rates, C fixed (no cross-validation): the numbers are not the point here, the files are.
FAST = ["--C", "1", "--views", "1", "--head-epochs", "3", "--head-lr", "0.05", "--epochs", "2", "--lr", "0.01"]
FAST += ["--patience", "0"]
CLASSES = ("blue_triangle", "green_square", "red_circle", "yellow_star")


def test_scratch_cnn_learns_the_synthetic_shapes_well_above_chance(shapes: Path, tmp_path: Path) -> None:
    result = run(
        TrainConfig(
            data=shapes, out=tmp_path / "scratch", method="scratch", input_size=64,
            finetune=FinetuneConfig(epochs=12, lr=3e-3, patience=0),
        )
    )  # fmt: skip
    assert result.metrics["test"].accuracy >= 0.5  # 4 classes: twice chance
    classifier, config = load_bundle(result.out)
    widths = [block[0].out_channels for block in classifier.trunk.backbone.blocks]
    assert widths == [32, 64, 128, 128] and config.head.hidden == 512 and config.head.dropout == 0.5
    trained, total = count_parameters(result.out)
    assert trained == total == result.details.epochs.trained_parameters  # from scratch, everything trains


def test_compare_writes_the_table_the_chart_the_json_and_one_bundle_per_method(
    run_cli, shapes: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cmp"
    res = run_cli("compare", shapes, *TINY, *FAST, "--out", out)
    assert res.code == 0, res.err
    for method in ("features", "finetune", "scratch"):
        assert f"│ {method} " in res.out  # a row of the table
        assert f"Bundle ({method}): {out / method}" in res.out
    assert "test accuracy" in res.out and "parameters trained" in res.out
    assert "every method scored on the same 16 test images" in res.out
    assert f"Chart: {out / 'compare.png'}" in res.out and f"JSON: {out / 'compare.json'}" in res.out

    doc = json.loads((out / "compare.json").read_text())
    assert list(doc["methods"]) == ["features", "finetune", "scratch"] and doc["scored_on"] == "test"
    for method, entry in doc["methods"].items():
        assert entry["ok"] and entry["error"] is None, method
        assert 0 <= entry["accuracy"] <= 1 and entry["images"] == 16 and entry["seconds"] > 0
        assert 0 < entry["trained_parameters"] <= entry["total_parameters"]
        # The bundle is the model that was scored: reloaded, it predicts the test images as the run did.
        clf = tlearn.load(out / entry["bundle"])
        assert clf.classes == CLASSES, method
        rows = scored_rows(out / entry["bundle"])
        predicted = clf.predict([shapes / r["path"] for r in rows])
        assert list(predicted) == [r["predicted"] for r in rows], method
        right = sum(p == r["true"] for p, r in zip(predicted, rows, strict=True))
        assert right / len(rows) == pytest.approx(entry["accuracy"]), method
    features, finetune, scratch = (doc["methods"][m] for m in ("features", "finetune", "scratch"))
    # C fixed, no CV: the feature method still learns the shapes, and its bundle classifies them (all 96).
    assert features["accuracy"] >= 0.75
    clf = tlearn.load(out / "features")
    images = sorted(shapes.glob("*/*.jpg"))
    assert np.mean(clf.predict(images) == np.array([p.parent.name for p in images])) >= 0.85
    _, features_config = load_bundle(out / "features")
    assert features["trained_parameters"] == (features_config.head.in_features + 1) * 4  # linear head: W and b
    assert features["trained_parameters"] < finetune["trained_parameters"] < finetune["total_parameters"]
    assert scratch["trained_parameters"] == scratch["total_parameters"]
    assert features["epochs_run"] == 0 and finetune["epochs_run"] == 5 and scratch["epochs_run"] == 2
    assert [h["phase"] for h in finetune["history"]] == ["head"] * 3 + ["finetune"] * 2

    with Image.open(out / "compare.png") as png:
        assert png.format == "PNG" and png.width >= 600 and png.height >= 300

    # Every method was scored on the same test images: the first run's split, handed to the others.
    assert doc["split_file"] == "features/split.json"
    splits = [json.loads((out / m / "split.json").read_text()) for m in doc["methods"]]
    assert all(s["test"] == splits[0]["test"] and s["val"] == splits[0]["val"] for s in splits)
    scored = {m: scored_images(out / m) for m in doc["methods"]}
    assert len(scored["features"]) == 16 and scored["features"] == scored["finetune"] == scored["scratch"]


def scored_rows(bundle: Path) -> list[dict[str, str]]:
    """The test rows of a run's predictions.csv."""
    with (bundle / "predictions.csv").open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == "test"]


def scored_images(bundle: Path) -> list[str]:
    """The test images a run was scored on (its predictions.csv)."""
    return sorted(r["path"] for r in scored_rows(bundle))


def test_a_failing_method_is_reported_and_the_others_still_run(
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def broken(*args: object, **kwargs: object) -> None:
        raise TlearnError("The scratch CNN ran out of luck.", hint="Try again tomorrow.")

    monkeypatch.setattr(baseline, "fit_scratch", broken)
    out = tmp_path / "cmp"
    res = run_cli("compare", shapes, "--methods", "scratch,features", *TINY, *FAST, "--out", out)
    assert res.code == 0, res.err  # one method worked
    assert "scratch failed: The scratch CNN ran out of luck. Try again tomorrow." in res.out
    assert "│ features " in res.out and "failed" in res.out.split("│ scratch ")[1].splitlines()[0]
    doc = json.loads((out / "compare.json").read_text())
    assert not doc["methods"]["scratch"]["ok"] and "out of luck" in doc["methods"]["scratch"]["error"]
    assert doc["methods"]["features"]["ok"] and doc["methods"]["features"]["accuracy"] > 0.5
    assert doc["split_file"] == "features/split.json" and not (out / "scratch").exists()  # a failed run leaves nothing
    assert (out / "compare.png").is_file()


def test_exit_code_is_1_only_when_every_method_failed(
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def broken(*args: object, **kwargs: object) -> None:
        raise TlearnError("No luck.")

    monkeypatch.setattr(baseline, "fit_scratch", broken)
    res = run_cli("compare", shapes, "--methods", "scratch", *TINY, "--out", tmp_path / "cmp")
    assert res.code == 1
    assert "scratch failed: No luck." in res.out and "Traceback" not in res.out + res.err
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert doc["methods"]["scratch"]["ok"] is False and doc["plot"] is None


def test_ctrl_c_stops_the_comparison_and_keeps_what_ran(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(feature_method, "fit_feature_method", interrupted)
    result = compare(
        shapes, methods=["features", "finetune", "scratch"], out=tmp_path / "cmp",
        backbone="test_efficientnet", weights="none", input_size=64,
    )  # fmt: skip
    assert [r.method for r in result.runs] == ["features"] and result.runs[0].interrupted
    assert result.skipped == ("finetune", "scratch") and not result.ok
    assert json.loads(result.json.read_text())["skipped"] == ["finetune", "scratch"]


def test_unknown_methods_are_one_line_before_any_work(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("compare", shapes, "--methods", "features,magic", "--out", tmp_path / "cmp")
    assert res.code == 1
    assert "--methods takes a comma-separated list of auto, features, finetune, scratch. Got magic." in res.err
    assert not (tmp_path / "cmp").exists()


def test_a_wrong_backbone_weights_or_path_is_one_line_before_any_work(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("compare", shapes, "--backbone", "resnet5", "--weights", "none", "--out", tmp_path / "cmp")
    assert res.code == 1 and "Unknown backbone 'resnet5'" in res.err and "Traceback" not in res.err
    res = run_cli("compare", shapes, "--weights", tmp_path / "nope.safetensors", "--out", tmp_path / "cmp")
    assert res.code == 1 and "Weights file not found" in res.err
    res = run_cli("compare", tmp_path / "photos", "--out", tmp_path / "cmp")
    assert res.code == 1 and "No such file or folder" in res.err
    assert not (tmp_path / "cmp").exists()


def test_chart_draws_epochs_levels_and_failures(tmp_path: Path) -> None:
    rows = [HistoryRow("head", 1, 1.0, 0.5, 1.0, 0.6, best=True), HistoryRow("finetune", 2, 0.8, 0.7, 0.9, 0.8)]
    curves = [
        MethodCurve("features", level=0.85, score=0.9),
        MethodCurve("finetune", rows=rows, score=0.88),
        MethodCurve("scratch", note="failed"),
    ]
    path = plot_comparison(curves, tmp_path / "c.png", title="shapes", chance=0.25)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width >= 600


def test_auto_that_kept_the_features_is_drawn_as_their_level_not_as_the_fine_tuning_it_tried() -> None:
    from types import SimpleNamespace

    from tlearn.training.compare import MethodRun, method_curve

    tried = tuple(
        HistoryRow(phase="finetune", epoch=e, train_loss=1.0, train_acc=0.5, val_acc=0.5 + e / 10) for e in (1, 2)
    )
    val = SimpleNamespace(accuracy=0.95)

    def ran(method: str) -> MethodRun:
        result = SimpleNamespace(method=method, metrics={"val": val, "test": val})
        return MethodRun("auto", Path("x"), 1.0, result=result, history=tried)  # type: ignore[arg-type]

    kept_features = method_curve(ran("features"), "test")
    assert kept_features.label == "auto (features)" and not kept_features.rows and kept_features.level == 0.95
    fine_tuned = method_curve(ran("finetune"), "test")
    assert fine_tuned.label == "auto (finetune)" and list(fine_tuned.rows) == list(tried) and fine_tuned.level is None
