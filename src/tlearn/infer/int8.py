"""Int8 quantization of an exported ONNX model with ONNX Runtime: what it costs in accuracy, what it buys in speed.

Static quantization: int8 weights with one scale per output channel (a MobileNet's depthwise filters
differ in range by orders of magnitude, which one scale per tensor crushes), uint8 activations, in the
QDQ format ONNX Runtime fuses into int8 kernels, calibrated (min / max) on CALIBRATION_IMAGES
training images of the bundle's dataset spread over the classes. What follows the last convolutions
stays float, and the shape arithmetic of a "same" padding is folded into constants first
(`int8_graph.py`). Without the dataset, dynamic quantization (weights only) needs no calibration.
The float and the int8 model are then scored on the bundle's validation split (the test split if
there is none) and timed on a few batches of it on this machine; `int8_choice.py` decides from that
report whether prediction uses int8.

Weights have 7 bits instead of 8 where the quantizing CPU's int8 kernels would overflow 8-bit ones
(x86 without VNNI: `core.onnx.int8_saturates`), and the export records which (`weight_bits`): 8-bit
weights on such a CPU (AVX2 only) moved a probability of the tiny test bundle by up to 0.39, 7-bit ones by
up to 0.07 (96 images, every class the same).

The settings (`QuantSettings`) are the best of a sweep on flowers17 feature bundles
(`benchmarks/int8.py --sweep`, README "int8"): the calibration's images count most. Min / max over
256 images widened ranges to rare extremes and lost 1.0 point on validation; over 64 it lost none,
as close to float as percentile calibration at a fraction of its time. Symmetric activations,
7-bit weights and one scale per tensor lose accuracy; int8 activations and asymmetric weights
lose speed; keeping the first and last convolutions float costs about a tenth of the speed for
no steady gain.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from tlearn.core.onnx import import_onnxruntime, int8_saturates
from tlearn.core.progress import Progress
from tlearn.infer.bundle_images import Splits, spread, to_uint8
from tlearn.infer.int8_graph import fold_shape_arithmetic, kept_float
from tlearn.infer.onnx_graph import INPUT_NAME
from tlearn.infer.onnx_predictor import OnnxPredictor
from tlearn.infer.predictor import BasePredictor

CALIBRATION_IMAGES = 64  # more widen min / max ranges to rare extremes (see the module docstring)
CALIBRATION_BATCH = 16
SPEED_IMAGES, SPEED_ROUNDS = 32, 3  # per engine and round, alternating float and int8
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
HISTOGRAM_BATCH = 2  # images per calibration batch of the histogram methods (see _histogram_reader)


@dataclass(frozen=True)
class Int8Report:
    """What int8 quantization did: method, sizes, accuracy and speed before and after (None if not measured)."""

    method: str  # "static" (calibrated) or "dynamic"
    calibration_images: int
    float_bytes: int
    int8_bytes: int
    part: str | None = None  # the split measured on: "val", else "test"
    n: int = 0
    accuracy_float: float | None = None
    accuracy_int8: float | None = None
    agreement: float | None = None  # fraction of images whose top-1 class is unchanged
    unknown_agreement: float | None = None  # fraction whose "unknown" answer is unchanged (bundles with one)
    float_ips: float | None = None  # images per second of the engine alone on this machine
    int8_ips: float | None = None
    skipped: str | None = None  # why accuracy was not measured
    weight_bits: int = 8  # 7 where the quantizing CPU's int8 kernels would overflow 8-bit weights

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_float is None or self.accuracy_int8 is None:
            return None
        return self.accuracy_int8 - self.accuracy_float

    @property
    def speedup(self) -> float | None:
        """int8's images per second over the float model's, measured in one run."""
        if self.float_ips is None or self.int8_ips is None or self.float_ips <= 0:
            return None
        return self.int8_ips / self.float_ips


@dataclass(frozen=True)
class QuantSettings:
    """How ONNX Runtime's static quantization runs. The defaults are the best setting of the sweep in
    `benchmarks/int8.py --sweep` (see the module docstring); the other values are there for it to compare."""

    calibration: str = "minmax"  # how each activation's range is set: "minmax", "entropy", "percentile"
    percentile: float = 99.999  # with "percentile": the share of |values| the range covers
    per_channel: bool = True  # one weight scale per output channel (one per tensor collapses a MobileNet)
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    reduce_range: bool | None = None  # 7-bit weights; None: where this CPU's kernels saturate 8 (`int8_saturates`)
    activations: str = "uint8"  # or "int8"
    float_ends: bool = False  # the first convolution (on the image) and the last one stay float
    float_tail: bool = True  # what comes after the last convolution (pooling, head, mirror average) stays float
    fold_shapes: bool = True  # arithmetic on tensor shapes ("same" padding amounts) made constants first
    images: int = CALIBRATION_IMAGES

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS or self.activations not in ("uint8", "int8"):
            raise ValueError(f"unknown quantization settings {self}")


DEFAULT_SETTINGS = QuantSettings()


def quantize_bundle_model(
    model: bytes,
    predictor: BasePredictor,
    splits: Splits,
    *,
    input_type: str,
    progress: Progress,
    settings: QuantSettings | None = None,
) -> tuple[bytes, Int8Report]:
    """The int8 version of a bundle's ONNX `model` and what it did, calibrated, scored and timed on the
    images of the bundle's dataset (`splits`) when they are there."""
    settings = settings or DEFAULT_SETTINGS
    calibration = calibration_paths(splits, settings.images)
    batches = calibration_batches(predictor, calibration, input_type, progress)
    first = next(batches, None)  # none of them readable: no calibration
    calibrated = None if first is None else chain([first], batches)
    quantized, method = quantize_int8(model, calibrated, settings=settings)
    report = int8_report(
        splits,
        OnnxPredictor(model, predictor.config),
        OnnxPredictor(quantized, predictor.config),
        method=method,
        calibration_images=len(calibration) if method == "static" else 0,
        sizes=(len(model), len(quantized)),
        progress=progress,
    )
    return quantized, replace(report, weight_bits=weight_bits(settings))


def weight_bits(settings: QuantSettings) -> int:
    """7 where `settings` ask for reduced-range weights, or leave it to this CPU and its int8 kernels would
    overflow 8-bit ones (`int8_saturates`); else 8."""
    reduce = int8_saturates() if settings.reduce_range is None else settings.reduce_range
    return 7 if reduce else 8


def quantize_int8(
    model: bytes, calibration: Iterator[np.ndarray] | None, *, settings: QuantSettings = DEFAULT_SETTINGS
) -> tuple[bytes, str]:
    """Int8 weights and activations (static, calibrated on the `calibration` batches of model inputs) or
    weights only (dynamic, without them). Returns the quantized model and "static" or "dynamic".

    What stays float is `int8_graph.kept_float`'s: the head and the unknown score's similarities, and
    by default everything after the last convolutions. Weights have 7 bits where this CPU's int8 kernels
    would overflow 8 (`weight_bits`).
    """
    import_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduced = weight_bits(settings) == 7
    with tempfile.TemporaryDirectory(prefix="tlearn-int8-") as tmp, _quiet_logging():
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        # Shape inference and graph clean-up: the quantizers need weights as plain initializers,
        # and a bundle with the mirror TTA shares its weights between two branches. ONNX's own shape
        # inference: the symbolic one stops at the built-in MobileNetV2's graph ("Incomplete symbolic
        # shape inference", a traceback from `tlearn export --int8` on a real bundle).
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if settings.fold_shapes:
            fold_shape_arithmetic(pre)
        if calibration is None:
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                             reduce_range=reduced)  # fmt: skip
            return dst.read_bytes(), "dynamic"
        kept, op_types = kept_float(pre, float_tail=settings.float_tail, float_ends=settings.float_ends)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[settings.calibration]  # fmt: skip
        quantize_static(
            str(pre),
            str(dst),
            _calibration_reader(calibration) if settings.calibration == "minmax" else _histogram_reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=reduced,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if settings.activations == "int8" else QuantType.QUInt8,
            nodes_to_exclude=kept,
            op_types_to_quantize=op_types,
            calibrate_method=method,
            extra_options={
                "ActivationSymmetric": settings.symmetric_activations,
                "WeightSymmetric": settings.symmetric_weights,
                "CalibPercentile": settings.percentile,
                **({} if settings.calibration == "minmax" else {"CalibStridedMinMax": 1}),
            },
        )
        return dst.read_bytes(), "static"


def calibration_paths(splits: Splits, n: int = CALIBRATION_IMAGES) -> list[Path]:
    """Up to `n` training images spread evenly over the classes; none without the dataset."""
    if isinstance(splits, str) or not splits["train"][0]:
        return []
    paths, labels = splits["train"]
    by_class = [paths[int(i)] for i in np.argsort(labels, kind="stable")]  # spread the pick over every class
    return spread(by_class, n)


def calibration_batches(
    predictor: BasePredictor, paths: Sequence[Path], input_type: str, progress: Progress
) -> Iterator[np.ndarray]:
    """The model inputs of `paths`, CALIBRATION_BATCH at a time, decoded as they are asked for (the
    unreadable ones left out)."""
    done = 0
    for idx, x, failed in predictor.input_batches(paths, batch_size=CALIBRATION_BATCH):
        done += len(idx) + len(failed)
        progress("int8 calibration", done, len(paths))
        if len(x):
            yield to_uint8(x) if input_type == "uint8" else x


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
    """Accuracy of the float and the int8 model on the validation split (the test split if there is
    none), and the images per second of each engine on a few batches of it."""
    report = partial(Int8Report, method, calibration_images, float_bytes=sizes[0], int8_bytes=sizes[1])
    if isinstance(splits, str):
        return report(skipped=splits)
    part = next((p for p in ("val", "test") if splits[p][0]), None)
    if part is None:
        return report(skipped="the bundle's split has no validation or test images")
    scores = _score_both(before, after, *splits[part], progress=progress)
    if scores is None:
        return report(skipped=f"no image of the {part} split can be read")
    n, hits_before, hits_after, same, same_unknown, sample = scores
    float_ips, int8_ips = engine_speeds(before, after, sample)
    return report(
        part=part,
        n=n,
        accuracy_float=hits_before / n,
        accuracy_int8=hits_after / n,
        agreement=same / n,
        unknown_agreement=None if same_unknown is None else same_unknown / n,
        float_ips=float_ips,
        int8_ips=int8_ips,
    )


def _score_both(
    before: BasePredictor, after: BasePredictor, paths: Sequence[Path], labels: np.ndarray, *, progress: Progress
) -> tuple[int, int, int, int, int | None, np.ndarray] | None:
    """Images read, right answers of `before` and of `after`, top-1 answers and unknown answers they
    share, and the first SPEED_IMAGES model inputs; None when no image can be read."""
    n, hits_before, hits_after, same, same_unknown = 0, 0, 0, 0, 0
    sample: list[np.ndarray] = []
    scored = before.unknown_rule is not None
    for idx, x, _ in before.input_batches(paths, batch_size=32):
        if not len(idx):
            continue
        y = labels[idx]
        (p_before, s_before), (p_after, s_after) = before.answer_of_inputs(x), after.answer_of_inputs(x)
        hits_before += int((p_before.argmax(1) == y).sum())
        hits_after += int((p_after.argmax(1) == y).sum())
        same += int((p_before.argmax(1) == p_after.argmax(1)).sum())
        if s_before is not None and s_after is not None:
            same_unknown += int((before.is_unknown(s_before) == after.is_unknown(s_after)).sum())
        n += len(idx)
        if sum(map(len, sample)) < SPEED_IMAGES:
            sample.append(x[: SPEED_IMAGES - sum(map(len, sample))])
        progress("int8 accuracy", n, len(paths))
    if not n:
        return None
    return n, hits_before, hits_after, same, same_unknown if scored else None, np.concatenate(sample)


def engine_speeds(before: BasePredictor, after: BasePredictor, x: np.ndarray) -> tuple[float, float]:
    """Images per second of each engine alone on model inputs `x`, all of them per call (as prediction
    passes them: `run_session` splits them).

    The two run in turn, SPEED_ROUNDS times, and each keeps its fastest round: on a machine shared
    with other work both see the same load, and the ratio is what the choice needs.
    """
    best = [float("inf"), float("inf")]
    for engine in (before, after):  # warm-up: the first run of a session allocates its buffers
        engine.answer_of_batch(x[:2])
    for _ in range(SPEED_ROUNDS):
        for i, engine in enumerate((before, after)):
            start = time.perf_counter()
            engine.answer_of_batch(x)
            best[i] = min(best[i], time.perf_counter() - start)
    return len(x) / best[0], len(x) / best[1]


def _calibration_reader(batches: Iterator[np.ndarray]) -> Any:
    """ONNX Runtime's calibration data reader over batches of model inputs."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(batches, None)
            return None if x is None else {INPUT_NAME: x}

    return Batches()


def _histogram_reader(batches: Iterator[np.ndarray]) -> Any:
    """The reader for the histogram calibrations (entropy, percentile), HISTOGRAM_BATCH images at a time:
    they take every activation of the batch (about 200 MB per image for a MobileNetV2 at 288 px with
    the mirror), so ONNX Runtime is made to fold each batch into the histograms before the next one
    (its `CalibStridedMinMax` loop, which needs the number of batches and `set_range`)."""
    from onnxruntime.quantization import CalibrationDataReader

    small = [x[s : s + HISTOGRAM_BATCH] for x in batches for s in range(0, len(x), HISTOGRAM_BATCH)]

    class Window(CalibrationDataReader):
        def __init__(self) -> None:
            self.todo: list[np.ndarray] = []

        def __len__(self) -> int:
            return len(small)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.todo = small[start_index:end_index]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return {INPUT_NAME: self.todo.pop(0)} if self.todo else None

    return Window()


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice at WARNING on the root logger; the report says what matters."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
