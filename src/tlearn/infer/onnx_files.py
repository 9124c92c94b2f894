"""The files beside an exported model: the JSON that describes it, and the digest that ties it to its bundle."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlearn.artifacts.bundle import BUNDLE_FORMAT, WEIGHTS_FILE, BundleConfig
from tlearn.core.errors import BundleError
from tlearn.core.files import file_sha256, read_json
from tlearn.data.sources import display_path
from tlearn.infer.onnx_graph import INPUT_NAME, OUTPUT_NAME, SCORE_NAME, UNKNOWN_NAME

if TYPE_CHECKING:
    from tlearn.infer.int8 import Int8Report
    from tlearn.infer.int8_choice import Int8Choice
    from tlearn.infer.verify import Check

SIDECAR_FORMAT = 1


def sidecar_path(model_path: Path) -> Path:
    """The JSON beside an exported model: model.onnx -> model.onnx.json."""
    return model_path.with_name(model_path.name + ".json")


def int8_path(model_path: Path) -> Path:
    """The int8 model beside an exported float model: model.onnx -> model.int8.onnx."""
    return model_path.with_name(f"{model_path.stem}.int8{model_path.suffix}")


def weights_digest(folder: Path) -> str:
    """SHA-256 of a bundle's weights: tells whether an exported model still matches its bundle."""
    return file_sha256(folder / WEIGHTS_FILE)


def is_tlearn_export(path: Path) -> bool:
    """Whether `path` is a model or a model's JSON that `tlearn export` wrote: a JSON beside it (or itself)
    written by tlearn that names the model. Another export replaces such files; it never replaces others."""
    side = path if path.suffix.lower() == ".json" else sidecar_path(path)
    try:
        doc = read_json(side)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "tlearn" in doc and doc.get("model") == side.name.removesuffix(".json")


def read_sidecar(model_path: Path) -> dict[str, Any]:
    """The JSON that `tlearn export` writes beside a model. Raises BundleError."""
    side = sidecar_path(model_path)
    if not side.is_file():
        raise BundleError(
            f"{display_path(model_path)} has no {display_path(side.name)} beside it: the classes and preprocessing "
            "are unknown.",
            hint="Export the bundle again with `tlearn export BUNDLE --out FILE.onnx`; it writes both files.",
        )
    try:
        doc = read_json(side)
    except (OSError, ValueError) as err:
        raise BundleError(f"Cannot read {display_path(side)}: {err}.") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT or not isinstance(doc.get("bundle"), dict):
        made_by = doc.get("tlearn", "an unknown version") if isinstance(doc, dict) else "?"
        raise BundleError(
            f"{display_path(side)} is not an export description this tlearn reads (made by tlearn {made_by}).",
            hint="Export the bundle again with this tlearn.",
        )
    return doc


def config_of(doc: dict[str, Any], model_path: Path) -> BundleConfig:
    bundle = doc["bundle"]
    if bundle.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{display_path(model_path)} was exported from a bundle of format {bundle.get('format')}; this tlearn "
            f"reads format {BUNDLE_FORMAT}.",
            hint="Export it again with this tlearn version.",
        )
    try:
        return BundleConfig.from_dict(bundle)
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"The description beside {display_path(model_path)} is damaged: {err}.") from None


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
    choice: Int8Choice | None = None,
    precision: str = "float32",
) -> dict[str, Any]:
    """What a program needs to use an exported model: classes, the input/output contract, preprocessing.

    `precision` is what this model computes in ("float32" or "int8"). With `int8` (the quantization's
    report) and `choice`, "int8" also says whether prediction uses the int8 model, why, and its file.
    """
    from tlearn.core.version import __version__

    h, w = config.preprocessing.input_size
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
        "unknown": None if config.unknown is None else _unknown_doc(config),
        "preprocessing": _preprocessing_doc(config, uint8=uint8),
        "flip_tta": config.flip_tta,
        "precision": precision,
        "int8": _int8_doc(int8, choice, model_file, precision),
        "verification": None if check is None else asdict(check),
        "tlearn": __version__,
        "weights_sha256": weights_sha256,
        "bundle": config.to_dict(),
    }


def _int8_doc(
    report: Int8Report | None, choice: Int8Choice | None, model_file: str, precision: str
) -> dict[str, Any] | None:
    if report is None:
        return None
    doc = {k: v for k, v in asdict(report).items() if v is not None}
    if choice is not None:
        name = model_file if precision == "int8" else int8_path(Path(model_file)).name
        doc |= {**choice.to_dict(), "model": name}
    return doc


def int8_model_of(doc: dict[str, Any], model_path: Path) -> tuple[Path, str] | None:
    """The int8 model that prediction should use in place of the float `model_path` (whose JSON is `doc`),
    and why; None when the export chose float or made no int8 model."""
    int8 = doc.get("int8")
    if doc.get("precision", "float32") != "float32" or not isinstance(int8, dict) or not int8.get("used"):
        return None
    name = int8.get("model")
    if not isinstance(name, str) or Path(name).name != name:  # a file beside the model, nothing else
        return None
    return model_path.with_name(name), str(int8.get("reason", ""))


def _unknown_doc(config: BundleConfig) -> dict[str, Any]:
    """The extra outputs of a bundle with an unknown answer, and the rule behind them."""
    rule = config.unknown
    assert rule is not None
    return {
        "outputs": [
            {
                "name": SCORE_NAME,
                "dtype": "float32",
                "shape": ["batch"],
                "meaning": f"how far the image is from the training images ({rule.kind}); higher is further",
            },
            {
                "name": UNKNOWN_NAME,
                "dtype": "bool",
                "shape": ["batch"],
                "meaning": f"{SCORE_NAME} > threshold: the image is none of the classes",
            },
        ],
        "threshold": rule.threshold,
        "recall": rule.recall,
        "rule": rule.to_dict(),
    }


def _preprocessing_doc(config: BundleConfig, *, uint8: bool) -> dict[str, Any]:
    """The steps from an image file to the model's input, in words and in numbers."""
    prep = config.preprocessing
    h, w = prep.input_size
    return {
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
    }
