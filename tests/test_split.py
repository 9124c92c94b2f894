"""Splits: stratified, seeded, duplicate-aware, reproducible from the saved file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tlearn.core.errors import ConfigError, DataError
from tlearn.data.sources import Sample
from tlearn.data.split import load_split, save_split, split_from_dataset, stratified_split

LABELS = ["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["d"] * 3


def test_every_class_is_in_every_part_with_its_share() -> None:
    s = stratified_split(LABELS, val_frac=0.2, test_frac=0.2, seed=0)
    for part in (s.train, s.val, s.test):
        assert set(np.array(LABELS)[part]) == {"a", "b", "c", "d"}
    assert Counter(np.array(LABELS)[s.test])["a"] == 10
    assert sorted(np.concatenate([s.train, s.val, s.test]).tolist()) == list(range(len(LABELS)))


def test_same_seed_same_split_other_seed_other_split() -> None:
    one = stratified_split(LABELS, seed=3)
    two = stratified_split(LABELS, seed=3)
    other = stratified_split(LABELS, seed=4)
    assert np.array_equal(one.test, two.test) and np.array_equal(one.val, two.val)
    assert not np.array_equal(one.test, other.test)


def test_test_part_does_not_depend_on_val_frac() -> None:
    without_val = stratified_split(LABELS, val_frac=0.0, test_frac=0.3, seed=0)
    with_val = stratified_split(LABELS, val_frac=0.1, test_frac=0.3, seed=0)
    assert np.array_equal(without_val.test, with_val.test)
    assert len(without_val.val) == 0


def test_tiny_classes_keep_a_training_image() -> None:
    s = stratified_split(["x", "y", "y"], val_frac=0.3, test_frac=0.3, seed=0)
    assert 0 in s.train
    assert len(s.train) >= 2


def test_duplicates_stay_in_one_part() -> None:
    labels = ["a"] * 20 + ["b"] * 20
    groups = list(range(40))
    for i in range(0, 20, 2):  # pairs of copies
        groups[i + 1] = groups[i]
    for seed in range(5):
        s = stratified_split(labels, val_frac=0.2, test_frac=0.2, seed=seed, groups=groups)
        part_of = {int(i): p for p, ix in s.parts().items() for i in ix}
        assert all(part_of[i] == part_of[i + 1] for i in range(0, 20, 2))


def test_bad_fractions_name_the_flags() -> None:
    with pytest.raises(ConfigError, match=r"--val-frac must be at least 0 and below 1. Got 1.5"):
        stratified_split(LABELS, val_frac=1.5)
    with pytest.raises(ConfigError, match="must leave images for training"):
        stratified_split(LABELS, val_frac=0.5, test_frac=0.5)


def test_dataset_split_without_val_carves_it_from_train() -> None:
    samples = [Sample(Path(f"{i}.jpg"), "ab"[i % 2], "train") for i in range(40)]
    samples += [Sample(Path(f"t{i}.jpg"), "ab"[i % 2], "test") for i in range(10)]
    s = split_from_dataset(samples, val_frac=0.2, seed=0)  # 20% of 50 images = 10, 5 per class
    assert len(s.test) == 10 and len(s.val) == 10
    assert not set(s.val) & set(s.train)
    assert any("held out" in n for n in s.notes)


def test_saved_split_reloads_identically(tmp_path: Path) -> None:
    root = tmp_path / "data"
    samples = [Sample(root / lab / f"{i}.jpg", lab) for i, lab in enumerate(LABELS)]
    s = stratified_split(LABELS, seed=7)
    save_split(s, samples, root, tmp_path / "split.json")
    back = load_split(tmp_path / "split.json", samples, root)
    for p in ("train", "val", "test"):
        assert np.array_equal(s.parts()[p], back.parts()[p])
    assert back.seed == 7 and back.origin == "file"


# --- splits given by the dataset, and split files, checked against the dataset ----------------------


def test_a_class_in_val_that_train_lacks_is_refused_naming_it_and_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    samples = [Sample(root / "train" / c / f"{i}.jpg", c, "train") for c in ("cat", "dog") for i in range(10)]
    samples += [Sample(root / "val" / c / f"{i}.jpg", c, "val") for c in ("cat", "dog", "zebra") for i in range(3)]
    samples += [Sample(root / "test" / "okapi" / "0.jpg", "okapi", "test")]
    with pytest.raises(DataError) as info:
        split_from_dataset(samples, seed=0)
    message = str(info.value)
    assert "\n" not in message
    assert "zebra" in message and str(root / "val" / "zebra") in message
    assert "okapi" in message and str(root / "test" / "okapi") in message
    assert "train" in message and "--val-frac" not in message


def test_a_csv_split_with_a_class_only_in_test_names_the_class() -> None:
    samples = [Sample(Path(f"img/{i}.jpg"), "ab"[i % 2], "train") for i in range(20)]
    samples += [Sample(Path("img/x.jpg"), "c", "test")]
    with pytest.raises(DataError, match=r"test part holds a class the train part lacks: c\b"):
        split_from_dataset(samples, seed=0)


def saved(tmp_path: Path, labels: list[str], name: str = "data") -> tuple[Path, list[Sample], Path]:
    root = tmp_path / name
    samples = [Sample(root / lab / f"{i}.jpg", lab) for i, lab in enumerate(labels)]
    save_split(stratified_split(labels, seed=0), samples, root, tmp_path / f"{name}-split.json")
    return tmp_path / f"{name}-split.json", samples, root


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json {", "not JSON"),
        ("[1, 2, 3]", "not a split file"),
        ('{"train": "a.jpg"}', "not a split file"),
        ('{"val": ["a.jpg"]}', "not a split file"),
        ('{"train": [1, 2]}', "not a split file"),
    ],
)
def test_a_malformed_split_file_says_so_and_names_the_file(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(text)
    _, samples, root = saved(tmp_path, LABELS)
    with pytest.raises(DataError) as info:
        load_split(path, samples, root)
    assert why in info.value.message and str(path) in info.value.message
    assert "--val-frac" not in str(info.value)


def test_a_split_file_of_another_dataset_says_how_many_images_it_misses(tmp_path: Path) -> None:
    path, _, _ = saved(tmp_path, LABELS[:31], name="other")  # a run on 31 images
    _, samples, root = saved(tmp_path, ["a"] * 60 + ["b"] * 60)  # this dataset: 120 images
    with pytest.raises(DataError) as info:
        load_split(path, samples, root)
    err = info.value
    assert str(path) in err.message and "120 images" in err.message
    assert "leaves out 120" in err.message and "31 files" in err.message
    assert err.hint is not None and "another dataset" in err.hint and "--val-frac" not in err.hint


def test_a_split_file_that_covers_part_of_the_dataset_is_refused(tmp_path: Path) -> None:
    path, samples, root = saved(tmp_path, LABELS)
    more = [*samples, *(Sample(root / "a" / f"new{i}.jpg", "a") for i in range(5))]
    with pytest.raises(DataError, match=rf"leaves out 5 of the {len(more)} images"):
        load_split(path, more, root)


def test_a_split_file_that_lists_an_image_twice_is_refused(tmp_path: Path) -> None:
    path, samples, root = saved(tmp_path, LABELS)
    doc = json.loads(path.read_text())
    doc["val"].append(doc["train"][0])
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"puts 1 image in two parts"):
        load_split(path, samples, root)
