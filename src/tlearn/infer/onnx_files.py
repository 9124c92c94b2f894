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
    from tlearn.infer.verify import Check

SIDECAR_FORMAT = 1


def sidecar_path(model_path: Path) -> Path:
    """The JSON beside an exported model: model.onnx -> model.onnx.json."""
    return model_path.with_name(model_path.name + ".json")


def weights_digest(folder: Path) -> str:
    """SHA-256 of a bundle's weights: tells whether an exported model still matches its bundle."""
    return file_sha256(folder / WEIGHTS_FILE)


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
) -> dict[str, Any]:
    """What a program needs to use an exported model: classes, the input/output contract, preprocessing."""
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
        "int8": None if int8 is None else {k: v for k, v in asdict(int8).items() if v is not None},
        "verification": None if check is None else asdict(check),
        "tlearn": __version__,
        "weights_sha256": weights_sha256,
        "bundle": config.to_dict(),
    }


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
