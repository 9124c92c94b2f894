"""Bundles: what is saved predicts the same after loading; broken bundles say what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch

from tlearn.artifacts.bundle import BundleConfig, load_bundle, save_bundle
from tlearn.core.errors import BundleError
from tlearn.models.backbones import create_backbone
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec, build_head


def saved(tmp_path: Path, *, levels: tuple[int, ...] = (), flip: bool = False) -> tuple[Classifier, Path]:
    b = create_backbone("test_resnet", weights="none", input_size=48)
    trunk = FeatureTrunk(b.model, levels)
    width = trunk(torch.zeros(1, 3, 48, 48)).shape[1]
    spec = HeadSpec(num_classes=3, in_features=width, hidden=8, dropout=0.1)
    clf = Classifier(trunk, build_head(spec), mean=b.preprocessing.mean, std=b.preprocessing.std, flip_tta=flip).eval()
    config = BundleConfig(
        classes=("a", "b", "c"), architecture=b.architecture, backbone=b.name, create_kwargs=b.create_kwargs,
        weights=b.weights, levels=levels, head=spec, preprocessing=b.preprocessing, method="test", flip_tta=flip,
    )  # fmt: skip
    return clf, save_bundle(clf, config, tmp_path / "bundle")


@pytest.mark.parametrize(("levels", "flip"), [((), False), ((1, 2), True)])
def test_reloaded_bundle_computes_the_same(tmp_path: Path, levels: tuple[int, ...], flip: bool) -> None:
    clf, path = saved(tmp_path, levels=levels, flip=flip)
    back, config = load_bundle(path)
    x = torch.rand(4, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(back(x), clf(x))
    assert config.classes == ("a", "b", "c") and config.flip_tta is flip
    assert config.versions["torch"] and config.created


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="No such bundle"):
        load_bundle(tmp_path / "nope")


def test_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a tlearn bundle"):
        load_bundle(tmp_path)


def test_other_format_version_says_which(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    doc = json.loads((path / "tlearn.json").read_text())
    doc["format"] = 99
    doc["versions"]["tlearn"] = "9.0"
    (path / "tlearn.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"format 99 \(made by tlearn 9.0\)"):
        load_bundle(path)


def test_damaged_weights(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(path)


def edit_config(path: Path, **changes: object) -> None:
    doc = json.loads((path / "tlearn.json").read_text())
    doc.update(changes)
    (path / "tlearn.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("classes", "says"),
    [
        (["a", "b"], "tlearn.json lists 2 classes (a, b) but the network has 3 outputs"),
        (["a", "b", "c", "d"], "tlearn.json lists 4 classes (a, b, c, d) but the network has 3 outputs"),
        (["a", "a", "c"], "tlearn.json lists the class 'a' twice"),
    ],
)
def test_classes_edited_in_tlearn_json_are_refused_on_load_saying_which_is_wrong(
    tmp_path: Path, classes: list[str], says: str
) -> None:
    _, path = saved(tmp_path)
    edit_config(path, classes=classes)
    with pytest.raises(BundleError, match=re.escape(says)) as info:
        load_bundle(path)
    assert "\n" not in str(info.value)
    assert "classes" in (info.value.hint or "")


def test_saved_bundle_records_the_sha256_of_its_weights(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    doc = json.loads((path / "tlearn.json").read_text())
    assert doc["weights_sha256"] == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_weights_replaced_after_saving_are_refused_on_load(tmp_path: Path) -> None:
    _, path = saved(tmp_path / "one")
    torch.manual_seed(1)
    _, other = saved(tmp_path / "two")  # same architecture and shapes, other weights: it would load silently
    shutil.copy(other / "model.safetensors", path / "model.safetensors")
    with pytest.raises(BundleError, match=r"model\.safetensors is not the file this bundle saved") as info:
        load_bundle(path)
    assert "SHA-256" in info.value.message and "\n" not in str(info.value)


def test_bundle_saved_without_a_digest_still_loads(tmp_path: Path) -> None:
    clf, path = saved(tmp_path)
    doc = json.loads((path / "tlearn.json").read_text())
    del doc["weights_sha256"]  # a bundle written before the digest was recorded
    (path / "tlearn.json").write_text(json.dumps(doc))
    back, _ = load_bundle(path)
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(back(x), clf(x))


def test_damaged_bundle_is_one_line_even_when_torch_says_more(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    doc = json.loads((path / "tlearn.json").read_text())
    doc["head"]["hidden"] = 16  # the weights hold a hidden layer of 8: torch lists every mismatch, line by line
    del doc["weights_sha256"]
    (path / "tlearn.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="damaged or incomplete") as info:
        load_bundle(path)
    assert "\n" not in str(info.value) and len(info.value.message) < 400


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_weights_file_gets_the_permissions_of_the_rest_of_the_bundle(tmp_path: Path, umask: int) -> None:
    """model.safetensors was 0600 whatever the umask (safetensors creates it so): others could not read it."""
    before = os.umask(umask)
    try:
        _, path = saved(tmp_path)
    finally:
        os.umask(before)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()}
    assert modes == {"model.safetensors": 0o666 & ~umask, "tlearn.json": 0o666 & ~umask}
