"""Splits: stratified, seeded, duplicate-aware, reproducible from the saved file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tlearn.core.errors import ConfigError
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
