"""int8: the quantized model computes nearly what the float one does, and prediction uses it only where it
keeps the validation accuracy within half a point and is faster on this machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tlearn
import tlearn.infer.int8 as int8_module
from tlearn.infer.export import export_bundle
from tlearn.infer.int8 import Int8Report
from tlearn.infer.int8_choice import choose_int8

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle that an export may write into."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def measured(
    acc_float: float, acc_int8: float, *, float_ips: float = 50.0, int8_ips: float = 90.0, changed: int = 0,
    n: int = 200, unknown_changed: int | None = None,
) -> Int8Report:  # fmt: skip
    """A report as int8_report makes it, with the figures a test chooses: 200 validation images by default;
    `unknown_changed` None is a bundle without an unknown answer."""
    unknown = None if unknown_changed is None else 1 - unknown_changed / n
    return Int8Report(
        "static", 64, 1000, 300, part="val", n=n, accuracy_float=acc_float, accuracy_int8=acc_int8,
        agreement=1 - changed / n, unknown_agreement=unknown, float_ips=float_ips, int8_ips=int8_ips,
    )  # fmt: skip


def tiny_classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir())


def test_int8_model_is_quantized_and_answers_as_the_float_one(bundle: Path, shapes_master: Path) -> None:
    result = export_bundle(bundle, int8="on")
    q = result.int8
    assert result.int8_path == bundle / "model.int8.onnx" and result.path == bundle / "model.onnx"
    assert q is not None and q.method == "static" and q.part == "val" and q.n == 16
    assert q.calibration_images == int8_module.CALIBRATION_IMAGES == 64  # of the tiny dataset's training images
    assert q.accuracy_float is not None and q.accuracy_float >= 0.8
    assert q.accuracy_change is not None and q.accuracy_change >= -1 / 16  # at most one image of 16 changes
    assert q.agreement is not None and q.agreement >= 0.9 and q.unknown_agreement is not None
    assert q.float_ips is not None and q.int8_ips is not None and q.float_ips > 0 and q.int8_ips > 0
    assert q.int8_bytes < q.float_bytes
    ops = {n.op_type for n in onnx.load(str(result.int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized
    files = [p for cls in tiny_classes(shapes_master) for p in sorted((shapes_master / cls).glob("*.jpg"))[:4]]
    float_clf, int8_clf = tlearn.load(result.path), tlearn.load(result.int8_path)
    # The float model's JSON says int8 is chosen (--int8 on): loading either file runs int8.
    assert float_clf.precision == int8_clf.precision == "int8"
    plain = tlearn.load(bundle)  # the torch engine, in float
    p_float, p_int8 = plain.predict_proba(files), int8_clf.predict_proba(files)
    assert (p_float.argmax(1) == p_int8.argmax(1)).mean() >= 0.9
    assert np.abs(p_float - p_int8).max() < 0.2


def test_a_loss_over_half_a_point_keeps_float(run_cli, bundle: Path, shapes_master: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = int8_module.int8_report

    def losing(*args, **kwargs):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        r = real(*args, **kwargs)  # measured for real, then 1 point worse, as int8 on another model might be
        assert r.accuracy_float is not None
        return replace(r, n=200, accuracy_int8=r.accuracy_float - 0.01, int8_ips=2 * (r.float_ips or 1.0))

    monkeypatch.setattr(int8_module, "int8_report", losing)
    res = run_cli("export", bundle, "--int8", "auto")
    assert res.code == 0, res.err
    out = " ".join(res.out.split())  # lines wrapped by the terminal's width, joined
    said = "float used for prediction with --engine onnx: float kept: int8 loses 1.0 points on validation, more"
    assert f"{said} than 0.5 (" in out
    doc = json.loads((bundle / "model.onnx.json").read_text())
    assert doc["precision"] == "float32" and doc["int8"]["used"] is False and doc["int8"]["mode"] == "auto"
    assert "loses 1.0 points" in doc["int8"]["reason"]
    assert (bundle / "model.int8.onnx").is_file()  # there, for whoever wants it; prediction does not use it
    assert tlearn.load(bundle, engine="onnx").precision == "float32"
    res = run_cli("predict", bundle, shapes_master / "red_circle", "--engine", "onnx")
    assert "with the onnx engine." in " ".join(res.out.split())


def same_unknown_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 measured as giving every validation image float's unknown answer. The tiny bundle's unknown
    scores crowd its threshold (16 validation images), and int8 moves 2 of them across it."""
    real = int8_module._score_both

    def score(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        return None if found is None else (*found[:4], found[0], found[5])

    monkeypatch.setattr(int8_module, "_score_both", score)


def test_int8_that_keeps_the_accuracy_and_is_faster_is_used_and_says_so(  # type: ignore[no-untyped-def]
    run_cli, bundle: Path, shapes_master: Path, monkeypatch
) -> None:
    same_unknown_answers(monkeypatch)
    monkeypatch.setattr(int8_module, "engine_speeds", lambda before, after, x: (40.0, 80.0))
    res = run_cli("export", bundle, "--int8", "auto")
    assert res.code == 0, res.err
    out = " ".join(res.out.split())
    assert "Engine alone on this machine: 40 images/s float, 80 int8 (2.00x)." in out
    assert "int8 used for prediction with --engine onnx: int8 keeps the accuracy within 0.5 point and is faster" in out
    clf = tlearn.load(bundle, engine="onnx")
    assert clf.precision == "int8" and clf.precision_reason is not None and "2.00x" in clf.precision_reason
    res = run_cli("predict", bundle, shapes_master / "red_circle", "--engine", "onnx")
    assert res.code == 0, res.err
    assert "with the onnx engine in int8 (int8 keeps the accuracy" in " ".join(res.out.split())
    assert tlearn.load(bundle, engine="torch").precision == "float32"  # the torch engine is never int8


def test_int8_that_is_not_faster_here_keeps_float(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    same_unknown_answers(monkeypatch)
    monkeypatch.setattr(int8_module, "engine_speeds", lambda before, after, x: (80.0, 60.0))
    result = export_bundle(bundle, int8="auto")
    assert result.int8_choice is not None and not result.int8_choice.use
    assert "not faster on this machine" in result.int8_choice.reason and "0.75x" in result.int8_choice.reason
    assert tlearn.load(bundle, engine="onnx").precision == "float32"


def test_the_rule_half_a_point_with_its_error_and_faster() -> None:
    assert choose_int8(measured(0.950, 0.950), "auto").use  # every answer the same
    lost = choose_int8(measured(0.950, 0.940, changed=2), "auto")
    assert not lost.use and "loses 1.0 points on validation, more than 0.5" in lost.reason
    assert choose_int8(measured(0.90, 0.93, changed=6), "auto").use  # int8 better, beyond its error: fine
    # One image of 200 is 0.5 point: the drop alone passes, but one more changed answer could go either way
    # (one standard error: sqrt(changed) / n), as on the validation of a fine-tuned flowers17 bundle that then
    # lost 1.7 points on its test images.
    lucky = choose_int8(measured(0.950, 0.945, changed=1), "auto")
    assert not lucky.use and "loses 0.5 points on validation but changes 1 of 200 answers" in lucky.reason
    assert "so it may lose 1.0 (one standard error), more than 0.5" in lucky.reason
    swapped = choose_int8(measured(0.950, 0.950, changed=2), "auto")  # one gained, one lost: 0.7 within its error
    assert not swapped.use and "may lose 0.7" in swapped.reason
    assert choose_int8(measured(0.950, 0.950, changed=2, n=2000), "auto").use  # 0.07 on 2,000 images
    slow = choose_int8(measured(0.95, 0.95, float_ips=50, int8_ips=52), "auto")
    assert not slow.use and "not faster" in slow.reason and "1.04x" in slow.reason
    forced = choose_int8(measured(0.95, 0.90), "on")
    assert forced.use and "--int8 on" in forced.reason and "90.0% int8 vs 95.0% float" in forced.reason
    unchecked = choose_int8(Int8Report("dynamic", 0, 1000, 300, skipped="its dataset /x is not there"), "auto")
    assert not unchecked.use and unchecked.reason == (
        "float kept: int8's accuracy could not be checked (its dataset /x is not there)"
    )


def test_unknown_answers_that_int8_changes_count_among_its_changed_answers() -> None:
    """An image int8 calls "unknown" where float named its class (or the other way) is a changed answer
    as much as a changed class: the same bound applies to both."""
    assert choose_int8(measured(0.950, 0.950, unknown_changed=0), "auto").use
    flips = choose_int8(measured(0.950, 0.950, unknown_changed=4), "auto")
    assert not flips.use
    assert "changes 4 of 200 answers (whether it is unknown, for 4), so it may lose 1.0" in flips.reason
    both = choose_int8(measured(0.950, 0.950, changed=1, unknown_changed=1), "auto")
    assert not both.use and "changes 2 of 200 answers (whether it is unknown, for 1), so it may lose 0.7" in both.reason
    assert choose_int8(measured(0.950, 0.950, unknown_changed=1, n=2000), "auto").use  # 0.05 on 2,000 images


def test_without_the_dataset_auto_keeps_float_and_says_why(run_cli, bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads((bundle / "tlearn.json").read_text())
    doc["data"] = str(tmp_path / "gone")
    (bundle / "tlearn.json").write_text(json.dumps(doc))
    res = run_cli("export", bundle, "--int8", "auto")
    assert res.code == 0, res.err
    out = " ".join(res.out.split())
    assert "int8 (dynamic quantization)" in out
    assert f"Accuracy not checked: its dataset {tmp_path / 'gone'} is not there." in out
    assert "float used for prediction with --engine onnx: float kept: int8's accuracy could not be checked" in out
    assert (bundle / "model.int8.onnx").is_file() and (bundle / "model.int8.onnx.json").is_file()
    assert tlearn.load(bundle, engine="onnx").precision == "float32"


def test_a_missing_int8_model_falls_back_to_float(bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    export_bundle(bundle, int8="on")
    (bundle / "model.int8.onnx").unlink()
    assert tlearn.load(bundle, engine="onnx").precision == "float32"
    assert "model.int8.onnx is missing or from other weights: running the float model model.onnx" in caplog.text


def int8_weights(model: Path) -> np.ndarray:
    """Every int8 weight of a QDQ model: the int8 initializers its DequantizeLinear nodes read."""
    from onnx import numpy_helper

    graph = onnx.load(str(model)).graph
    read = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    found = [numpy_helper.to_array(t).ravel() for t in graph.initializer if t.name in read and t.data_type == 3]
    return np.concatenate(found)


@pytest.mark.parametrize("saturates", [True, False])
def test_int8_weights_have_seven_bits_where_this_cpus_int8_kernels_would_saturate_eight(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, saturates: bool
) -> None:
    # x86 without VNNI adds pairs of uint8 x int8 products in 16 bits: 8-bit weights overflow there
    # (on such a CPU an int8 model of the tiny bundle moved a probability by 0.39, and by 0.07 with 7-bit ones).
    monkeypatch.setattr(int8_module, "int8_saturates", lambda: saturates)
    result = export_bundle(bundle, int8="on")
    weights = int8_weights(bundle / "model.int8.onnx")
    assert np.abs(weights.astype(int)).max() == (64 if saturates else 127)  # symmetric: -64..64 or -127..127
    assert result.int8 is not None and result.int8.weight_bits == (7 if saturates else 8)
    doc = json.loads((bundle / "model.onnx.json").read_text())["int8"]
    assert doc["weight_bits"] == (7 if saturates else 8)
    assert ("7-bit weights, as this CPU has no VNNI" in doc["reason"]) == saturates  # what the export prints


@pytest.mark.parametrize(
    ("arch", "flags", "saturates"),
    [
        ("x86_64", {"avx2", "fma"}, True),  # AVX2 only
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, True),  # AVX-512 without VNNI
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
        ("x86_64", {"avx2", "avx_vnni"}, False),  # AVX-VNNI (recent Intel laptops)
        ("x86_64", None, True),  # flags unreadable: 7-bit weights run correctly everywhere
        ("aarch64", None, False),  # ARM adds int8 products in 32 bits
    ],
)
def test_only_x86_cpus_without_vnni_count_as_overflowing_8_bit_weights(
    monkeypatch: pytest.MonkeyPatch, arch: str, flags: set[str] | None, saturates: bool
) -> None:
    import tlearn.core.onnx as core_onnx

    monkeypatch.setattr(core_onnx.platform, "machine", lambda: arch)
    monkeypatch.setattr(core_onnx, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    assert core_onnx.int8_saturates.__wrapped__() is saturates


def test_eight_bit_int8_is_not_run_on_a_cpu_whose_kernels_would_saturate_it(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tlearn.infer.load as load_module

    for module in (int8_module, load_module):  # exported on a CPU with VNNI, and run there
        monkeypatch.setattr(module, "int8_saturates", lambda: False)
    export_bundle(bundle, int8="on")
    assert tlearn.load(bundle, engine="onnx").precision == "int8"
    monkeypatch.setattr(load_module, "int8_saturates", lambda: True)  # then run on one without
    assert tlearn.load(bundle, engine="onnx").precision == "float32"
    assert "model.int8.onnx has 8-bit weights, which this CPU's int8 kernels (no VNNI) would overflow: running the " \
        "float model model.onnx. Export it here again" in caplog.text  # fmt: skip


def test_a_bad_mode_is_one_line(run_cli, bundle: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("export", bundle, "--int8", "maybe")
    assert res.code == 1
    assert "--int8 must be one of off, on, auto. Got 'maybe'." in res.err


def test_float_ends_keep_the_first_and_last_convolutions_float(tiny_bundle: Path) -> None:
    from tlearn.infer.int8 import QuantSettings, quantize_int8
    from tlearn.infer.int8_graph import end_convs
    from tlearn.infer.onnx_graph import bundle_to_onnx

    model = bundle_to_onnx(tlearn.load(tiny_bundle))  # type: ignore[arg-type]
    graph = onnx.load_from_string(model).graph
    ends = end_convs(graph)
    # the stem and the last convolution of the network and of its mirror branch
    assert sorted(n.split("/")[-2] for n in ends) == ["conv_head", "conv_head_1", "conv_stem", "conv_stem_1"]
    x = np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32)
    for float_ends in (False, True):
        quantized, _ = quantize_int8(model, iter([x]), settings=QuantSettings(float_ends=float_ends))
        nodes = onnx.load_from_string(quantized).graph.node
        dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
        float_convs = {n.name for n in nodes if n.op_type == "Conv" and n.input[1] not in dequantized}
        assert float_convs == (set(ends) if float_ends else set())


def _same_padding_net() -> bytes:
    """A tiny network with TensorFlow's "same" padding (as the built-in MobileNetV2 has), in ONNX:
    its padding amounts are worked out at run time from the input's size."""
    import torch
    from timm.layers import Conv2dSame
    from torch import nn

    from tlearn.core.onnx import to_onnx

    torch.manual_seed(0)
    net = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2), nn.ReLU6(), Conv2dSame(8, 8, 3, stride=2, groups=8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4), nn.Softmax(1),
    )  # fmt: skip
    model = to_onnx(net, torch.rand(2, 3, 33, 33), input_names=("image",), output_names=("probabilities",))
    assert model is not None
    return model


def test_shape_arithmetic_is_folded_into_constants_not_quantized(tmp_path: Path) -> None:
    from tlearn.infer.int8 import DEFAULT_SETTINGS, quantize_int8
    from tlearn.infer.int8_graph import fold_shape_arithmetic, shape_arithmetic

    model = _same_padding_net()
    assert len(shape_arithmetic(onnx.load_from_string(model).graph)) > 10  # Shape, Gather, Ceil, Sub, Mul...
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    assert fold_shape_arithmetic(path) == 2  # the two "same" paddings' amounts
    folded = onnx.load(str(path))
    assert not shape_arithmetic(folded.graph) and "Shape" not in {n.op_type for n in folded.graph.node}
    before, after = ort.InferenceSession(model), ort.InferenceSession(str(path))
    for n in (1, 3):  # the batch size stays free
        x = np.random.default_rng(n).random((n, 3, 33, 33), dtype=np.float32)
        assert np.array_equal(before.run(None, {"image": x})[0], after.run(None, {"image": x})[0])
    # quantized, only the network's own tensors are: none computed from shapes, nothing after the last conv
    x = np.random.default_rng(0).random((8, 3, 33, 33), dtype=np.float32)
    quantized, _ = quantize_int8(model, iter([x]), settings=DEFAULT_SETTINGS)
    nodes = onnx.load_from_string(quantized).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    assert {producer.get(n.input[0], "image") for n in nodes if n.op_type == "QuantizeLinear"} <= {
        "image", "Conv", "Pad", "Clip"}  # fmt: skip
