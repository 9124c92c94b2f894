"""README.md in every bundle: a Hugging Face model card that the Hub's own parser reads, with the run's numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from tlearn.report.model_card import MODEL_CARD_FILE, weights_license, write_model_card
from tlearn.report.page import write_report


@pytest.fixture
def run_dir(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the trained bundle, which a test may edit."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "tlearn.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def test_every_run_writes_a_card_the_hub_parses(tiny_bundle: Path) -> None:
    path = tiny_bundle / MODEL_CARD_FILE
    assert path.is_file(), "tlearn train writes README.md beside tlearn.json"
    card = ModelCard.load(path)  # the Hub's parser: front matter and model-index are valid
    data = card.data
    assert data.library_name == "tlearn"
    assert data.pipeline_tag == "image-classification"
    assert data.datasets == ["shapes"]
    assert {"tlearn", "image-classification", "timm", "test_efficientnet"} <= set(data.tags)
    assert "transfer-learning" not in data.tags  # the tiny bundle starts from random weights
    assert data.license == "unknown"
    assert (metadata_load(path) or {})["library_name"] == "tlearn"
    for heading in ("## Classes", "## Data and its checks", "## Method", "## Metrics", "## Limits", "## How to use"):
        assert heading in card.text


def test_model_index_holds_the_metrics_of_tlearn_json(tiny_bundle: Path) -> None:
    metrics = json.loads((tiny_bundle / "tlearn.json").read_text())["metrics"]
    name, results = model_index_to_eval_results((metadata_load(tiny_bundle / MODEL_CARD_FILE) or {})["model-index"])
    assert name == "bundle"
    found = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    splits = {"val": "validation", "test": "test"}
    expected = {
        (splits[part], kind): m[key]
        for part, m in metrics.items()
        for kind, key in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced_accuracy"), ("f1", "macro_f1"))
    }
    assert found == expected  # exactly, not rounded
    assert {r.task_type for r in results} == {"image-classification"}
    assert {r.dataset_name for r in results} == {"shapes"}
    assert all(r.metric_args == {"average": "macro"} for r in results if r.metric_type == "f1")


def test_card_reports_the_data_checks_the_method_and_how_to_load(run_dir: Path) -> None:
    check = json.loads((run_dir / "check.json").read_text())
    check["unreadable"] = [{"path": "red_circle/bad.jpg", "label": "red_circle", "reason": "truncated"}]
    check["duplicates"] = [{"kind": "exact", "scope": "within class", "paths": ["a.png", "b.png"]}]
    (run_dir / "check.json").write_text(json.dumps(check))
    text = write_model_card(run_dir).read_text()
    for cls, n in check["counts"].items():
        assert f"| {cls} | {n} |" in text
    assert "1 unreadable image file, skipped: 1 truncated" in text
    assert "1 group of duplicate images (1 within class)" in text
    assert "logistic regression" in text and "Why:" in text
    for part, m in json.loads((run_dir / "tlearn.json").read_text())["metrics"].items():
        name = {"val": "validation"}.get(part, part)
        assert (
            f"| {name} | {m['n']} | {m['accuracy']:.1%} | {m['balanced_accuracy']:.1%} | {m['macro_f1']:.1%} |" in text
        )
    assert 'tlearn.load("bundle")' in text and "tlearn predict bundle" in text and "tlearn export bundle" in text
    assert "crop the center 64 × 64 px" in text


def test_card_says_what_the_model_answers_for_a_picture_of_none_of_its_classes(run_dir: Path) -> None:
    recall = json.loads((run_dir / "tlearn.json").read_text())["unknown"]["recall"]
    text = write_model_card(run_dir).read_text()  # it said "answers one of its 4 classes for anything" here too
    assert "answers 'unknown' only for pictures far from its training images" in text
    assert f"keeps {recall:.1%} of its known validation images" in text
    edit_config(run_dir, unknown=None)  # a bundle without an unknown answer
    text = write_model_card(run_dir).read_text()
    assert "answers one of its 4 classes for anything" in text and "'unknown'" not in text


def test_card_quotes_auto_explanation_and_escapes_class_names(run_dir: Path) -> None:
    doc = json.loads((run_dir / "tlearn.json").read_text())
    odd = "<b>red|circle</b> *x*"
    doc["classes"][2] = odd
    for part in doc["metrics"].values():
        part["per_class"][2]["name"] = odd
    doc["details"]["auto"] = {"evidence": {}, "decision": {"method": "features"}, "explanation": "Few images: frozen."}
    (run_dir / "tlearn.json").write_text(json.dumps(doc))
    text = write_model_card(run_dir).read_text()
    assert "> Few images: frozen." in text
    assert odd not in text and r"\<b\>red\|circle\</b\> \*x\*" in text
    assert ModelCard(text).data.to_dict()["library_name"] == "tlearn"


def test_card_without_check_file_or_metrics_is_still_a_card(run_dir: Path) -> None:
    (run_dir / "check.json").unlink()
    edit_config(run_dir, metrics={})
    card = ModelCard.load(write_model_card(run_dir))
    assert card.data.eval_results is None
    assert "no record of the dataset's checks" in card.text
    assert "there are no metrics" in card.text


def test_tlearn_report_rewrites_the_card(run_dir: Path) -> None:
    (run_dir / MODEL_CARD_FILE).unlink()
    write_report(run_dir)
    assert ModelCard.load(run_dir / MODEL_CARD_FILE).data.library_name == "tlearn"


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ("builtin:mobilenetv2_100.tf_in1k", "apache-2.0"),  # its sidecar
        ("hub:resnet50.a1_in1k", "apache-2.0"),  # timm's pretrained_cfg, no network
        ("hub:not_a_model.x", None),
        ("none", None),
        ("file:/no/such/weights.safetensors", None),
    ],
)
def test_weights_license(weights: str, expected: str | None) -> None:
    assert weights_license(weights) == expected


def test_license_of_a_weights_file_from_its_sidecar(run_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"")
    (tmp_path / "mine.json").write_text(json.dumps({"pretrained_cfg": {"license": "mit"}}))
    assert weights_license(f"file:{weights}") == "mit"
    edit_config(run_dir, weights=f"file:{weights}")
    card = ModelCard.load(write_model_card(run_dir))
    assert card.data.license == "mit" and "transfer-learning" in card.data.tags
