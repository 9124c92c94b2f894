"""`tlearn export`: the exported model computes what the bundle computes, and says how it is to be called."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import tlearn
from tlearn.artifacts.bundle import load_bundle, save_bundle
from tlearn.core.errors import BundleError, ConfigError
from tlearn.core.onnx import to_onnx
from tlearn.infer.export import export_bundle
from tlearn.infer.onnx_graph import Probabilities
from tlearn.infer.predictor import Predictor

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def torch_clf(tiny_bundle: Path) -> Predictor:
    clf = tlearn.load(tiny_bundle)
    assert isinstance(clf, Predictor)
    return clf


@pytest.fixture(scope="module")
def real_inputs(torch_clf: Predictor, shapes_master: Path) -> np.ndarray:
    """Eval-transformed photos of every class: (12, 3, 64, 64) float32 in [0, 1]."""
    files = [p for cls in torch_clf.classes for p in sorted((shapes_master / cls).glob("*.jpg"))[-3:]]
    return np.stack([torch_clf.model_input(torch_clf.pixels(f)) for f in files])


@pytest.fixture(scope="module")
def exported(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return export_bundle(tiny_bundle, out=tmp_path_factory.mktemp("export") / "model.onnx")


def reference(clf: Predictor, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return Probabilities(clf.classifier)(torch.from_numpy(x)).numpy()


def test_onnx_matches_pytorch_on_random_and_real_inputs(
    exported, torch_clf: Predictor, real_inputs: np.ndarray
) -> None:  # type: ignore[no-untyped-def]
    assert exported.check.random_diff < 1e-4 and exported.check.real_diff < 1e-4
    assert exported.check.real_source == "validation images of the dataset" and exported.check.real_n == 8
    session = ort.InferenceSession(str(exported.path))
    rng = np.random.default_rng(1)
    for x in (rng.random((5, 3, 64, 64), dtype=np.float32), real_inputs, real_inputs[:1]):  # any batch size
        proba, *_ = session.run(None, {"image": x})  # then unknown_score, unknown
        assert proba.shape == (len(x), 4)
        np.testing.assert_allclose(proba, reference(torch_clf, x), atol=1e-4, rtol=0)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    proba = session.run(["probabilities"], {"image": real_inputs})[0]
    assert (proba.argmax(1) == np.repeat(np.arange(4), 3)).mean() >= 0.75  # it is the trained model


def test_the_json_beside_the_model_describes_how_to_call_it(exported, tiny_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    assert exported.sidecar == exported.path.with_name("model.onnx.json")
    doc = json.loads(exported.sidecar.read_text())
    assert doc["classes"] == ["blue_triangle", "green_square", "red_circle", "yellow_star"]
    assert doc["input"] == {
        "name": "image",
        "dtype": "float32",
        "shape": ["batch", 3, 64, 64],
        "layout": "NCHW, RGB",
        "range": [0.0, 1.0],
    }
    assert doc["output"]["name"] == "probabilities" and doc["output"]["shape"] == ["batch", 4]
    prep = json.loads((tiny_bundle / "tlearn.json").read_text())["preprocessing"]
    assert doc["preprocessing"]["mean"] == prep["mean"] and doc["preprocessing"]["resize_short_side"] == 67
    assert doc["flip_tta"] is True and doc["verification"]["real_n"] == 8


def test_an_exported_file_runs_on_its_own(exported, torch_clf: Predictor, shapes_master: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    moved = tmp_path / "elsewhere" / "shapes.onnx"
    moved.parent.mkdir()
    shutil.copy(exported.path, moved)
    with pytest.raises(BundleError, match=r"has no shapes\.onnx\.json beside it"):
        tlearn.load(moved)
    shutil.copy(exported.sidecar, moved.with_name("shapes.onnx.json"))
    clf = tlearn.load(moved)
    assert clf.engine == "onnx" and clf.classes == torch_clf.classes
    files = sorted((shapes_master / "blue_triangle").glob("*.jpg"))[:5]
    np.testing.assert_allclose(clf.predict_proba(files), torch_clf.predict_proba(files), atol=1e-4)


def test_uint8_input_variant(tiny_bundle: Path, tmp_path: Path, torch_clf: Predictor, real_inputs: np.ndarray) -> None:
    result = export_bundle(tiny_bundle, out=tmp_path / "u8.onnx", input_type="uint8")
    assert json.loads(result.sidecar.read_text())["input"]["dtype"] == "uint8"
    pixels = np.rint(real_inputs * 255).astype(np.uint8)
    proba, *_ = ort.InferenceSession(str(result.path)).run(None, {"image": pixels})
    np.testing.assert_allclose(proba, reference(torch_clf, pixels.astype(np.float32) / 255), atol=1e-4, rtol=0)


def test_cli_export_prints_the_contract_and_the_difference(run_cli, tiny_bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("export", tiny_bundle, "--out", tmp_path / "m.onnx")
    assert res.code == 0, res.err
    assert "input  'image'          float32 [batch, 3, 64, 64], RGB in [0, 1]" in res.out
    assert "output 'probabilities'  float32 [batch, 4]" in res.out
    line = next(line for line in res.out.splitlines() if line.startswith("Checked with ONNX Runtime"))
    diffs = [float(w.rstrip(",")) for w in line.split() if "e-" in w]
    assert len(diffs) == 2 and max(diffs) < 1e-4
    assert (tmp_path / "m.onnx.json").is_file()


def test_torchscript_export(tiny_bundle: Path, tmp_path: Path, torch_clf: Predictor, real_inputs: np.ndarray) -> None:
    result = export_bundle(tiny_bundle, format="torchscript", out=tmp_path / "model.pt")
    assert result.check.max_diff < 1e-5
    with pytest.warns(FutureWarning):  # TorchScript is deprecated, but still loads
        module = torch.jit.load(str(result.path))
    with torch.inference_mode():
        proba = module(torch.from_numpy(real_inputs)).numpy()
    np.testing.assert_allclose(proba, reference(torch_clf, real_inputs), atol=1e-5)


def test_onnx_engine_reuses_the_bundles_export_only_while_it_is_current(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlearn.infer.export
    import tlearn.infer.load

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    export_bundle(bundle)  # writes b/model.onnx and b/model.onnx.json
    calls: list[int] = []
    real = tlearn.infer.load.bundle_to_onnx
    monkeypatch.setattr(tlearn.infer.load, "bundle_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert tlearn.load(bundle, engine="onnx").engine == "onnx" and calls == []  # the file was used

    classifier, config = load_bundle(bundle)
    with torch.no_grad():
        classifier.head[-1].bias += torch.tensor([5.0, 0.0, 0.0, 0.0])  # retrained: favours class 0
    save_bundle(classifier, config, bundle)  # new weights, and their digest in tlearn.json
    fresh = tlearn.load(bundle, engine="onnx")
    assert calls == [1]  # model.onnx no longer matches the weights: exported again, in memory
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    np.testing.assert_allclose(fresh.proba_of_batch(x), tlearn.load(bundle).proba_of_batch(x), atol=1e-4)


def test_to_onnx_gives_bytes_with_a_dynamic_batch() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
    model = to_onnx(module, torch.rand(2, 3), None, output_names=("p",))
    assert isinstance(model, bytes)
    session = ort.InferenceSession(model)
    assert [o.name for o in session.get_outputs()] == ["p"]
    x = np.random.default_rng(0).random((7, 3), dtype=np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(session.run(None, {"input": x})[0], module(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_bad_options_are_reported_together(tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError) as err:
        export_bundle(tiny_bundle, format="tflite", input_type="int4", opset=9)
    assert "--format must be one of onnx, torchscript. Got 'tflite'." in str(err.value)
    assert "--input must be one of float, uint8. Got 'int4' (did you mean uint8?)." in str(err.value)
    assert "--opset must be between 17 and 20. Got 9." in str(err.value)
    with pytest.raises(ConfigError, match=r"--int8 works with --format onnx only.*--out must end in \.pt"):
        export_bundle(tiny_bundle, format="torchscript", int8="on", out="model.onnx")


def test_missing_onnxruntime_names_the_extra(run_cli, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = run_cli("export", tiny_bundle, "--out", "never.onnx")
    assert res.code == 1
    assert "needs the Python package 'onnxruntime'" in res.err and "pip install 'tlearn[export]'" in res.err
    assert not Path("never.onnx").exists()


def test_export_of_a_bundle_whose_classes_were_edited_is_refused_before_writing(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """It wrote an ONNX model of 4 outputs and a JSON of 3 classes, which disagree."""
    edited = Path(shutil.copytree(tiny_bundle, tmp_path / "edited"))
    doc = json.loads((edited / "tlearn.json").read_text())
    doc["classes"] = doc["classes"][:3]
    (edited / "tlearn.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"lists 3 classes .* the network has 4 outputs"):
        export_bundle(edited, out=tmp_path / "out" / "model.onnx")
    assert not (tmp_path / "out").exists()


def test_exported_model_whose_json_lists_other_classes_is_refused_on_load(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = Path(shutil.copy(exported.path, tmp_path / "model.onnx"))
    doc = json.loads(exported.sidecar.read_text())
    doc["classes"] = doc["bundle"]["classes"] = doc["bundle"]["classes"][:3]
    (tmp_path / "model.onnx.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"model\.onnx\.json lists 3 classes .* the model has 4 outputs"):
        tlearn.load(model)


@pytest.fixture
def read_only_bundle(tiny_bundle: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the bundle on a read-only file system (a tmpfs remounted read-only), as on a shared mount.

    Skipped where mounting is not allowed (not root, not Linux): root ignores file permissions, so only
    a read-only mount shows what a user of one sees.
    """
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mount = shutil.which("mount")
    if sys.platform != "linux" or mount is None:
        pytest.skip("needs mount (Linux)")
    if subprocess.run([mount, "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs permission to mount a file system")
    try:
        shutil.copytree(tiny_bundle, mnt / "bundle")
        subprocess.run([mount, "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        yield mnt / "bundle"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_export_from_a_read_only_bundle_says_where_to_write_before_any_work(  # type: ignore[no-untyped-def]
    run_cli, read_only_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It failed with 'Unexpected error ... a bug' after the whole export (27 s on a real model)."""
    import tlearn.infer.export

    work: list[Path] = []
    real = tlearn.infer.export.labelled_splits
    monkeypatch.setattr(
        tlearn.infer.export, "labelled_splits", lambda folder, cfg: work.append(folder) or real(folder, cfg)
    )
    res = run_cli("export", read_only_bundle)
    assert res.code == 1, res.err
    lines = res.err.strip().splitlines()
    assert (
        lines[0]
        == f"Error: Cannot write {read_only_bundle / 'model.onnx'}: {read_only_bundle} is on a read-only file system."
    )
    assert lines[1].startswith("Hint: Write it elsewhere with --out")
    assert work == []  # refused before the export began

    res = run_cli("export", read_only_bundle, "--out", tmp_path / "model.onnx")
    assert res.code == 0, res.err
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.onnx.json").is_file()


def test_export_to_a_path_below_a_file_fails_before_any_work(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlearn.infer.export
    from tlearn.core.errors import OutputError

    monkeypatch.setattr(tlearn.infer.export, "labelled_splits", lambda *a: pytest.fail("the export began"))
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(
        OutputError, match=r"Cannot write .*notes\.txt/model\.onnx: .*notes\.txt is a file, not a folder"
    ):
        export_bundle(tiny_bundle, out=tmp_path / "notes.txt" / "model.onnx")
    (tmp_path / "taken.onnx").mkdir()
    with pytest.raises(OutputError, match=r"Cannot write .*taken\.onnx: it is a folder"):
        export_bundle(tiny_bundle, out=tmp_path / "taken.onnx")


def test_an_unexported_bundle_is_exported_once_for_every_later_process_and_again_once_changed(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tlearn predict` and `serve` of a bundle without model.onnx read the model the first call kept in
    the cache folder; new weights, or an edited tlearn.json or unknown bank, make a new one."""
    import tlearn.infer.load

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    calls: list[int] = []
    real = tlearn.infer.load.bundle_to_onnx
    monkeypatch.setattr(tlearn.infer.load, "bundle_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    first = tlearn.load(bundle, engine="onnx").proba_of_batch(x)
    again = tlearn.load(bundle, engine="onnx").proba_of_batch(x)
    assert calls == [1]
    np.testing.assert_array_equal(again, first)

    classifier, config = load_bundle(bundle)
    with torch.no_grad():
        classifier.head[-1].bias += torch.tensor([5.0, 0.0, 0.0, 0.0])  # retrained: favours class 0
    save_bundle(classifier, config, bundle)
    changed = tlearn.load(bundle, engine="onnx").proba_of_batch(x)
    assert calls == [1, 1]
    np.testing.assert_allclose(changed, tlearn.load(bundle).proba_of_batch(x), atol=1e-4)
    assert not np.allclose(changed, first, atol=1e-3)

    (bundle / "tlearn.json").write_text((bundle / "tlearn.json").read_text() + "\n")  # any change to what it reads
    tlearn.load(bundle, engine="onnx")
    assert calls == [1, 1, 1]
    from safetensors.torch import load_file, save_file

    bank = load_file(bundle / "unknown.safetensors")  # the unknown answer's features, beside the weights
    save_file({k: v * 1.01 for k, v in bank.items()}, bundle / "unknown.safetensors")
    tlearn.load(bundle, engine="onnx")
    assert calls == [1, 1, 1, 1]


def test_a_cache_folder_that_cannot_be_written_costs_the_export_not_the_prediction(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TLEARN_CACHE_DIR", str(blocker))
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    proba = tlearn.load(tiny_bundle, engine="onnx").proba_of_batch(x)
    np.testing.assert_allclose(proba, tlearn.load(tiny_bundle).proba_of_batch(x), atol=1e-4)
    assert "Cannot keep the exported model" in caplog.text


def test_the_cache_keeps_the_most_recently_used_models() -> None:
    from tlearn.core.cache import cache_root
    from tlearn.core.onnx import CACHED_MODELS, cached_model

    made: list[int] = []

    def maker(i: int):  # type: ignore[no-untyped-def]
        return lambda: made.append(i) or f"model {i}".encode()

    assert cached_model({"n": 0}, maker(0)) == b"model 0"
    for i in range(1, CACHED_MODELS + 3):
        cached_model({"n": i}, maker(i))
        cached_model({"n": 0}, maker(0))  # used again each time: kept
    assert len(list((cache_root() / "onnx").glob("*.onnx"))) == CACHED_MODELS
    assert made.count(0) == 1
    cached_model({"n": 1}, maker(1))  # the oldest: pruned, so made again
    assert made.count(1) == 2


def test_a_damaged_kept_model_is_exported_anew_not_run(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlearn.infer.load
    from tlearn.core.cache import cache_root

    calls: list[int] = []
    real = tlearn.infer.load.bundle_to_onnx
    monkeypatch.setattr(tlearn.infer.load, "bundle_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    tlearn.load(tiny_bundle, engine="onnx")
    (kept,) = (cache_root() / "onnx").glob("*.onnx")
    kept.write_bytes(kept.read_bytes()[:1000])  # cut short, as a full disk or a crash elsewhere might leave it
    proba = tlearn.load(tiny_bundle, engine="onnx").proba_of_batch(x)
    assert calls == [1, 1]
    np.testing.assert_allclose(proba, tlearn.load(tiny_bundle).proba_of_batch(x), atol=1e-4)
    assert len(list((cache_root() / "onnx").glob("*.onnx"))) == 1  # the damaged file is gone, a good one kept
