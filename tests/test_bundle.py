"""Bundles: what is saved predicts the same after loading; broken bundles say what is wrong."""

from __future__ import annotations

import json
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
