"""Metrics against scikit-learn, and `tlearn evaluate` on the bundle's own split, new data and broken files."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

import tlearn
from conftest import add_broken_files
from tlearn.artifacts.metrics import Metrics, compute_metrics, expected_calibration_error
from tlearn.artifacts.predictions import PredictionRow, read_predictions, worst_mistakes
from tlearn.core.errors import ConfigError, DataError
from tlearn.data.synthetic import make_sample_dataset
from tlearn.infer.evaluate import evaluate_bundle

CLASSES = ("cat", "dog", "fox", "owl")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, shapes_master: Path) -> Iterator[Path]:
    """A tiny feature-method bundle trained on the 4-class shapes (about 2 s), shared by this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEARN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        out = tmp_path_factory.mktemp("bundle") / "run"
        tlearn.train(
            shapes_master, method="features", backbone="test_efficientnet", weights="none", input_size=64, out=out,
            C=1.0,  # no cross-validation: faster, and the scores do not matter here
        )  # fmt: skip
        yield out


def fixed_predictions() -> tuple[np.ndarray, np.ndarray]:
    """12 images of 4 classes, 'owl' never true; a few confident mistakes."""
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    logits = rng.normal(size=(12, 4))
    logits[np.arange(12), y] += 2.0
    logits[[1, 5, 9], [1, 3, 0]] += 4.0  # three wrong, one of them predicting 'owl'
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_new_data_of_one_class_is_scored_without_a_library_warning() -> None:
    # `tlearn evaluate BUNDLE FOLDER` on a folder of one known class printed scikit-learn's UserWarning
    # ("A single label was found in 'y_true' and 'y_pred'...") above its tables.
    y = np.zeros(10, dtype=np.int64)
    proba = np.full((10, 4), 0.1)
    proba[:, 0] = 0.7  # every image right: one class in the truth and in the predictions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(y, proba, CLASSES)
    assert m.balanced_accuracy == m.accuracy == 1.0


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_metrics_agree_with_scikit_learn() -> None:
    y, proba = fixed_predictions()
    m = compute_metrics(y, proba, CLASSES)
    pred = proba.argmax(1)
    assert m.n == 12
    assert m.accuracy == pytest.approx(accuracy_score(y, pred))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
    assert m.weighted_f1 == pytest.approx(f1_score(y, pred, labels=range(4), average="weighted", zero_division=0))
    # macro F1 over the classes that occur: a class with no images would drag it to 0 for nothing
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0))
    assert m.log_loss == pytest.approx(log_loss(y, proba, labels=range(4)), rel=1e-6)
    assert m.top_k[3] == pytest.approx(top_k_accuracy_score(y, proba, k=3, labels=range(4)))
    assert 5 not in m.top_k  # needs more than 5 classes
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    assert [c.name for c in m.per_class] == list(CLASSES)
    np.testing.assert_allclose([c.precision for c in m.per_class], precision)
    np.testing.assert_allclose([c.recall for c in m.per_class], recall)
    np.testing.assert_allclose([c.f1 for c in m.per_class], f1)
    assert [c.support for c in m.per_class] == list(support)
    np.testing.assert_array_equal(m.confusion, confusion_matrix(y, pred, labels=range(4)))


def test_a_class_nothing_was_predicted_as_has_no_precision_rather_than_zero() -> None:
    from rich.console import Console

    from tlearn.cli.evaluate import _per_class_table

    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.full((6, 4), 0.1)
    proba[np.arange(6), [0, 0, 0, 1, 2, 0]] = 0.7  # never 'owl' (no images either); 2 of the 4 first right
    m = compute_metrics(y, proba, CLASSES)
    assert [c.precision_text() for c in m.per_class] == ["50.0%", "100.0%", "100.0%", "–"]
    console = Console(width=100, record=True)
    console.print(_per_class_table(m, show=10))
    rows = [line.split("│") for line in console.export_text().splitlines() if line.startswith("│ ")]
    assert [cell.strip() for cell in rows[-1][1:-1]] == [CLASSES[3], "–", "–", "–", "0"]
    old = m.to_dict()
    old["per_class"] = [{k: v for k, v in c.items() if k != "predicted"} for c in old["per_class"]]
    assert Metrics.from_dict(old).per_class[3].precision_text() == "0.0%"  # a file from before it: as it was shown


def test_accuracy_is_shown_with_how_well_so_few_images_know_it() -> None:
    def of(right: int, n: int) -> Metrics:
        y = np.zeros(n, dtype=np.int64)
        proba = np.tile([0.9, 0.05, 0.03, 0.02], (n, 1))
        proba[right:] = [0.05, 0.9, 0.03, 0.02]
        return compute_metrics(y, proba, CLASSES)

    assert of(5, 5).accuracy_text() == "100.0% ±20.0"  # five right of five: known to about 20 points, not exactly
    assert of(194, 205).accuracy_text() == "94.6% ±1.6"


def test_metrics_survive_json() -> None:
    y, proba = fixed_predictions()
    m = compute_metrics(y, proba, CLASSES)
    again = Metrics.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.accuracy == m.accuracy and again.top_k == m.top_k and again.per_class == m.per_class
    np.testing.assert_array_equal(again.confusion, m.confusion)


def test_calibration_error_by_hand() -> None:
    # Four predictions at 0.9 confidence of which 3 are right (gap 0.15), two at 0.6 both right (gap 0.4).
    proba = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    y = np.array([0, 0, 0, 1, 0, 0])
    assert expected_calibration_error(y, proba) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    confident_and_right = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(np.array([0, 1]), confident_and_right) == pytest.approx(0.0)


def test_worst_mistakes_are_the_confident_wrong_ones(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text(
        "split,path,true,predicted,confidence,true_probability\n"
        "val,a/1.jpg,cat,cat,0.9900,0.9900\n"
        "val,a/2.jpg,cat,dog,0.6000,0.3000\n"
        "test,b/3.jpg,dog,cat,0.9700,0.0100\n"
        "test,b/4.jpg,dog,fox,0.6000,0.2000\n"
    )
    rows = read_predictions(path)
    assert rows[0] == PredictionRow("val", "a/1.jpg", "cat", "cat", 0.99, 0.99) and not rows[0].wrong
    assert [r.path for r in worst_mistakes(rows, 2)] == ["b/3.jpg", "a/2.jpg"]  # ties broken by path
    assert read_predictions(tmp_path / "absent.csv") == []


def test_test_split_of_the_own_dataset_is_the_runs_test_set(bundle: Path, shapes_master: Path) -> None:
    ev = evaluate_bundle(bundle, shapes_master, split="test")
    split = json.loads((bundle / "split.json").read_text())
    assert sorted(p.relative_to(shapes_master).as_posix() for p in ev.paths) == sorted(split["test"])
    saved = json.loads((bundle / "tlearn.json").read_text())["metrics"]["test"]
    assert ev.metrics.accuracy == pytest.approx(saved["accuracy"])
    assert ev.metrics.log_loss == pytest.approx(saved["log_loss"], abs=1e-3)
    assert "test part of the bundle's split" in ev.source and not ev.notes

    doc = ev.to_dict(mistakes=3)
    json.dumps(doc)  # JSON-ready
    assert doc["n"] == len(split["test"]) and len(doc["mistakes"]) <= 3
    everything = evaluate_bundle(bundle, shapes_master, split="all")
    assert everything.metrics.n == 96
    assert everything.notes == (
        f"{len(split['train'])} of these images trained the model, so the scores are optimistic.",
    )


def test_new_photos_without_splits_are_all_scored(bundle: Path, tmp_path: Path) -> None:
    fresh = make_sample_dataset(tmp_path / "fresh", classes=4, per_class=5, seed=7)
    ev = evaluate_bundle(bundle, fresh)
    assert ev.metrics.n == 20 and ev.metrics.accuracy >= 0.7
    assert "not the dataset the bundle was trained on" in ev.notes[0]
    with pytest.raises(ConfigError, match="--split val needs the bundle's own dataset or one with split folders"):
        evaluate_bundle(bundle, fresh, split="val")
    with pytest.raises(ConfigError, match=r"--split must be one of train, val, test, all\. Got 'tset'"):
        evaluate_bundle(bundle, fresh, split="tset")


def test_new_photos_that_copy_training_images_are_said_to_make_the_scores_optimistic(
    bundle: Path, shapes_master: Path, tmp_path: Path
) -> None:
    fresh = make_sample_dataset(tmp_path / "fresh", classes=4, per_class=5, seed=7)
    split = json.loads((bundle / "split.json").read_text())
    trained = [shapes_master / rel for rel in split["train"][:2] + split["val"][:1]]
    shutil.copy(trained[0], fresh / trained[0].parent.name / "copy.jpg")  # the same bytes
    for k, path in enumerate(trained[1:]):
        img = Image.open(path)  # resized and saved again: a near copy
        img.resize((img.width + 4, img.height + 4)).save(fresh / path.parent.name / f"resaved_{k}.jpg", quality=80)
    ev = evaluate_bundle(bundle, fresh)
    assert ev.metrics.n == 23
    (note,) = ev.notes  # no longer "all of its images are new to the model"
    assert note.startswith("3 of the 23 images copy images that trained or validated the bundle (first: ")
    assert note.endswith("the scores on them are too optimistic.")
    test_only = make_sample_dataset(tmp_path / "other", classes=4, per_class=2, seed=8)
    shutil.copy(shapes_master / split["test"][0], test_only / Path(split["test"][0]).parent.name / "t.jpg")
    assert "new to the model" in evaluate_bundle(bundle, test_only).notes[0]  # a test image never trained it


def test_classes_the_bundle_does_not_know_are_left_out_and_named(bundle: Path, tmp_path: Path) -> None:
    fresh = make_sample_dataset(tmp_path / "fresh", classes=4, per_class=5, seed=7)
    (fresh / "purple_hexagon").mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (128, 0, 128)).save(fresh / "purple_hexagon" / f"{i}.png")
    ev = evaluate_bundle(bundle, fresh, split="all")
    assert ev.unknown == {"purple_hexagon": 3} and ev.metrics.n == 20
    assert ev.notes == ("Left out 3 images of 1 class the bundle does not know: purple_hexagon (3).",)


def test_no_known_class_at_all_is_an_error_with_a_hint(bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    for cls in ("Red_Circle", "ostrich"):
        (other / cls).mkdir(parents=True)
        Image.new("RGB", (64, 64), (200, 0, 0)).save(other / cls / "a.png")
    with pytest.raises(DataError, match=r"None of the classes in .* are classes of the bundle") as err:
        evaluate_bundle(bundle, other, split="all")
    assert err.value.hint is not None and "'Red_Circle' looks like 'red_circle'" in err.value.hint


def test_unreadable_files_are_listed_and_skipped(bundle: Path, shapes: Path) -> None:
    expected = add_broken_files(shapes, "red_circle")
    ev = evaluate_bundle(bundle, shapes, split="all")
    assert ev.metrics.n == 96
    assert {u.path.name: u.reason for u in ev.unreadable}.keys() == expected.keys()


def without_the_mirror(bundle: Path, dest: Path) -> Path:
    """A copy of the bundle with the same weights whose network does not average with the mirror image."""
    out = Path(shutil.copytree(bundle, dest))
    doc = json.loads((out / "tlearn.json").read_text())
    doc["flip_tta"] = False
    (out / "tlearn.json").write_text(json.dumps(doc))
    return out


def test_tta_averages_with_the_mirror_image(bundle: Path, shapes_master: Path, tmp_path: Path) -> None:
    """On a bundle without the mirror built in, --tta changes the probabilities to what the mirror rule
    gives (those of the same network with the mirror built in) and to what `predict --tta` gives."""
    assert json.loads((bundle / "tlearn.json").read_text())["flip_tta"]
    plain_dir = without_the_mirror(bundle, tmp_path / "plain")
    plain = evaluate_bundle(plain_dir, shapes_master, split="val")
    mirrored = evaluate_bundle(plain_dir, shapes_master, split="val", tta=True)
    assert mirrored.tta and mirrored.paths == plain.paths and mirrored.metrics.n == plain.metrics.n > 0
    assert np.abs(mirrored.proba - plain.proba).max() > 1e-3  # the mirror image counts
    assert not any("changes nothing" in note for note in mirrored.notes)
    built_in = evaluate_bundle(bundle, shapes_master, split="val")
    np.testing.assert_allclose(mirrored.proba, built_in.proba, atol=1e-5)
    assert mirrored.metrics.log_loss == pytest.approx(built_in.metrics.log_loss, abs=1e-4)
    predicted = tlearn.load(plain_dir).predict_proba(list(mirrored.paths), tta=True)
    # predict decodes files straight to the crop (pixels within one grey level of evaluate's decode + crop)
    np.testing.assert_allclose(mirrored.proba, predicted, atol=1e-3)
    assert (mirrored.proba.argmax(1) == predicted.argmax(1)).all()

    again = evaluate_bundle(bundle, shapes_master, split="val", tta=True)  # the mirror is there already
    np.testing.assert_allclose(again.proba, built_in.proba, atol=1e-6)
    assert "The bundle already averages every image with its mirror image, so --tta changes nothing." in again.notes


def test_cli_evaluate_says_it_averaged_with_the_mirror(
    run_cli, bundle: Path, shapes_master: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    plain_dir = without_the_mirror(bundle, tmp_path / "plain")
    res = run_cli("evaluate", plain_dir, shapes_master, "--split", "val", "--tta")
    assert res.code == 0, res.err
    assert "with mirror averaging (--tta)" in res.out and "changes nothing" not in res.out
    doc = json.loads(run_cli("evaluate", plain_dir, shapes_master, "--split", "val", "--tta", "--json").out)
    expected = evaluate_bundle(plain_dir, shapes_master, split="val", tta=True)
    assert doc["tta"] is True and doc["metrics"]["log_loss"] == pytest.approx(expected.metrics.log_loss)


def test_cli_evaluate_prints_tables_and_writes_pictures(
    run_cli, bundle: Path, shapes_master: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("evaluate", bundle, shapes_master, "--plots", tmp_path / "pics")
    assert res.code == 0, res.err
    assert "images scored: the test part of the bundle's split" in res.out
    for title in ("Overall", "balanced accuracy", "Per class, lowest recall first", "red_circle"):
        assert title in res.out
    for name in ("confusion.png", "confusion_normalised.png"):
        with Image.open(tmp_path / "pics" / name) as png:
            assert png.width > 300

    as_json = run_cli("evaluate", bundle, shapes_master, "--split", "val", "--json")
    doc = json.loads(as_json.out)
    assert doc["split"] == "val" and doc["metrics"]["n"] == doc["n"] > 0


def test_cli_evaluate_errors_are_one_line(run_cli, bundle: Path, shapes_master: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("evaluate", tmp_path / "nope", shapes_master)
    assert res.code == 1 and res.err.strip().startswith("Error: No such bundle") and "Traceback" not in res.err
    res = run_cli("evaluate", bundle, shapes_master, "--split", "bogus")
    assert res.code == 1 and "--split must be one of train, val, test, all. Got 'bogus'." in res.err


def test_a_new_dataset_with_split_folders_is_scored_on_its_own_test_folder(bundle: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_sample_dataset(photos / "train", classes=4, per_class=3, seed=5)
    make_sample_dataset(photos / "test", classes=4, per_class=2, seed=6)
    ev = evaluate_bundle(bundle, photos)
    assert ev.metrics.n == 8 and ev.source == "the test part of photos (8 images)"
    assert all(p.parent.parent.name == "test" for p in ev.paths)
    with pytest.raises(DataError, match="has no val part; it has test, train") as err:
        evaluate_bundle(bundle, photos, split="val")
    assert err.value.hint == "Pass --split test or --split train, or --split all to score every image."
