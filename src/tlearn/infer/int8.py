"""Int8 quantization of an exported ONNX model with ONNX Runtime, and what it costs in accuracy.

Static quantization (weights and activations) is calibrated on up to CALIBRATION_IMAGES training
images of the bundle's dataset, spread over the classes; without the dataset, dynamic quantization
(weights only) needs no calibration. The float and the int8 model are then scored on the bundle's
validation split (the test split if there is none), so the report says what the smaller model costs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from tlearn.core.onnx import import_onnxruntime
from tlearn.core.progress import Progress
from tlearn.infer.bundle_images import Splits, model_inputs, spread, to_uint8
from tlearn.infer.onnx_graph import INPUT_NAME
from tlearn.infer.onnx_predictor import OnnxPredictor
from tlearn.infer.predictor import BasePredictor

CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class Int8Report:
    """What int8 quantization did: method, model sizes, and accuracy before and after (None if not measured)."""

    method: str  # "static" (calibrated) or "dynamic"
    calibration_images: int
    float_bytes: int
    int8_bytes: int
    part: str | None = None  # the split measured on: "val", else "test"
    n: int = 0
    accuracy_float: float | None = None
    accuracy_int8: float | None = None
    agreement: float | None = None  # fraction of images whose top-1 class is unchanged
    skipped: str | None = None  # why accuracy was not measured

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_float is None or self.accuracy_int8 is None:
            return None
        return self.accuracy_int8 - self.accuracy_float


def quantize_bundle_model(
    model: bytes,
    predictor: BasePredictor,
    splits: Splits,
    *,
    input_type: str,
    progress: Progress,
) -> tuple[bytes, Int8Report]:
    """The int8 version of a bundle's ONNX `model` and what it did, calibrated and scored on the
    images of the bundle's dataset (`splits`) when they are there."""
    calibration = calibration_inputs(predictor, splits, input_type, progress)
    quantized, method = quantize_int8(model, calibration)
    report = int8_report(
        splits,
        OnnxPredictor(model, predictor.config),
        OnnxPredictor(quantized, predictor.config),
        method=method,
        calibration_images=0 if calibration is None else len(calibration),
        sizes=(len(model), len(quantized)),
        progress=progress,
    )
    return quantized, report


def quantize_int8(model: bytes, calibration: np.ndarray | None) -> tuple[bytes, str]:
    """Int8 weights and activations (static, calibrated on `calibration` model inputs) or weights only (dynamic).

    Static quantization covers the convolutions and linear layers; the softmax stays float so the
    probabilities keep their resolution. Returns the quantized model and "static" or "dynamic".
    """
    import_onnxruntime()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="tlearn-int8-") as tmp, _quiet_logging():
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        # Shape inference and graph clean-up: the quantizers need weights as plain initializers,
        # and a bundle with the mirror TTA shares its weights between two branches.
        quant_pre_process(str(src), str(pre))
        if calibration is None or not len(calibration):
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
            return dst.read_bytes(), "dynamic"
        quantize_static(
            str(pre),
            str(dst),
            _calibration_reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
        )
        return dst.read_bytes(), "static"


def calibration_inputs(
    predictor: BasePredictor, splits: Splits, input_type: str, progress: Progress
) -> np.ndarray | None:
    """Up to CALIBRATION_IMAGES training images spread over the classes, or None without the dataset."""
    if isinstance(splits, str) or not splits["train"][0]:
        return None
    paths, labels = splits["train"]
    by_class = [paths[int(i)] for i in np.argsort(labels, kind="stable")]  # spread the pick over every class
    progress("int8 calibration", 0, 1)
    x = model_inputs(predictor, spread(by_class, CALIBRATION_IMAGES))
    progress("int8 calibration", 1, 1)
    if not len(x):
        return None
    return to_uint8(x) if input_type == "uint8" else x


def int8_report(
    splits: Splits,
    before: BasePredictor,
    after: BasePredictor,
    *,
    method: str,
    calibration_images: int,
    sizes: tuple[int, int],
    progress: Progress,
) -> Int8Report:
    """Accuracy of the float and the int8 model on the validation split (the test split if there is none)."""
    report = partial(Int8Report, method, calibration_images, float_bytes=sizes[0], int8_bytes=sizes[1])
    if isinstance(splits, str):
        return report(skipped=splits)
    part = next((p for p in ("val", "test") if splits[p][0]), None)
    if part is None:
        return report(skipped="the bundle's split has no validation or test images")
    hits_before, hits_after, same, n = _score_both(before, after, *splits[part], progress=progress)
    if not n:
        return report(skipped=f"no image of the {part} split can be read")
    return report(part=part, n=n, accuracy_float=hits_before / n, accuracy_int8=hits_after / n, agreement=same / n)


def _score_both(
    before: BasePredictor, after: BasePredictor, paths: Sequence[Path], labels: np.ndarray, *, progress: Progress
) -> tuple[int, int, int, int]:
    """Right answers of `before`, of `after`, answers they share, and images read (unreadable ones skipped)."""
    hits_before, hits_after, same, n = 0, 0, 0, 0
    for idx, x, _ in before.input_batches(paths, batch_size=32):
        y = labels[idx]
        p_before, p_after = before.proba_of_inputs(x).argmax(1), after.proba_of_inputs(x).argmax(1)
        hits_before += int((p_before == y).sum())
        hits_after += int((p_after == y).sum())
        same += int((p_before == p_after).sum())
        n += len(idx)
        progress("int8 accuracy", n, len(paths))
    return hits_before, hits_after, same, n


def _calibration_reader(x: np.ndarray) -> object:
    """ONNX Runtime's calibration data reader over model inputs `x`, in batches of 16."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: x[i : i + 16]} for i in range(0, len(x), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Batches()


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice at WARNING on the root logger; the report says what matters."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
