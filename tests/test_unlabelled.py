"""`tlearn train --unlabelled DIR`: confident guesses teach the head, never a copy of a labelled image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import add_broken_files
from tlearn.core.errors import ConfigError
from tlearn.data.synthetic import make_sample_dataset
from tlearn.training.config import TrainConfig
from tlearn.training.linear import fit_linear
from tlearn.training.pseudo import Labelled, Views, confident_share, self_train

TINY = ("--backbone", "test_efficientnet", "--weights", "none", "--input-size", "64", "--C", "1")


def _blobs(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(len(centres)), n)
    return centres[y] + rng.normal(scale=spread, size=(len(y), centres.shape[1])), y


def _head(x: np.ndarray, y: np.ndarray, owners: np.ndarray):  # type: ignore[no-untyped-def]
    fit = fit_linear(x, y, num_classes=4, C=1.0, groups=owners)
    return None, fit.logits, {"C": 1.0}


def _accuracy(score, x: np.ndarray, y: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    return float((score(x).argmax(1) == y).mean())


def _self_train(x: np.ndarray, y: np.ndarray, pool: np.ndarray, val: np.ndarray, val_y: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    ids = np.arange(len(y))
    labelled = Labelled(x, y, ids, Views(x, None), ids, y)
    start = _head(x, y, ids)
    trained = self_train(
        labelled, Views(pool, None), Views(val, None), val_y, start=start, fit=_head, C=1.0, num_classes=4, **kw
    )
    return start, trained


def test_guesses_on_unlabelled_features_improve_validation_and_test() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 50)) * 0.5  # overlapping classes: two labels per class give about 78%
    x, y = _blobs(rng, centres, 2, 1.0)  # two labelled per class
    pool, pool_y = _blobs(rng, centres, 60, 1.0)
    val, val_y = _blobs(rng, centres, 15, 1.0)
    test, test_y = _blobs(rng, centres, 100, 1.0)
    start, trained = _self_train(x, y, pool, val, val_y)
    assert trained.val_after > trained.val_before
    assert trained.rounds >= 2 and len(trained.taken) >= 120  # later rounds trust more of the pool
    assert (trained.labels == pool_y[trained.taken]).mean() > 0.85  # the guesses used are mostly right
    assert _accuracy(trained.head[1], test, test_y) > _accuracy(start[1], test, test_y) + 0.1


def test_one_validation_photo_per_class_is_not_the_only_evidence() -> None:
    """With 1 validation photo per class, the held-out labelled training images decide too."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 50)) * 0.5
    x, y = _blobs(rng, centres, 4, 1.0)  # 4 labelled training images per class
    pool, _ = _blobs(rng, centres, 60, 1.0)
    val, val_y = _blobs(rng, centres, 1, 1.0)  # and 1 validation image per class
    test, test_y = _blobs(rng, centres, 100, 1.0)
    start, trained = _self_train(x, y, pool, val, val_y)
    assert trained.checked == 16 + 4  # every labelled image scores the guesses, held out from its fold
    assert trained.right_after > trained.right_before and len(trained.taken) > 0
    assert _accuracy(trained.head[1], test, test_y) > _accuracy(start[1], test, test_y) + 0.05


def test_guesses_that_do_not_help_are_not_used() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 50)) * 0.5
    x, y = _blobs(rng, centres, 5, 1.0)
    val, val_y = _blobs(rng, centres, 15, 1.0)
    _blobs(rng, centres, 100, 1.0)  # (a test set, drawn to keep the draws where the case was found)
    junk = rng.normal(size=(300, 50)) * 2.0  # photos of nothing in particular
    owners = np.arange(len(y))
    start = _head(x, y, owners)
    guessed = _head(np.concatenate([x, junk]), np.concatenate([y, start[1](junk).argmax(1)]), np.arange(len(y) + 300))
    assert _accuracy(guessed[1], val, val_y) < _accuracy(start[1], val, val_y)  # all of them would hurt
    _, trained = _self_train(x, y, junk, val, val_y)
    assert len(trained.taken) == 0 and trained.rounds == 0
    assert trained.val_after == trained.val_before and trained.right_after == trained.right_before


def test_each_guessed_class_gives_its_own_most_confident_share() -> None:
    guess = np.array([0] * 16 + [1] * 4)  # a class the head over-predicts, and a small one
    confidence = np.linspace(1.0, 0.5, 20)
    taken = confident_share(confidence, guess, 0.25)
    assert list(taken) == [0, 1, 2, 3, 16]  # a quarter of each, the most confident first
    assert len(confident_share(confidence, guess, 1.0)) == 20


def _copies_of(images: list[Path], into: Path) -> int:
    """Exact copies of the even-numbered images, near copies (resized, re-saved) of the odd ones."""
    into.mkdir(parents=True)
    for k, src in enumerate(images):
        if k % 2 == 0:
            shutil.copy(src, into / f"exact_{k}.jpg")
        else:
            img = Image.open(src).convert("RGB")
            img.resize((img.width - 3, img.height - 2)).save(into / f"near_{k}.jpg", quality=75)
    return len(images)


def test_unlabelled_never_trains_on_copies_of_labelled_images(shapes: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    labelled = sorted(shapes.rglob("*.jpg"))
    pool = make_sample_dataset(tmp_path / "pool", classes=4, per_class=4, seed=11)  # 16 new photos
    copies = _copies_of(labelled, pool / "copies")  # every labelled image: train, val and test
    add_broken_files(pool, "red_circle")
    out = tmp_path / "run"
    res = run_cli("train", shapes, "--method", "features", *TINY, "--unlabelled", pool, "--out", out)
    assert res.code == 0, res.err
    record = json.loads((out / "tlearn.json").read_text())["details"]["unlabelled"]
    assert record["found"] == 16 + copies + 3
    assert record["excluded"] == copies and record["unreadable"] == 3
    assert record["used"] <= 16  # only the new photos can be used
    assert sum(record["class_counts"].values()) == record["used"]
    assert record["val_after"] >= record["val_before"]
    said = " ".join(res.out.split())  # the summary line wraps at the terminal's width
    assert "Unlabelled:" in said and f"left out {copies} copies of labelled images" in said
    assert f"of {record['checked']} right" in said and record["checked"] == 64 + 16  # every labelled image but the test
    assert "Photos without labels" in (out / "report.html").read_text()


def test_unlabelled_options_are_checked(shapes: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="--unlabelled works with --method features or auto"):
        TrainConfig(data=shapes, method="finetune", unlabelled=tmp_path)
    with pytest.raises(ConfigError, match="--head logistic or svm"):
        TrainConfig(data=shapes, method="features", head="softmax", unlabelled=tmp_path)
    pool = make_sample_dataset(tmp_path / "pool", classes=2, per_class=2, seed=3)
    res = run_cli("train", shapes, "--method", "features", *TINY, "--val-frac", "0", "--unlabelled", pool)
    assert res.code == 1 and "needs validation images" in res.err
    res = run_cli("train", shapes, "--method", "features", *TINY, "--unlabelled", tmp_path / "nowhere")
    assert res.code == 1 and "is not a folder" in res.err


def test_an_unlabelled_folder_inside_the_dataset_is_refused_before_any_work(  # type: ignore[no-untyped-def]
    shapes: Path, tmp_path: Path, run_cli
) -> None:
    inside = make_sample_dataset(shapes / "unlabelled", classes=2, per_class=3, seed=4)  # it would be a class too
    for pool in (inside, shapes):
        res = run_cli("train", shapes, *TINY, "--unlabelled", pool, "--out", tmp_path / "run")
        assert res.code == 1, res.out
        assert f"Error: --unlabelled {pool} is inside the dataset folder {shapes}" in " ".join(res.err.split())
        assert not (tmp_path / "run").exists()


def test_unlabelled_photos_that_all_copy_labelled_images_are_an_error_not_a_crash(  # type: ignore[no-untyped-def]
    shapes: Path, tmp_path: Path, run_cli
) -> None:
    copies = _copies_of(sorted(shapes.rglob("*.jpg"))[:6], tmp_path / "pool")
    (tmp_path / "pool" / "broken").mkdir()
    add_broken_files(tmp_path / "pool", "broken")
    res = run_cli("train", shapes, *TINY, "--unlabelled", tmp_path / "pool", "--out", tmp_path / "run")
    assert res.code == 1, res.out
    said = " ".join(res.err.split())
    assert f"none of its {copies + 3} image files can be used: {copies} copy labelled images, 3 cannot be read" in said
    assert "bug in tlearn" not in said
