"""Likely label errors and outliers: swapped labels come out on top, a noise image is far from every class."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlearn.artifacts.label_issues import LABEL_ISSUES_FILE, read_label_issues
from tlearn.training.label_issues import can_check, find_label_issues


def _clusters(seed: int = 0, classes: int = 5, per_class: int = 30, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative features (as after a ReLU) around one centre per class, with overlap to spare."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    feats = np.abs(centres[labels] + rng.normal(0, 0.35, size=(len(labels), dim)))
    return feats, labels


def test_swapped_labels_come_out_on_top_with_their_true_class() -> None:
    feats, truth = _clusters()
    given = truth.copy()
    swapped = np.array([3, 40, 77, 100])
    given[swapped] = (truth[swapped] + 1) % 5
    found = find_label_issues(feats, given, num_classes=5)
    top = found.mislabelled[: len(swapped)]
    assert sorted(f.index for f in top) == sorted(swapped.tolist())
    assert all(f.suggested == truth[f.index] for f in top)
    assert all(0 < f.score <= f.confidence <= 1 for f in top)
    margins = [f.score for f in found.mislabelled]
    assert margins == sorted(margins, reverse=True)


def test_clean_labels_flag_nothing() -> None:
    feats, labels = _clusters(seed=1)
    found = find_label_issues(feats, labels, num_classes=5)
    assert found.flags == ()
    assert found.folds == 5


def test_a_noise_vector_is_an_outlier_not_a_label_issue() -> None:
    feats, labels = _clusters(seed=2)
    noise = np.random.default_rng(9).gamma(1.0, 1.0, size=(1, feats.shape[1])) * 3
    feats, labels = np.vstack([feats, noise]), np.append(labels, 0)
    found = find_label_issues(feats, labels, num_classes=5)
    assert [f.index for f in found.outliers] == [len(labels) - 1]
    assert found.outliers[0].suggested == -1
    assert len(labels) - 1 not in {f.index for f in found.mislabelled}


def test_copies_stay_in_one_fold_so_a_copy_cannot_vouch_for_a_wrong_label() -> None:
    feats, truth = _clusters(seed=3)
    given = truth.copy()
    given[5] = 2  # a wrong label, and a copy of the image with the same wrong label
    feats, given = np.vstack([feats, feats[5:6]]), np.append(given, 2)
    groups = np.arange(len(given))
    groups[-1] = 5
    found = find_label_issues(feats, given, num_classes=5, groups=groups)
    assert {5, len(given) - 1} <= {f.index for f in found.mislabelled}


def test_classes_of_one_image_cannot_be_checked() -> None:
    assert not can_check(np.array([0, 0, 1]))
    assert not can_check(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2]))  # two copies of one image
    assert can_check(np.array([0, 0, 1, 1]))


# --- end to end, on images ---------------------------------------------------------------------------


def _swap_and_add_noise(root: Path) -> tuple[set[str], str]:
    """Move the first image of three classes into the next class's folder; add a noise image."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    moved = set()
    for a, b in itertools.pairwise(classes[:4]):
        src = sorted((root / a).iterdir())[0]
        dst = root / b / f"was_{src.name}"
        src.rename(dst)
        moved.add(f"{b}/{dst.name}")
    noise = (np.random.default_rng(0).random((128, 128)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(noise).convert("RGB").save(root / classes[0] / "noise.png")
    return moved, f"{classes[0]}/noise.png"


@pytest.fixture
def noisy_shapes(shapes: Path) -> tuple[Path, set[str], str]:
    moved, noise = _swap_and_add_noise(shapes)
    return shapes, moved, noise


def test_check_labels_lists_the_swapped_images_and_writes_the_csv(  # type: ignore[no-untyped-def]
    run_cli, noisy_shapes: tuple[Path, set[str], str], tmp_path: Path
) -> None:
    data, moved, noise = noisy_shapes
    out = tmp_path / "issues.csv"
    res = run_cli("check", data, "--labels", "--input-size", "64", "--csv", out)
    assert res.code == 0, res.err
    assert "may be mislabelled (3)" in res.out
    assert "far from every class" in res.out
    assert str(out.name) in res.out
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["path", "given", "suggested", "score"]
    labels = [r for r in rows if r["issue"] == "label"]
    assert {r["path"] for r in labels[:3]} == moved
    for r in labels[:3]:  # the suggestion is the folder the image came from
        assert r["path"].split("/")[1].startswith("was_" + r["suggested"])
    assert noise in {r["path"] for r in rows if r["issue"] == "outlier"}
    assert all(p.exists() for p in (data / m for m in moved))  # nothing moved or deleted

    res = run_cli("check", data, "--labels", "--input-size", "64", "--csv", out, "--json")
    doc = json.loads(res.out)["label_check"]
    assert {r["path"] for r in doc["mislabelled"][:3]} == moved
    assert doc["outliers"][0]["suggested"] == ""


def test_check_labels_never_replaces_a_file_it_did_not_write(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    theirs = tmp_path / "label_issues.csv"
    theirs.write_text("id,notes\n1,my own list\n")
    res = run_cli("check", shapes, "--labels", "--input-size", "64", "--csv", theirs)
    assert res.code == 1
    assert res.err.startswith(f"Error: --csv {theirs} exists and is not a list that tlearn wrote")
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 2  # the error and its hint
    assert theirs.read_text() == "id,notes\n1,my own list\n"


def test_train_counts_label_issues_and_the_report_shows_them(  # type: ignore[no-untyped-def]
    run_cli, noisy_shapes: tuple[Path, set[str], str], tmp_path: Path
) -> None:
    data, moved, _ = noisy_shapes
    out = tmp_path / "run"
    res = run_cli("train", data, "--method", "features", "--input-size", "64", "--out", out, "--C", "1")
    assert res.code == 0, res.err
    assert "3 images may be mislabelled" in res.out
    assert LABEL_ISSUES_FILE in res.out
    issues = read_label_issues(out / LABEL_ISSUES_FILE)
    assert issues is not None
    assert {i.path for i in issues if i.issue == "label"} >= moved
    html = (out / "report.html").read_text()
    assert 'id="labels"' in html
    assert "was_" in html and "Images whose label may be wrong" in html
    shutil.rmtree(out)
