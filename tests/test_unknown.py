"""The "unknown" answer: an image that is none of the classes comes back unknown from every way of using a bundle.

The bundle here is the feature method on the built-in MobileNetV2 (real ImageNet features, 64 px) and
4 synthetic shape classes; "something else entirely" is coloured noise and a checkerboard, which no
training image resembles. (The session's tiny bundle has random weights: its features do not tell
noise from shapes, so it is not the model to ask.)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlearn
from tlearn.artifacts.bundle import CONFIG_FILE, SPLIT_FILE, UNKNOWN_FILE
from tlearn.data.sources import load_dataset
from tlearn.data.split import load_split
from tlearn.models.builtin import BUILTIN_NAME
from tlearn.models.unknown import BANK_CAP, DEFAULT_KIND, UNKNOWN
from tlearn.training.unknown import THRESHOLD_SLACK, fit_scorer


@pytest.fixture(scope="module")
def bundle(shapes_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("unknown-bundle") / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEARN_CACHE_DIR", str(tmp_path_factory.mktemp("unknown-cache")))
        tlearn.train(shapes_master, method="features", backbone=BUILTIN_NAME, input_size=64, out=out, C=1.0)
    return out


@pytest.fixture(scope="module")
def strangers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three images of something else entirely: two of coloured noise, one checkerboard."""
    folder = tmp_path_factory.mktemp("strangers")
    rng = np.random.default_rng(0)
    paths = []
    for i, block in enumerate((1, 8)):  # pixel noise, and blocks of 8 x 8 pixels of one colour
        path = folder / f"noise_{i}.png"
        noise = rng.integers(0, 256, (96 // block, 96 // block, 3), dtype=np.uint8)
        Image.fromarray(np.kron(noise, np.ones((block, block, 1), dtype=np.uint8))).save(path)
        paths.append(path)
    board = (np.indices((96, 96)).sum(axis=0) // 8 % 2 * 255).astype(np.uint8)
    path = folder / "checkerboard.png"
    Image.fromarray(np.stack([board] * 3, axis=-1)).save(path)
    return [*paths, path]


@pytest.fixture(scope="module")
def known(shapes_master: Path) -> list[Path]:
    return [sorted((shapes_master / c).glob("*.jpg"))[0] for c in sorted(p.name for p in shapes_master.iterdir())]


@pytest.fixture
def old_bundle(bundle: Path, tmp_path: Path) -> Path:
    """The tiny bundle as tlearn wrote bundles before the unknown answer: no bank file, no 'unknown' key."""
    old = Path(shutil.copytree(bundle, tmp_path / "old"))
    (old / UNKNOWN_FILE).unlink()
    doc = json.loads((old / CONFIG_FILE).read_text())
    del doc["unknown"]
    (old / CONFIG_FILE).write_text(json.dumps(doc))
    return old


def test_the_python_api_answers_unknown_for_something_else_entirely(
    bundle: Path, strangers: list[Path], known: list[Path]
) -> None:
    clf = tlearn.load(bundle)
    assert clf.predict(strangers, unknown=True) == [UNKNOWN] * len(strangers)
    assert UNKNOWN not in clf.predict(known, unknown=True)
    assert UNKNOWN not in clf.predict(strangers)  # without unknown=True: a class, as before
    result = clf.predict_many([*strangers, *known], top_k=2)
    assert [p.unknown for p in result.items] == [True] * len(strangers) + [False] * len(known)
    assert [p.answer for p in result.items[: len(strangers)]] == [UNKNOWN] * len(strangers)
    rule = clf.unknown_rule
    assert rule is not None
    assert all(p.unknown_score is not None and p.unknown_score > rule.threshold for p in result.items[:3])


def test_predict_cli_says_unknown_with_its_score_and_can_turn_it_off(
    run_cli, bundle: Path, strangers: list[Path], known: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("predict", bundle, strangers[0], known[0])
    assert res.code == 0, res.err
    row = next(line for line in res.out.splitlines() if strangers[0].name in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[1] == "unknown" and float(cells[2]) > 0  # the answer, then its score
    assert "1 is none of the classes" in res.out
    doc = json.loads(run_cli("predict", bundle, *strangers, known[0], "-f", "json").out)
    assert [p["unknown"] for p in doc["predictions"]] == [True, True, True, False]
    off = run_cli("predict", bundle, strangers[0], "--no-unknown", "-f", "json")
    assert "unknown" not in json.loads(off.out)["predictions"][0]


def test_the_server_answers_unknown_and_its_page_says_so(
    bundle: Path, strangers: list[Path], known: list[Path]
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tlearn.serve.app import create_app

    client = TestClient(create_app(tlearn.load(bundle)))
    res = client.post("/predict", content=strangers[0].read_bytes(), headers={"content-type": "image/png"})
    assert res.status_code == 200
    assert (
        res.json()["unknown"] is True
        and res.json()["unknown_score"] > client.get("/model").json()["unknown"]["threshold"]
    )
    res = client.post("/predict", content=known[0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert res.json()["unknown"] is False
    page = client.get("/").text
    assert "Not one of my classes" in page and "body.unknown" in page


def test_the_onnx_export_has_the_unknown_outputs_and_agrees_with_pytorch(
    bundle: Path, tmp_path: Path, strangers: list[Path], known: list[Path]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    from tlearn.infer.export import export_bundle

    result = export_bundle(bundle, out=tmp_path / "model.onnx")
    doc = json.loads(result.sidecar.read_text())
    assert [o["name"] for o in doc["unknown"]["outputs"]] == ["unknown_score", "unknown"]
    torch_clf = tlearn.load(bundle)
    # The inputs prediction makes (decoded straight to the eval crop), as `unknown_scores` below makes them.
    x = np.stack([torch_clf.prepare_input(p) for p in [*strangers, *known]])
    session = ort.InferenceSession(str(result.path))
    proba, score, unknown = session.run(None, {"image": x})
    assert proba.shape == (len(x), 4)
    assert unknown.tolist() == [True] * len(strangers) + [False] * len(known)
    np.testing.assert_allclose(score, torch_clf.unknown_scores([*strangers, *known]), atol=1e-4, rtol=1e-4)
    onnx_clf = tlearn.load(result.path)
    assert onnx_clf.engine == "onnx"
    assert onnx_clf.predict(strangers, unknown=True) == [UNKNOWN] * len(strangers)


def test_a_reloaded_bundle_gives_the_scores_its_threshold_was_set_on(bundle: Path, shapes_master: Path) -> None:
    clf = tlearn.load(bundle)
    rule = clf.unknown_rule
    assert rule is not None and rule.kind == DEFAULT_KIND and rule.val_images >= 10
    ds = load_dataset(shapes_master)
    split = load_split(bundle / SPLIT_FILE, ds.samples, ds.root)
    val = [ds.samples[i].path for i in split.val]
    scores = clf.unknown_scores(val)
    assert float((scores <= rule.threshold).mean()) == pytest.approx(rule.recall)
    at = np.quantile(scores, 0.95, method="higher")  # a validation image's score, a hair below the threshold
    assert at < rule.threshold <= at + 2 * THRESHOLD_SLACK * max(abs(at), np.ptp(scores))
    np.testing.assert_array_equal(scores, tlearn.load(bundle).unknown_scores(val))


def test_the_bank_is_small_and_the_bundle_says_its_size(bundle: Path) -> None:
    rule = tlearn.load(bundle).unknown_rule
    assert rule is not None
    assert rule.bank_rows <= BANK_CAP
    stored = (bundle / UNKNOWN_FILE).stat().st_size
    assert rule.bank_bytes <= stored < rule.bank_bytes + 1024  # float16 rows plus a small header
    assert json.loads((bundle / CONFIG_FILE).read_text())["unknown"]["bank_bytes"] == rule.bank_bytes


def test_the_bank_keeps_every_class_under_the_cap() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(95, int), np.ones(5, int), np.full(3, 2)]
    scorer = fit_scorer(rng.normal(size=(len(labels), 8)), labels, num_classes=3, kind="knn", cap=20, seed=0)
    assert scorer.rule.bank_rows <= 20 + 3
    bank = scorer.get_buffer("bank").numpy()
    assert np.allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-3)  # normalised, float16-exact
    assert scorer.get_buffer("means").shape == (3, 8)


def test_a_bundle_from_before_loads_predicts_and_says_once_it_has_no_rejection(
    old_bundle: Path, strangers: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tlearn"):
        clf = tlearn.load(old_bundle)
        names = clf.predict(strangers, unknown=True)
        result = clf.predict_many(strangers)
    assert clf.unknown_rule is None
    assert UNKNOWN not in names and set(names) <= set(clf.classes)
    assert all(p.unknown_score is None and not p.unknown for p in result.items)
    said = [r for r in caplog.records if "no 'unknown' answer" in r.getMessage()]
    assert len(said) == 1


def test_predict_cli_on_a_bundle_from_before_says_it_once(
    run_cli, old_bundle: Path, strangers: list[Path], caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.WARNING, logger="tlearn"):
        res = run_cli("predict", old_bundle, *strangers, "-f", "json")
    assert res.code == 0, res.err
    assert sum("no 'unknown' answer" in r.getMessage() for r in caplog.records) == 1  # the CLI logs to stderr
    assert all("unknown" not in p for p in json.loads(res.out)["predictions"])


def test_the_report_shows_calibration_before_and_after_and_the_unknown_rule(bundle: Path) -> None:
    from tlearn.artifacts.details import MethodDetails

    details = MethodDetails.from_dict(json.loads((bundle / CONFIG_FILE).read_text())["details"])
    cal = details.calibration
    assert cal is not None and [r.part for r in cal.reliability] == ["val", "test"]
    test = cal.part("test")
    assert test is not None and sum(test.count_before) == sum(test.count_after) == test.images
    page = (bundle / "report.html").read_text()
    assert '<section id="calibration">' in page and '<section id="unknown">' in page
    assert f"{test.ece_before:.3f}" in page and f"{test.ece_after:.3f}" in page
    assert "Reliability diagram" in page and (bundle / "plots" / "reliability.png").is_file()
    rule = tlearn.load(bundle).unknown_rule
    assert rule is not None and f"{rule.bank_bytes / 1e6:.2f} MB" in page


def test_an_old_report_without_calibration_or_unknown_says_why(old_bundle: Path) -> None:
    from tlearn.report.page import write_report

    doc = json.loads((old_bundle / CONFIG_FILE).read_text())
    del doc["details"]["calibration"]
    (old_bundle / CONFIG_FILE).write_text(json.dumps(doc))
    page = write_report(old_bundle).read_text()
    assert "made before tlearn calibrated" in page and "has no unknown answer" in page
    assert not (old_bundle / "plots" / "reliability.png").exists()


@pytest.mark.parametrize(("method", "options"), [("auto", {"time_budget": 0.001}), ("features", {"C": 1.0})])
def test_the_unknown_threshold_comes_from_the_methods_own_pass_without_running_the_network_again(
    method: str,
    options: dict,
    shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[type-arg]
) -> None:
    """auto's probe pass and the feature method's pass run the validation files as prediction decodes
    them: the threshold then costs the head alone, and it is the threshold a pass of the final network
    over those files sets."""
    from dataclasses import replace

    from tlearn.models.classifier import Classifier
    from tlearn.training import run as run_module
    from tlearn.training import unknown

    passes: list[int] = []  # images the classifier's network ran on while the threshold was set
    network = Classifier.features
    seen: dict = {}  # type: ignore[type-arg]

    def counted(fitted, data, **kw):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(Classifier, "features", lambda self, x: passes.append(len(x)) or network(self, x))
        try:
            out = unknown.with_unknown(fitted, data, **kw)
        finally:
            monkeypatch.setattr(Classifier, "features", network)
        seen.update(fitted=out, data=data, kw=kw)
        return out

    monkeypatch.setattr(run_module, "with_unknown", counted)
    tlearn.train(
        shapes, method=method, backbone="test_efficientnet", weights="none", input_size=64, out=tmp_path / "run",
        **options,
    )  # fmt: skip
    fitted = seen["fitted"]
    rule = fitted.classifier.unknown.rule
    assert passes == [] and rule.val_images == len(seen["data"].split.val) >= 10

    again = counted(replace(fitted, val_predicted=None), seen["data"], **seen["kw"])  # the files through the network
    assert passes and sum(passes) == 2 * rule.val_images  # each file and its mirror image: the counter counts
    assert again.classifier.unknown.rule.threshold == pytest.approx(rule.threshold, rel=1e-4, abs=1e-5)
    assert again.classifier.unknown.rule.norm == pytest.approx(rule.norm, rel=1e-4, abs=1e-6)
