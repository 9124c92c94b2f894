"""`tlearn train --method features` end to end: the files, the numbers, the reloaded bundle."""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlearn
from conftest import add_broken_files
from shared_data import FLOWERS, MOBILENET, needs
from tlearn.artifacts.bundle import load_bundle
from tlearn.models.backbones import create_backbone
from tlearn.training import features
from tlearn.training.config import TrainConfig
from tlearn.training.feature_method import for_features

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--input-size", "64"]


def accuracy_in(out: str, part: str) -> float:
    match = re.search(rf"│ {part}\s+│\s+\d+ │\s+([\d.]+)%", out)
    assert match, out
    return float(match.group(1)) / 100


def test_cli_trains_saves_and_the_bundle_predicts_the_same(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    res = run_cli("train", shapes, "--method", "features", *TINY, "--out", out)
    assert res.code == 0, res.err
    for name in ("model.safetensors", "tlearn.json", "split.json", "check.json", "predictions.csv"):
        assert (out / name).is_file(), name
    assert accuracy_in(res.out, "test") >= 0.8
    assert "Bundle:" in res.out and "Recall per class" in res.out

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    clf = tlearn.load(out)
    proba = clf.predict_proba([shapes / r["path"] for r in rows])
    saved = np.array([float(r["confidence"]) for r in rows])
    np.testing.assert_allclose(proba.max(axis=1), saved, atol=1e-3)
    assert [clf.classes[i] for i in proba.argmax(1)] == [r["predicted"] for r in rows]


def test_a_class_of_one_image_is_trained_on_and_not_ranked_as_the_worst(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rare = sorted(shapes.iterdir())[0]
    for extra in sorted(rare.iterdir())[1:]:
        extra.unlink()  # one image left: it can only go to training
    res = run_cli("train", shapes, "--method", "auto", *TINY, "--out", tmp_path / "run")
    assert res.code == 0, res.err
    assert "nan" not in res.out.lower()  # auto's probes and the head's C are still cross-validated
    assert "by 3-fold CV" in res.out
    table = res.out.split("Recall per class on test, worst first:")[1]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│ ")]
    assert rows[-1] == [rare.name, "–", "0"]  # no test image: no recall, and listed after the classes that have one


def test_train_says_what_the_dataset_check_warns_of(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first, second = sorted(shapes.iterdir())[:2]
    shutil.copy(sorted(first.iterdir())[0], second / "copy.jpg")  # one photo under two classes
    for extra in sorted(first.iterdir())[1:]:
        extra.unlink()  # and a class of that one photo
    res = run_cli("train", shapes, "--method", "features", *TINY, "--out", tmp_path / "run")
    assert res.code == 0, res.err
    out = " ".join(res.out.split())
    assert "Warning: 1 image appears under two or more classes (label conflicts)." in out
    assert f"Warning: 1 class has fewer than 10 images ({first.name})" in out
    assert "Labels not checked: every class needs at least two different images." in out


def test_broken_files_are_listed_and_training_goes_on(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expected = add_broken_files(shapes, "yellow_star")
    res = run_cli("train", shapes, "--method", "features", *TINY, "--out", tmp_path / "run")
    assert res.code == 0, res.err
    assert "(3 unreadable, skipped)" in res.out
    for name in expected:
        assert f"yellow_star/{name}" in res.out


def test_second_run_reuses_cached_features(
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    calls = []
    real = features.run_embed
    monkeypatch.setattr(features, "run_embed", lambda m, x: calls.append(len(x)) or real(m, x))
    first = run_cli("train", shapes, "--method", "features", *TINY, "--out", tmp_path / "a")
    computed = sum(calls)
    # every image and its mirror image, once: the unknown answer's threshold reuses the validation images'
    # rows (prediction decodes their files to the same pixels), nothing else runs the network
    assert first.code == 0 and computed == 2 * 96
    calls.clear()
    second = run_cli("train", shapes, "--method", "features", *TINY, "--head", "svm", "--out", tmp_path / "b")
    assert second.code == 0 and sum(calls) == 0
    assert "svm head" in second.out


def test_python_api_returns_a_result_and_a_loadable_bundle(shapes: Path, tmp_path: Path) -> None:
    result = tlearn.train(
        shapes, method="features", backbone="test_efficientnet", weights="none", input_size=64,
        out=tmp_path / "run", views=1,
    )  # fmt: skip
    assert result.method == "features" and result.details.linear.views == 1
    assert result.split_counts["train"] + result.split_counts["val"] + result.split_counts["test"] == 96
    assert result.metrics["test"].accuracy >= 0.7
    clf = tlearn.load(result.out)
    assert clf.classes == ("blue_triangle", "green_square", "red_circle", "yellow_star")
    assert clf.predict(shapes / "red_circle" / "red_circle_000.jpg") == ["red_circle"]


def test_wrong_backbone_is_one_line_before_any_work(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("train", shapes, "--backbone", "resnet5", "--weights", "none", "--out", tmp_path / "x")
    assert res.code == 1
    assert "Unknown backbone 'resnet5'" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "x").exists()


def test_bad_options_are_reported_together(run_cli, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("train", shapes, "--val-frac", "1.5", "--views", "-1", "--head", "tree")
    assert res.code == 1
    assert "--val-frac" in res.err and "--views" in res.err and "--head" in res.err


@pytest.mark.real_data
@needs(MOBILENET, FLOWERS)
def test_flowers_subset_with_the_shared_weights(tmp_path: Path) -> None:
    subset = tmp_path / "flowers5"
    for cls in ("Daffodil", "Iris", "Pansy", "Sunflower", "Tulip"):
        (subset / cls).mkdir(parents=True)
        for f in sorted((FLOWERS / cls).iterdir())[:20]:
            (subset / cls / f.name).symlink_to(f)
    result = tlearn.train(
        subset, method="features", weights=str(MOBILENET), val_frac=0.0, test_frac=0.3, out=tmp_path / "run"
    )
    assert result.metrics["test"].accuracy >= 0.9


def test_feature_method_runs_convnets_above_their_input_size_and_the_bundle_remembers(
    shapes: Path, tmp_path: Path
) -> None:
    convnet = create_backbone("test_efficientnet", weights="none", warn_random=False)
    native = convnet.preprocessing.input_size
    cfg = TrainConfig(data=shapes)
    larger = for_features(convnet, cfg).preprocessing.input_size
    assert larger[0] > native[0] and larger[1] > native[1]
    assert for_features(convnet, replace(cfg, input_size=64)) is convnet  # the user's size wins
    vit = create_backbone("test_vit", weights="none", warn_random=False)
    assert for_features(vit, cfg) is vit  # transformers are built for one size

    result = tlearn.train(shapes, method="features", backbone="test_efficientnet", weights="none", out=tmp_path / "r")
    _, saved = load_bundle(result.out)
    assert tuple(saved.preprocessing.input_size) == larger


def test_balanced_class_weight_raises_the_minority_class_recall(shapes_master: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(shapes_master, tmp_path / "imbalanced"))
    minority = "red_circle"
    removed = sorted((data / minority).iterdir())[6:]  # 6 red circles left, 24 of every other class
    for f in removed:
        f.unlink()
    unseen = [shapes_master / minority / f.name for f in removed]  # red circles no run has seen
    others = [p for p in sorted(shapes_master.glob("*/*.jpg")) if p.parent.name != minority]
    recall, mean_p, stolen = {}, {}, {}
    for weighting in ("none", "balanced"):
        result = tlearn.train(
            data, method="features", backbone="test_efficientnet", weights="none", input_size=64, C=1.0,
            class_weight=weighting, min_per_class=1, out=tmp_path / weighting,
        )  # fmt: skip
        assert result.dataset.imbalance == 4.0
        clf = tlearn.load(result.out)
        k = clf.classes.index(minority)
        proba = clf.predict_proba(unseen)
        recall[weighting] = float((proba.argmax(1) == k).mean())
        mean_p[weighting] = float(proba[:, k].mean())
        stolen[weighting] = float((clf.predict_proba(others).argmax(1) == k).mean())
    assert recall["balanced"] > recall["none"], recall
    assert mean_p["balanced"] > mean_p["none"] + 0.05, mean_p
    assert stolen["balanced"] <= 0.05, stolen  # and the other classes are not given away for it


def test_a_dataset_too_small_to_hold_images_out_says_it_measured_nothing(  # type: ignore[no-untyped-def]
    run_cli, shapes: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for folder in sorted(shapes.iterdir()):
        for extra in sorted(folder.iterdir())[1:]:
            extra.unlink()  # one image per class: all of them train
    out = tmp_path / "run"
    res = run_cli("train", shapes, "--method", "features", *TINY, "--out", out)
    assert res.code == 0, res.err
    said = " ".join(res.out.split())
    assert "Accuracy not measured: no image could be held out for validation or test" in said
    res = run_cli("evaluate", out, shapes)
    assert res.code == 1
    said = " ".join(res.err.split())
    loaded = " ".join(caplog.text.split())  # the warning when the bundle is loaded
    assert "no 'unknown' answer (made before tlearn learned one, or with fewer than 10 validation images" in loaded
    assert "Error: The bundle's split has no test images." in said
    assert "Hint: Pass --split train, --split all (every image of DATA)" in said  # not the parts it lacks


def test_the_recall_table_of_many_classes_says_it_shows_the_lowest_few(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    for c in range(21):  # more classes than the table lists in full
        colour = rng.integers(0, 255, 3)
        (tmp_path / "data" / f"c{c:02d}").mkdir(parents=True)
        for i in range(3):
            pixels = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / f"c{c:02d}" / f"{i}.png")
    res = run_cli("train", tmp_path / "data", "--method", "features", *TINY, "--out", tmp_path / "run")
    assert res.code == 0, res.err
    assert "Recall per class on test, worst first (the 10 lowest of 21; the report lists all):" in " ".join(
        res.out.split()
    )
