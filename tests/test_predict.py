"""`tlearn.load` and `tlearn predict`: same answers from Python and the shell, broken files listed, not fatal."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlearn
from conftest import add_broken_files
from tlearn.core.errors import BundleError, ImageError, NotAnImage
from tlearn.infer.predictor import BasePredictor

CLASSES = ("blue_triangle", "green_square", "red_circle", "yellow_star")


@pytest.fixture(scope="module")
def clf(tiny_bundle: Path) -> BasePredictor:
    return tlearn.load(tiny_bundle)


def some_images(root: Path, n: int = 2) -> list[Path]:
    return [p for cls in CLASSES for p in sorted((root / cls).glob("*.jpg"))[:n]]


def copy_bundle(bundle: Path, dest: Path, **changes: object) -> Path:
    """A copy of the bundle with some fields of tlearn.json changed."""
    out = Path(shutil.copytree(bundle, dest))
    doc = json.loads((out / "tlearn.json").read_text())
    doc.update(changes)
    (out / "tlearn.json").write_text(json.dumps(doc))
    return out


def test_python_api_takes_paths_bytes_pil_images_and_arrays(clf: BasePredictor, shapes_master: Path) -> None:
    files = some_images(shapes_master, 1)
    by_path = clf.predict_proba(files)
    assert clf.classes == CLASSES
    assert by_path.shape == (4, 4)
    np.testing.assert_allclose(by_path.sum(axis=1), 1.0, atol=1e-5)
    assert clf.predict(files) == list(CLASSES)  # one image of each class, in class order
    for other in (
        [f.read_bytes() for f in files],
        [Image.open(f) for f in files],
        [np.asarray(Image.open(f).convert("RGB")) for f in files],
    ):
        np.testing.assert_allclose(clf.predict_proba(other), by_path, atol=1e-5)
    assert clf.predict(files[2]) == ["red_circle"]  # a single image needs no list


def test_unreadable_image_in_python_raises_and_names_it(clf: BasePredictor, shapes: Path) -> None:
    add_broken_files(shapes, "red_circle")
    with pytest.raises(NotAnImage, match=r"Cannot read .*notes\.jpg: not an image"):  # an ImageError that says why
        clf.predict_proba([shapes / "red_circle" / "red_circle_000.jpg", shapes / "red_circle" / "notes.jpg"])
    with pytest.raises(ImageError, match=r"Cannot read image 0: an image array must be \(H, W, 3\) RGB"):
        clf.predict_proba([np.zeros((8, 8, 5), np.uint8)])


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (5, r"Cannot read image 0: cannot predict on a int: pass a path, bytes, a PIL image or a uint8 array"),
        (np.zeros((0, 0, 3), np.uint8), r"Cannot read image 0: an image array has no pixels; got shape \(0, 0, 3\)"),
        (np.full((8, 8, 3), np.nan), r"Cannot read image 0: an image array must hold finite numbers"),
    ],
)
def test_an_input_the_python_api_cannot_use_is_an_image_error_that_says_why(
    clf: BasePredictor, image: object, says: str
) -> None:
    # before: TypeError "'int' object is not iterable", ZeroDivisionError, NumPy's RuntimeWarning on the cast
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=says):
            clf.predict(image)  # type: ignore[arg-type]


def test_bundle_of_another_format_is_a_clear_one_line_error(run_cli, tiny_bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = copy_bundle(tiny_bundle, tmp_path / "old", format=0, versions={"tlearn": "0.0.1"})
    with pytest.raises(BundleError, match=r"format 0 \(made by tlearn 0\.0\.1\); this tlearn reads format 1"):
        tlearn.load(old)
    res = run_cli("predict", old, tmp_path)
    assert res.code == 1
    assert res.err.startswith("Error: ") and "format 0" in res.err and "Traceback" not in res.err


@pytest.mark.parametrize("classes", [CLASSES[:3], (*CLASSES, "zebra")])
def test_predict_with_classes_edited_in_tlearn_json_is_one_line_saying_which_is_wrong(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, shapes_master: Path, tmp_path: Path, classes: tuple[str, ...]
) -> None:
    """Fewer classes than outputs was an IndexError (exit 2); more gave wrong answers without a word."""
    edited = copy_bundle(tiny_bundle, tmp_path / "edited", classes=list(classes))
    res = run_cli("predict", edited, shapes_master / "red_circle")
    assert res.code == 1, res.err
    assert res.err.startswith("Error: ") and "Traceback" not in res.err
    assert f"lists {len(classes)} classes" in res.err and "the network has 4 outputs" in res.err
    with pytest.raises(BundleError, match="the network has 4 outputs"):
        tlearn.load(edited)  # what `tlearn serve` loads: it fails at start, not with a 500 per request


def test_cli_json_equals_the_python_api(run_cli, clf: BasePredictor, tiny_bundle: Path, shapes_master: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("predict", tiny_bundle, shapes_master, "--format", "json", "--top-k", "4", "--batch-size", "7")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["errors"] == []
    assert len(doc["predictions"]) == 96
    paths = [Path(p["path"]) for p in doc["predictions"]]
    assert paths == sorted(shapes_master.rglob("*.jpg"))  # folders are searched, in a stable order
    expected = clf.predict_proba(paths)
    for row, p in zip(doc["predictions"], expected, strict=True):
        got = {s["class"]: s["probability"] for s in row["predictions"]}
        assert [s["class"] for s in row["predictions"]] == [CLASSES[i] for i in np.argsort(-p, kind="stable")]
        np.testing.assert_allclose([got[c] for c in CLASSES], p, atol=1e-6)
    assert "Predicted 96 images" in res.err  # the summary keeps out of stdout


def test_a_folder_with_broken_files_predicts_the_rest_and_lists_them(run_cli, tiny_bundle: Path, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    broken = add_broken_files(shapes, "yellow_star")
    res = run_cli("predict", tiny_bundle, shapes / "yellow_star", shapes / "nowhere.jpg")
    assert res.code == 0, res.err
    assert "Could not predict 4 files" in res.out
    for name, reason in broken.items():
        line = next(line for line in res.out.splitlines() if name in line)
        assert reason in line
    assert "nowhere.jpg" in res.out and "no such file or folder" in res.out
    assert "Predicted 24 images" in res.out
    assert "yellow_star " in res.out  # (each file's row: see the JSON below; long paths fold in the table)

    as_json = json.loads(run_cli("predict", tiny_bundle, shapes / "yellow_star", "-f", "json").out)
    assert sorted(Path(p["path"]).name for p in as_json["predictions"]) == [
        f"yellow_star_{i:03d}.jpg" for i in range(24)
    ]
    assert {Path(e["path"]).name: e["error"].split(" (")[0] for e in as_json["errors"]} == {
        "truncated.jpg": "truncated or corrupt",
        "empty.jpg": "file is empty",
        "notes.jpg": "not an image",
    }


def test_nothing_readable_exits_1(run_cli, tiny_bundle: Path, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    add_broken_files(shapes, "red_circle")
    only_broken = [shapes / "red_circle" / n for n in ("truncated.jpg", "empty.jpg", "notes.jpg")]
    res = run_cli("predict", tiny_bundle, *only_broken)
    assert res.code == 1
    assert "Could not predict 3 files" in res.out and "Predicted 0 images" in res.out
    (tmp_path / "empty").mkdir()
    res = run_cli("predict", tiny_bundle, tmp_path / "empty", "-f", "json")
    assert res.code == 1
    assert json.loads(res.out)["errors"] == [{"path": str(tmp_path / "empty"), "error": "folder holds no image files"}]


def test_csv_has_a_row_per_rank_and_one_per_error(run_cli, tiny_bundle: Path, shapes: Path) -> None:  # type: ignore[no-untyped-def]
    add_broken_files(shapes, "green_square")
    res = run_cli("predict", tiny_bundle, shapes / "green_square", "--format", "csv", "-k", "2")
    assert res.code == 0, res.err
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert list(rows[0]) == ["path", "rank", "class", "probability", "error", "unknown", "unknown_score"]
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == 2 * 24 and {r["rank"] for r in ok} == {"1", "2"}
    top = [r for r in ok if r["rank"] == "1"]
    assert sum(r["class"] == "green_square" for r in top) >= 20
    for first, second in zip(top, [r for r in ok if r["rank"] == "2"], strict=True):
        assert first["path"] == second["path"] and float(first["probability"]) >= float(second["probability"])
    errors = [r for r in rows if r["error"]]
    assert sorted(Path(r["path"]).name for r in errors) == ["empty.jpg", "notes.jpg", "truncated.jpg"]
    assert all(r["rank"] == r["class"] == r["probability"] == "" for r in errors)


def test_a_text_file_lists_images(run_cli, tiny_bundle: Path, shapes_master: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images = some_images(shapes_master, 1)
    listing = tmp_path / "todo.txt"
    listing.write_text("# images to check\n" + "\n".join(str(p) for p in images) + "\n\n")
    res = run_cli("predict", tiny_bundle, listing, "-f", "json")
    assert res.code == 0, res.err
    assert [p["path"] for p in json.loads(res.out)["predictions"]] == [str(p) for p in images]


def test_table_shows_top_class_probability_and_the_next_ones(run_cli, tiny_bundle: Path, shapes_master: Path) -> None:  # type: ignore[no-untyped-def]
    image = shapes_master / "red_circle" / "red_circle_000.jpg"
    res = run_cli("predict", tiny_bundle, image, "--top-k", "3")
    assert res.code == 0, res.err
    row = next(line for line in res.out.splitlines() if "red_circle_000.jpg" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[1] == "red_circle" and cells[2].endswith("%")
    assert float(cells[3]) < tlearn.load(tiny_bundle).unknown_rule.threshold  # a training image: known
    assert cells[4].count("%") == 2  # the two runners-up


def test_tta_follows_the_one_mirror_rule_of_the_bundle_network(
    tiny_bundle: Path, shapes_master: Path, tmp_path: Path
) -> None:
    """`--tta` on a bundle saved without the mirror view gives what the same network with the mirror
    built in gives (the Classifier's mean logits): one rule, whichever way the mirror is added."""
    built_in = tlearn.load(tiny_bundle)  # trained with the mirror TTA inside its network
    assert built_in.config.flip_tta
    plain = tlearn.load(copy_bundle(tiny_bundle, tmp_path / "plain", flip_tta=False))  # same weights, no mirror
    x = np.stack([plain.model_input(plain.pixels(p)) for p in some_images(shapes_master, 3)])
    np.testing.assert_allclose(plain.proba_of_inputs(x, tta=True), built_in.proba_of_inputs(x), atol=1e-5)
    assert np.abs(plain.proba_of_inputs(x, tta=True) - plain.proba_of_batch(x)).max() > 1e-4  # the mirror counts
    np.testing.assert_array_equal(built_in.proba_of_inputs(x, tta=True), built_in.proba_of_inputs(x))


def test_cli_tta_matches_python(run_cli, tiny_bundle: Path, shapes_master: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain_dir = copy_bundle(tiny_bundle, tmp_path / "plain", flip_tta=False)
    images = some_images(shapes_master, 1)
    res = run_cli("predict", plain_dir, *images, "--tta", "-f", "json", "-k", "4")
    assert res.code == 0, res.err
    assert "mirror-image TTA" in res.err
    expected = tlearn.load(plain_dir).predict_proba(images, tta=True)
    for row, p in zip(json.loads(res.out)["predictions"], expected, strict=True):
        got = {s["class"]: s["probability"] for s in row["predictions"]}
        np.testing.assert_allclose([got[c] for c in CLASSES], p, atol=1e-6)


def test_onnx_engine_predicts_what_torch_predicts(run_cli, tiny_bundle: Path, shapes_master: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    images = some_images(shapes_master, 3)
    torch_run = run_cli("predict", tiny_bundle, *images, "-f", "json", "-k", "4")
    onnx_run = run_cli("predict", tiny_bundle, *images, "-f", "json", "-k", "4", "--engine", "onnx")
    assert onnx_run.code == 0, onnx_run.err
    assert "onnx engine" in onnx_run.err
    for a, b in zip(json.loads(torch_run.out)["predictions"], json.loads(onnx_run.out)["predictions"], strict=True):
        assert a["path"] == b["path"]
        assert a["predictions"][0]["class"] == b["predictions"][0]["class"]
        pa = {s["class"]: s["probability"] for s in a["predictions"]}
        pb = {s["class"]: s["probability"] for s in b["predictions"]}
        np.testing.assert_allclose([pa[c] for c in CLASSES], [pb[c] for c in CLASSES], atol=1e-4)


def test_bad_options_are_one_line(run_cli, tiny_bundle: Path, shapes_master: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("predict", tiny_bundle, shapes_master, "--format", "xml")
    assert res.code == 1 and "--format must be one of table, json, csv. Got 'xml'." in res.err
    res = run_cli("predict", tiny_bundle, shapes_master, "--engine", "tpu")
    assert res.code == 1 and "--engine must be one of torch, onnx. Got 'tpu'." in res.err
    res = run_cli("predict", tiny_bundle.parent / "nope", shapes_master)
    assert res.code == 1 and "No such bundle" in res.err


def test_decoding_threads_are_counted_where_sched_getaffinity_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no os.sched_getaffinity: the CPU count stands in for it (one when unknown)."""
    from tlearn.core.threads import cpu_workers

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cpu_workers(8) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpu_workers(8) == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown
    assert cpu_workers(8) == 1


def test_the_pipeline_predicts_what_decoding_then_the_eval_transform_predicts(
    clf: BasePredictor, shapes_master: Path
) -> None:
    files = some_images(shapes_master, 3)
    plain = clf.proba_of_inputs(np.stack([clf.model_input(clf.pixels(f)) for f in files]))  # the two-step path
    piped = clf.predict_proba(files, batch_size=5)  # threads, one-resize crops, batches of 5
    assert piped.argmax(1).tolist() == plain.argmax(1).tolist()
    assert np.abs(piped - plain).max() < 2e-3  # pixels within one grey level; measured: 3e-4
    np.testing.assert_allclose(piped, clf.predict_proba(files, batch_size=32), atol=1e-6)  # batching changes nothing


def test_broken_files_between_good_ones_fail_one_at_a_time(clf: BasePredictor, shapes: Path) -> None:
    good = some_images(shapes, 2)
    broken = add_broken_files(shapes, "red_circle")
    items = [good[0], *(shapes / "red_circle" / n for n in broken), *good[1:]]
    result = clf.predict_many(items, batch_size=2)
    assert [p.source for p in result.items] == [str(f) for f in good]
    assert {Path(f.source).name: f.reason.split(" (")[0] for f in result.failures} == {
        "truncated.jpg": "truncated or corrupt", "empty.jpg": "file is empty", "notes.jpg": "not an image",
    }  # fmt: skip
    assert all("\n" not in f.reason for f in result.failures)
    alone = clf.top_k(clf.predict_proba(good), 3)  # what each good image gives without the broken ones
    assert [[s.label for s in p.top] for p in result.items] == [[s.label for s in top] for top in alone]
    got = [[s.probability for s in p.top] for p in result.items]
    np.testing.assert_allclose(got, [[s.probability for s in top] for top in alone], atol=1e-6)


def test_predict_runs_onnx_runtime_by_default_where_the_images_repay_its_export_and_pytorch_for_a_few(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, shapes_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    import tlearn.infer.load

    many = tmp_path / "many"
    many.mkdir()
    for k in range(5):  # 480 files: at 64 px the tiny network repays its export from 429 passes
        for image in some_images(shapes_master, 24):
            shutil.copy(image, many / f"{k}-{image.name}")
    few = some_images(shapes_master, 1)
    by_default = run_cli("predict", tiny_bundle, many, "-f", "json")
    assert by_default.code == 0, by_default.err
    assert "with the onnx engine" in " ".join(by_default.err.split())
    assert "with the torch engine" in " ".join(run_cli("predict", tiny_bundle, *few, "-f", "json").err.split())
    # heatmaps need PyTorch's gradients, however many images there are
    monkeypatch.setattr(tlearn.infer.load, "onnx_pays", lambda passes, size: True)
    assert "onnx engine" in " ".join(run_cli("predict", tiny_bundle, *few, "-f", "json").err.split())
    explained = run_cli("predict", tiny_bundle, *few, "--explain", tmp_path / "maps")
    assert explained.code == 0, explained.err
    assert "with the torch engine" in " ".join(explained.out.split())


def test_pytorch_predicts_a_few_images_per_pass_with_the_answers_of_one_at_a_time(
    tiny_bundle: Path, shapes_master: Path
) -> None:
    """A pass of 32 images at 288 px makes layers over 32 MB, which glibc maps and unmaps every time
    (3x slower here): PyTorch passes hold TORCH_PASS_INPUTS network inputs, an image and its mirror two."""
    from tlearn.infer.predictor import TORCH_PASS_INPUTS

    predictor = tlearn.load(tiny_bundle, engine="torch")
    classifier = predictor.classifier  # type: ignore[attr-defined]
    passes: list[int] = []
    answer = classifier.answer
    classifier.answer = lambda t: passes.append(len(t)) or answer(t)
    files = some_images(shapes_master, 3)  # 12 images
    x = np.stack([predictor.prepare_input(f) for f in files])
    proba, scores = predictor.answer_of_inputs(x)
    per_image = TORCH_PASS_INPUTS // (2 if predictor.config.flip_tta else 1)
    assert passes == [per_image] * (len(files) // per_image) + (
        [len(files) % per_image] if len(files) % per_image else []
    )
    one_by_one = [predictor.answer_of_inputs(x[i : i + 1]) for i in range(len(files))]
    np.testing.assert_allclose(proba, np.concatenate([p for p, _ in one_by_one]), atol=1e-5)
    if scores is not None:
        np.testing.assert_allclose(scores, np.concatenate([s for _, s in one_by_one]), atol=1e-5)
    assert scores is not None or predictor.config.unknown is None


def test_a_pattern_the_shell_matched_to_nothing_is_named_as_such(run_cli, tiny_bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("predict", tiny_bundle, tmp_path / "photos" / "*.jpg", tmp_path / "gone.jpg", "-f", "json")
    assert res.code == 1
    assert [e["error"] for e in json.loads(res.out)["errors"]] == [
        "no file matches this pattern",
        "no such file or folder",
    ]
