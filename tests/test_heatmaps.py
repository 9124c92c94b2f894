"""Heatmaps of a bundle where a user asks for them: `tlearn predict --explain DIR` (infer/heatmaps.py)."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlearn
from conftest import add_broken_files
from tlearn.core.errors import ConfigError
from tlearn.infer.heatmaps import explain_images


def test_predict_explain_writes_one_overlay_per_image_named_after_it(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, shapes: Path, tmp_path: Path
) -> None:
    images = sorted((shapes / "red_circle").glob("*.jpg"))[:3]
    out = tmp_path / "heat"
    res = run_cli("predict", tiny_bundle, *images, "--explain", out)
    assert res.code == 0, res.out + res.err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in images)
    assert "Wrote 3 heatmaps to" in res.out
    clf = tlearn.load(tiny_bundle)
    h, w = clf.preprocessing.input_size
    for p in images:
        shown = np.asarray(Image.open(out / f"{p.stem}.png"))
        assert shown.shape == (h, w, 3)
        framed = (clf.model_input(clf.pixels(p)).transpose(1, 2, 0) * 255).round()
        assert np.abs(shown.astype(float) - framed).mean() > 3  # coloured by the map, not the photo alone


def test_predict_explain_skips_unreadable_files_and_keeps_same_names_apart(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, shapes: Path, tmp_path: Path
) -> None:
    add_broken_files(shapes, "green_square")
    one = sorted((shapes / "green_square").glob("green_square_*.jpg"))[0]
    twin = tmp_path / "elsewhere" / one.name
    twin.parent.mkdir()
    shutil.copy(one, twin)
    out = tmp_path / "heat"
    res = run_cli("predict", tiny_bundle, one, twin, shapes / "green_square" / "truncated.jpg", "--explain", out)
    assert res.code == 0, res.out + res.err
    assert sorted(p.name for p in out.iterdir()) == [f"{one.stem}-2.png", f"{one.stem}.png"]
    assert "truncated" in res.out  # listed as unreadable, as without --explain


def test_predict_explain_with_the_onnx_engine_is_a_one_line_error(
    run_cli, tiny_bundle: Path, shapes: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    image = next((shapes / "red_circle").glob("*.jpg"))
    res = run_cli("predict", tiny_bundle, image, "--engine", "onnx", "--explain", tmp_path / "heat")
    assert res.code == 1
    assert "Heatmaps need the PyTorch engine" in res.out + res.err
    assert "Traceback" not in res.out + res.err
    assert not (tmp_path / "heat").exists()


def test_predict_explain_into_a_file_is_a_one_line_error(
    run_cli, tiny_bundle: Path, shapes: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    image = next((shapes / "red_circle").glob("*.jpg"))
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    res = run_cli("predict", tiny_bundle, image, "--explain", taken)
    assert res.code == 1
    assert "is a file: it takes a folder" in res.out + res.err
    assert taken.read_text() == "mine"


def test_explain_images_gives_the_predicted_class_and_its_probability(tiny_bundle: Path, shapes_master: Path) -> None:
    clf = tlearn.load(tiny_bundle)
    images = sorted(shapes_master.glob("*/*.jpg"))[::12]
    explained, failures = explain_images(clf, images)
    assert not failures
    proba = clf.predict_proba(images)
    assert [e.label for e in explained] == [clf.classes[i] for i in proba.argmax(axis=1)]
    assert np.allclose([e.probability for e in explained], proba.max(axis=1), atol=1e-5)


def test_explain_images_refuses_the_onnx_engine(tiny_bundle: Path) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(ConfigError, match="PyTorch engine"):
        explain_images(tlearn.load(tiny_bundle, engine="onnx"), [])


def test_report_shows_mistakes_and_right_answers_with_their_heatmaps(tiny_bundle: Path, tmp_path: Path) -> None:
    """Heatmaps only for the tiles shown: the most confident mistakes and a few right answers per class."""
    from tlearn.report.heatmaps import CORRECT_PER_CLASS, correct_sample, heatmap_tiles
    from tlearn.report.page import write_report
    from tlearn.report.run_data import read_run

    run_dir = Path(shutil.copytree(tiny_bundle, tmp_path / "run"))
    run = read_run(run_dir)
    right = correct_sample(run)
    assert right and all(not p.wrong and p.split == run.headline for p in right)
    assert max(sum(p.true == c for p in right) for c in run.config.classes) <= CORRECT_PER_CLASS
    tiles = heatmap_tiles(run, right)
    assert not tiles.missing and set(tiles.overlays) == {p.path for p in right}
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert "Right answers with their heatmaps" in html and "heatmap (Grad-CAM)" in html
    assert "No heatmaps" not in html
    assert (run_dir / "plots" / "correct.jpg").is_file()


def test_serve_returns_a_heatmap_only_when_asked(tiny_bundle: Path, shapes_master: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tlearn.serve.app import create_app

    predictor = tlearn.load(tiny_bundle)
    client = TestClient(create_app(predictor, top_k=2))
    photo = (shapes_master / "red_circle" / "red_circle_004.jpg").read_bytes()
    plain = client.post("/predict", files={"file": ("circle.jpg", photo, "image/jpeg")})
    assert plain.status_code == 200 and "heatmap" not in plain.json()
    asked = client.post("/predict?explain=true", files={"file": ("circle.jpg", photo, "image/jpeg")})
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert body["predictions"] == plain.json()["predictions"]
    assert body["heatmap"]["class"] == body["predictions"][0]["class"]
    shown = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["png"])))
    assert shown.format == "PNG" and shown.size == predictor.preprocessing.input_size[::-1]
    (explained,), _ = explain_images(predictor, [photo])
    assert np.array_equal(np.asarray(shown), explained.overlay)  # the same map as predict --explain
    broken = client.post("/predict?explain=true", files={"file": ("notes.jpg", b"not a picture", "image/jpeg")})
    assert broken.status_code == 415 and broken.json()["error"] == "not_an_image"


def test_serve_by_default_answers_from_onnx_runtime_and_draws_heatmaps_with_pytorch(
    tiny_bundle: Path, shapes_master: Path
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from tlearn.infer.load import load_for_serving
    from tlearn.serve.app import create_app

    predictor, explainer = load_for_serving(tiny_bundle)
    assert predictor.engine == "onnx" and explainer is not None and explainer.engine == "torch"
    client = TestClient(create_app(predictor, explainer=explainer, top_k=4))
    model = client.get("/model").json()
    assert model["engine"] == "onnx" and model["heatmaps"] is True  # the page shows its heatmap toggle
    photo = (shapes_master / "red_circle" / "red_circle_004.jpg").read_bytes()
    asked = client.post("/predict?explain=true", files={"file": ("circle.jpg", photo, "image/jpeg")})
    assert asked.status_code == 200, asked.text
    body = asked.json()
    (explained,), _ = explain_images(explainer, [photo])
    shown = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["png"])))
    assert np.array_equal(np.asarray(shown), explained.overlay)  # the same map as predict --explain
    assert body["predictions"][0]["class"] == explainer.predict([photo])[0] == body["heatmap"]["class"]
    alone, none = load_for_serving(tiny_bundle, engine="onnx")
    assert alone.engine == "onnx" and none is None
    assert TestClient(create_app(alone)).get("/model").json()["heatmaps"] is False


def test_serve_with_the_onnx_engine_answers_explain_with_a_clear_400(tiny_bundle: Path, shapes_master: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from tlearn.serve.app import create_app

    client = TestClient(create_app(tlearn.load(tiny_bundle, engine="onnx")))
    photo = (shapes_master / "red_circle" / "red_circle_004.jpg").read_bytes()
    res = client.post("/predict?explain=true", files={"file": ("circle.jpg", photo, "image/jpeg")})
    assert res.status_code == 400 and res.json()["error"] == "explain_unavailable"
    assert "PyTorch engine" in res.json()["detail"]
