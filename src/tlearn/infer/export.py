"""Export a bundle for use outside tlearn: ONNX (optionally int8) or TorchScript, verified on the spot.

The exported graph is the bundle's `Classifier` (normalisation inside, the mirror TTA inside when
the bundle uses it) followed by a softmax:

    input  "image"          float32 (N, 3, H, W) RGB in [0, 1]   (or uint8 in [0, 255] with input_type="uint8")
    output "probabilities"  float32 (N, K), rows sum to 1, columns in the order of `classes`

N is dynamic; (H, W) is the bundle's input size. A JSON file beside the model (`model.onnx.json`)
holds the classes, this contract and the resize/crop a caller must apply before it.

Every export checks itself before it is written: ONNX Runtime (or the reloaded TorchScript module)
must give PyTorch's probabilities on random inputs and on images of the bundle's dataset. `int8`
quantizes with ONNX Runtime (static, calibrated on training images when the dataset is there, else
dynamic) and reports the accuracy change on the bundle's validation split.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.artifacts.bundle import SPLIT_FILE, BundleConfig
from tlearn.core.errors import BundleError, ConfigError, DataError, TlearnError
from tlearn.core.files import atomic_path, read_json, write_json_atomic
from tlearn.core.onnx import OPSET, create_session, import_onnxruntime
from tlearn.core.progress import Progress, no_progress
from tlearn.infer.load import load
from tlearn.infer.onnx_files import SIDECAR_FORMAT, sidecar_path, weights_digest
from tlearn.infer.onnx_graph import INPUT_NAME, OUTPUT_NAME, bundle_to_onnx, export_module
from tlearn.infer.onnx_predictor import OnnxPredictor
from tlearn.infer.predictor import BasePredictor, Predictor

FORMATS = ("onnx", "torchscript")
INPUT_TYPES = ("float", "uint8")
TOLERANCE = 1e-3  # largest |exported - PyTorch| probability accepted; float32 graphs differ by ~1e-6
RANDOM_SAMPLES, REAL_SAMPLES, CALIBRATION_IMAGES = 4, 8, 64


@dataclass(frozen=True)
class Check:
    """Largest |exported - PyTorch| probability on random inputs and on real-looking images."""

    random_diff: float
    random_n: int
    real_diff: float
    real_n: int
    real_source: str  # which images: "validation images of the dataset", "synthetic images"...

    @property
    def max_diff(self) -> float:
        return max(self.random_diff, self.real_diff)


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


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    input_type: str
    input_shape: tuple[int, int, int]  # (3, H, W); the batch axis is dynamic
    classes: tuple[str, ...]
    check: Check  # of the float model, before any quantization
    int8: Int8Report | None
    size_bytes: int


def export_bundle(
    bundle: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    input_type: str = "float",
    int8: bool = False,
    opset: int = OPSET,
    progress: Progress = no_progress,
) -> ExportResult:
    """Export, verify, optionally quantize, and write the model and its JSON beside it. Raises TlearnError.

    `out` defaults to model.onnx (model.int8.onnx, model.uint8.onnx...) or model.pt in the bundle folder.
    """
    _check_options(format=format, input_type=input_type, int8=int8, opset=opset, out=out)
    folder = Path(bundle).expanduser()
    if folder.suffix.lower() in (".onnx", ".pt"):
        raise BundleError(f"{folder} is already an export.", hint="Pass the bundle folder that `tlearn train` wrote.")
    predictor = load(folder, engine="torch")
    assert isinstance(predictor, Predictor)
    path = Path(out) if out is not None else folder / _default_name(format, input_type, int8)
    splits = labelled_splits(folder, predictor.config)
    random_x, real_x, real_source = _samples(predictor, splits, input_type)
    module = export_module(predictor.classifier, input_type)

    report: Int8Report | None = None
    if format == "onnx":
        model = bundle_to_onnx(predictor, input_type=input_type, opset=opset)
        session = create_session(model)
        check = _check(lambda x: session.run(None, {INPUT_NAME: x})[0], module, random_x, real_x, real_source)
        if int8:
            calibration = _calibration_inputs(predictor, splits, input_type, progress)
            quantized, method = quantize_int8(model, calibration)
            report = _int8_report(
                predictor,
                splits,
                OnnxPredictor(model, predictor.config),
                OnnxPredictor(quantized, predictor.config),
                method=method,
                calibration_images=0 if calibration is None else len(calibration),
                sizes=(len(model), len(quantized)),
                progress=progress,
            )
            model = quantized
        with atomic_path(path) as tmp:
            tmp.write_bytes(model)
    else:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in favour of torch.export
            traced = _trace(module, torch.from_numpy(random_x[:2]))
            torch.jit.save(traced, str(tmp))
            reloaded = torch.jit.load(str(tmp))
            check = _check(lambda x: _run_torch(reloaded, x), module, random_x, real_x, real_source)
    # atomic_path has renamed the file only if the check above passed (it raises otherwise).
    sidecar = sidecar_path(path)
    write_json_atomic(
        sidecar,
        sidecar_doc(
            predictor.config,
            model_file=path.name,
            runtime=format,
            input_type=input_type,
            opset=opset if format == "onnx" else None,
            check=check,
            int8=report,
            weights_sha256=weights_digest(folder),
        ),
    )
    h, w = predictor.preprocessing.input_size
    return ExportResult(
        path=path,
        sidecar=sidecar,
        format=format,
        input_type=input_type,
        input_shape=(3, h, w),
        classes=predictor.classes,
        check=check,
        int8=report,
        size_bytes=path.stat().st_size,
    )


def quantize_int8(model: bytes, calibration: np.ndarray | None) -> tuple[bytes, str]:
    """Int8 weights and activations (static, calibrated on `calibration` model inputs) or weights only (dynamic).

    Static quantization covers the convolutions and linear layers; the softmax stays float so the
    probabilities keep their resolution. Returns the quantized model and "static" or "dynamic".
    """

    import_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self, x: np.ndarray) -> None:
            self._batches = iter([{INPUT_NAME: x[i : i + 16]} for i in range(0, len(x), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="tlearn-int8-") as tmp, _quiet_logging():
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        # Shape inference and graph clean-up: the quantizers need weights as plain initializers,
        # and a bundle with the mirror TTA shares its weights between two branches.
        quant_pre_process(str(src), str(pre))
        if calibration is not None and len(calibration):
            quantize_static(
                str(pre),
                str(dst),
                Batches(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            )
            method = "static"
        else:
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
            method = "dynamic"
        return dst.read_bytes(), method


Labelled = tuple[list[Path], np.ndarray]  # image paths and their class indices


def labelled_splits(folder: Path, config: BundleConfig) -> dict[str, Labelled] | str:
    """The images of each part ("train", "val", "test") of a bundle's split with their class indices,
    or why they are not available.

    split.json lists paths relative to the dataset; their labels come from listing the dataset
    again (`config.data`), so this works only where that dataset still is.
    """
    from tlearn.data.sources import load_dataset

    split_file = folder / SPLIT_FILE
    if not split_file.is_file():
        return f"the bundle has no {SPLIT_FILE}"
    if not config.data or not Path(config.data).exists():
        return f"its dataset {config.data or '(not recorded)'} is not there"
    try:
        dataset = load_dataset(config.data)
        doc = read_json(split_file)
    except (DataError, OSError, ValueError) as err:
        return f"its dataset cannot be read ({err})"
    base = dataset.root if dataset.root.is_dir() else dataset.root.parent
    label_of = {
        (s.path.relative_to(base).as_posix() if s.path.is_relative_to(base) else str(s.path)): s.label
        for s in dataset.samples
    }
    index = {c: i for i, c in enumerate(config.classes)}
    out: dict[str, Labelled] = {}
    for part in ("train", "val", "test"):
        pairs = [(base / rel, index[label_of[rel]]) for rel in doc.get(part, []) if label_of.get(rel) in index]
        out[part] = ([p for p, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64))
    return out


def sidecar_doc(
    config: BundleConfig,
    *,
    model_file: str,
    runtime: str,
    input_type: str,
    opset: int | None,
    check: Check | None,
    int8: Int8Report | None,
    weights_sha256: str,
) -> dict[str, Any]:
    """What a program needs to use an exported model: classes, the input/output contract, preprocessing."""
    from tlearn.core.version import __version__

    prep = config.preprocessing
    h, w = prep.input_size
    uint8 = input_type == "uint8"
    return {
        "format": SIDECAR_FORMAT,
        "model": model_file,
        "runtime": runtime,
        "opset": opset,
        "classes": list(config.classes),
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8" if uint8 else "float32",
            "shape": ["batch", 3, h, w],
            "layout": "NCHW, RGB",
            "range": [0, 255] if uint8 else [0.0, 1.0],
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(config.classes)],
            "meaning": "class probabilities (softmax), columns in the order of classes",
        },
        "preprocessing": {
            "steps": [
                "decode to RGB, turned upright as the EXIF orientation says",
                f"resize so the shorter side is {prep.resize_short_side} px ({prep.interpolation}, antialiased)",
                f"center crop to {h} x {w} (height x width)",
                "HWC -> CHW" + ("" if uint8 else ", divide by 255"),
            ],
            "resize_short_side": prep.resize_short_side,
            "interpolation": prep.interpolation,
            "input_size": [h, w],
            "crop_pct": prep.crop_pct,
            "mean": list(prep.mean),
            "std": list(prep.std),
            "normalization": "inside the model: pass pixels, not normalised values",
        },
        "flip_tta": config.flip_tta,
        "int8": None if int8 is None else {k: v for k, v in asdict(int8).items() if v is not None},
        "verification": None if check is None else asdict(check),
        "tlearn": __version__,
        "weights_sha256": weights_sha256,
        "bundle": config.to_dict(),
    }


# Verification.


def _check(run: Any, module: nn.Module, random_x: np.ndarray, real_x: np.ndarray, real_source: str) -> Check:
    def diff(x: np.ndarray) -> float:
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        return float(np.abs(np.asarray(run(x)) - ref).max()) if len(x) else 0.0

    check = Check(diff(random_x), len(random_x), diff(real_x), len(real_x), real_source)
    if not check.max_diff <= TOLERANCE:  # also catches NaN
        raise TlearnError(
            f"The exported model does not compute what the bundle computes: probabilities differ by up to "
            f"{check.max_diff:.2g} (tolerance {TOLERANCE:g}). Nothing was written.",
            hint="This is a bug worth reporting; meanwhile try another --opset or --format torchscript.",
        )
    return check


def _samples(
    predictor: Predictor, splits: dict[str, Labelled] | str, input_type: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Random model inputs, and up to REAL_SAMPLES eval-transformed images of the bundle's dataset
    (validation, else test, else training images), or synthetic photos when the dataset is not there."""
    h, w = predictor.preprocessing.input_size
    rng = np.random.default_rng(0)
    random_x = rng.random((RANDOM_SAMPLES, 3, h, w), dtype=np.float32)
    real_x, source = np.zeros((0, 3, h, w), np.float32), ""
    for part, words in (("val", "validation"), ("test", "test"), ("train", "training")):
        paths = [] if isinstance(splits, str) else splits[part][0]
        if not paths:
            continue
        picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(REAL_SAMPLES, len(paths)))]
        real_x = _inputs(predictor, picked)
        if len(real_x):
            source = f"{words} images of the dataset"
            break
    if not len(real_x):
        from tlearn.data.synthetic import CLASSES, draw_sample

        images = [draw_sample(CLASSES[i % len(CLASSES)], (96 + 8 * i, 128), rng) for i in range(REAL_SAMPLES)]
        real_x, source = _inputs(predictor, images), "synthetic photos (the dataset is not there)"
    if input_type == "uint8":
        return _to_uint8(random_x), _to_uint8(real_x), source
    return random_x, real_x, source


def _inputs(predictor: BasePredictor, images: Sequence[Any]) -> np.ndarray:
    """Stacked model inputs (N, 3, H, W) of the images that can be read."""
    h, w = predictor.preprocessing.input_size
    batches = [x for _, x, _ in predictor.input_batches(images, batch_size=32)]
    return np.concatenate(batches) if batches else np.zeros((0, 3, h, w), np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.uint8)


def _trace(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module.eval(), example, check_trace=False)


def _run_torch(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: torch.Tensor = module(torch.from_numpy(x))
    return out.numpy()


# int8.


def _calibration_inputs(
    predictor: Predictor, splits: dict[str, Labelled] | str, input_type: str, progress: Progress
) -> np.ndarray | None:
    """Up to CALIBRATION_IMAGES training images spread over the classes, or None without the dataset."""
    if isinstance(splits, str) or not splits["train"][0]:
        return None
    paths, labels = splits["train"]
    order = np.argsort(labels, kind="stable")  # spread the pick over every class
    picked = [paths[int(order[int(i)])] for i in np.linspace(0, len(paths) - 1, min(CALIBRATION_IMAGES, len(paths)))]
    progress("int8 calibration", 0, 1)
    x = _inputs(predictor, picked)
    progress("int8 calibration", 1, 1)
    if not len(x):
        return None
    return _to_uint8(x) if input_type == "uint8" else x


def _int8_report(
    predictor: Predictor,
    splits: dict[str, Labelled] | str,
    before: BasePredictor,
    after: BasePredictor,
    *,
    method: str,
    calibration_images: int,
    sizes: tuple[int, int],
    progress: Progress,
) -> Int8Report:
    """Accuracy of the float and the int8 model on the validation split (the test split if there is none)."""
    reason = splits if isinstance(splits, str) else "the bundle's split has no validation or test images"
    for part in ("val", "test"):
        if isinstance(splits, str):
            break
        paths, labels = splits[part]
        if not paths:
            continue
        hits_before, hits_after, same, n = 0, 0, 0, 0
        for idx, x, _ in predictor.input_batches(paths, batch_size=32):
            y = labels[idx]
            p_before, p_after = before.proba_of_inputs(x).argmax(1), after.proba_of_inputs(x).argmax(1)
            hits_before += int((p_before == y).sum())
            hits_after += int((p_after == y).sum())
            same += int((p_before == p_after).sum())
            n += len(idx)
            progress("int8 accuracy", n, len(paths))
        if n:
            return Int8Report(
                method,
                calibration_images,
                float_bytes=sizes[0],
                int8_bytes=sizes[1],
                part=part,
                n=n,
                accuracy_float=hits_before / n,
                accuracy_int8=hits_after / n,
                agreement=same / n,
            )
        reason = f"no image of the {part} split can be read"
        break
    return Int8Report(method, calibration_images, float_bytes=sizes[0], int8_bytes=sizes[1], skipped=reason)


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice at WARNING on the root logger; the report says what matters."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _check_options(*, format: str, input_type: str, int8: bool, opset: int, out: str | Path | None) -> None:
    problems = []
    if format not in FORMATS:
        problems.append(f"--format must be one of {', '.join(FORMATS)}. Got {format!r}.")
    if input_type not in INPUT_TYPES:
        problems.append(f"--input must be one of {', '.join(INPUT_TYPES)}. Got {input_type!r}.")
    if int8 and format != "onnx":
        problems.append("--int8 works with --format onnx only.")
    if not 17 <= opset <= 20:
        problems.append(f"--opset must be between 17 and 20. Got {opset}.")
    suffix = {"onnx": ".onnx", "torchscript": ".pt"}.get(format)
    if out is not None and suffix and Path(out).suffix.lower() != suffix:
        problems.append(f"--out must end in {suffix} for --format {format}. Got {str(out)!r}.")
    if problems:
        raise ConfigError(" ".join(problems))


def _default_name(format: str, input_type: str, int8: bool) -> str:
    if format == "torchscript":
        return "model.uint8.pt" if input_type == "uint8" else "model.pt"
    return "model" + (".uint8" if input_type == "uint8" else "") + (".int8" if int8 else "") + ".onnx"
