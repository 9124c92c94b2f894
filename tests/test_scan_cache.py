"""A rerun on the same files reuses the scan cache: no image is decoded again for its check data."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tlearn
from tlearn.data import images
from tlearn.data.scan import MetaStore, scan_images
from tlearn.data.sources import load_dataset
from tlearn.data.synthetic import make_sample_dataset

TINY = {"backbone": "test_efficientnet", "weights": "none", "input_size": 64, "C": 1.0}


Call = tuple[str, object]  # (the calling module, what it decoded: a file's bytes or its path)


def scanned(calls: list[Call]) -> list[Call]:
    """The decoder calls of the scan and of training. The report decodes the few misclassified
    images for its gallery, from their files: those are left out."""
    return [(module, source) for module, source in calls if not module.startswith("tlearn.report")]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every call of the image decoder, from whichever tlearn module calls it (threads included)."""
    real = images.decode_image
    calls: list[Call] = []
    lock = threading.Lock()

    def counting(source: object, **kwargs: object):  # type: ignore[no-untyped-def]
        with lock:
            calls.append((sys._getframe(1).f_globals.get("__name__", "?"), source))
        return real(source, **kwargs)  # type: ignore[arg-type]

    patched = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("tlearn") and getattr(module, "decode_image", None) is real:
            monkeypatch.setattr(module, "decode_image", counting)
            patched += 1
    assert patched >= 2  # where it is defined and where the scan calls it
    return calls


def read(out: Path, name: str) -> object:
    return json.loads((out / name).read_text()) if name.endswith(".json") else (out / name).read_text()


def test_a_rerun_decodes_nothing_and_gives_the_same_split_checks_and_metrics(
    shapes: Path, tmp_path: Path, decodes: list[Call]
) -> None:
    first = tlearn.train(shapes, method="features", out=tmp_path / "a", **TINY)
    assert len(scanned(decodes)) == 96  # each image once: the scan keeps the pixels it decoded for training
    assert len(MetaStore.open().entries) == 96  # the check data of every image, on disk

    decodes.clear()
    second = tlearn.train(shapes, method="features", out=tmp_path / "b", **TINY)
    assert scanned(decodes) == []  # check data from the scan cache, features from the feature cache
    for name in ("split.json", "check.json", "predictions.csv"):
        assert read(tmp_path / "a", name) == read(tmp_path / "b", name), name
    assert second.split_counts == first.split_counts
    for part in ("val", "test"):
        assert second.metrics[part].accuracy == first.metrics[part].accuracy
        assert second.metrics[part].log_loss == pytest.approx(first.metrics[part].log_loss, abs=1e-6)


def test_only_new_or_changed_files_are_decoded_on_a_rerun(shapes: Path, tmp_path: Path, decodes: list[Call]) -> None:
    tlearn.train(shapes, method="features", out=tmp_path / "a", **TINY)
    others = make_sample_dataset(tmp_path / "others", classes=4, per_class=2, seed=7)
    shutil.copy(others / "green_square" / "green_square_000.jpg", shapes / "green_square" / "new_square.jpg")
    changed = shapes / "blue_triangle" / "blue_triangle_003.jpg"
    shutil.copy(others / "blue_triangle" / "blue_triangle_001.jpg", changed)  # same name, new content

    decodes.clear()
    result = tlearn.train(shapes, method="features", out=tmp_path / "b", **TINY)
    assert len(scanned(decodes)) == 2  # the new file and the changed one
    assert result.split_counts["train"] + result.split_counts["val"] + result.split_counts["test"] == 97


def test_a_second_scan_gives_the_same_check_data_and_decodes_pixels_only_when_used(
    shapes: Path, decodes: list[Call]
) -> None:
    samples = load_dataset(shapes).samples
    first = scan_images(samples, short_side=72)
    assert len(scanned(decodes)) == len(samples) == 96
    decodes.clear()
    second = scan_images(samples, short_side=72)
    assert scanned(decodes) == []
    assert second.sha256 == first.sha256 and second.sizes == first.sizes and second.modes == first.modes
    np.testing.assert_array_equal(second.dhash, first.dhash)
    np.testing.assert_array_equal(second.thumbs, first.thumbs)
    np.testing.assert_array_equal(second.pixels[5], first.pixels[5])  # decoded now, on first use
    assert len(scanned(decodes)) == 1


def test_another_cache_folder_starts_empty(
    shapes: Path, tmp_path: Path, decodes: list[Call], monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = load_dataset(shapes).samples
    scan_images(samples)
    monkeypatch.setenv("TLEARN_CACHE_DIR", str(tmp_path / "elsewhere"))
    decodes.clear()
    scan_images(samples)
    assert len(scanned(decodes)) == 96
