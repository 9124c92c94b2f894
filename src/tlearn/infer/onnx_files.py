"""The files beside an exported model: the JSON that describes it, and the digest that ties it to its bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlearn.artifacts.bundle import BUNDLE_FORMAT, WEIGHTS_FILE, BundleConfig
from tlearn.core.errors import BundleError
from tlearn.core.files import file_sha256, read_json

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
            f"{model_path} has no {side.name} beside it: the classes and preprocessing are unknown.",
            hint="Export the bundle again with `tlearn export BUNDLE --out FILE.onnx`; it writes both files.",
        )
    try:
        doc = read_json(side)
    except (OSError, ValueError) as err:
        raise BundleError(f"Cannot read {side}: {err}.") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT or not isinstance(doc.get("bundle"), dict):
        made_by = doc.get("tlearn", "an unknown version") if isinstance(doc, dict) else "?"
        raise BundleError(
            f"{side} is not an export description this tlearn reads (made by tlearn {made_by}).",
            hint="Export the bundle again with this tlearn.",
        )
    return doc


def config_of(doc: dict[str, Any], model_path: Path) -> BundleConfig:
    bundle = doc["bundle"]
    if bundle.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{model_path} was exported from a bundle of format {bundle.get('format')}; this tlearn reads format "
            f"{BUNDLE_FORMAT}.",
            hint="Export it again with this tlearn version.",
        )
    try:
        return BundleConfig.from_dict(bundle)
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"The description beside {model_path} is damaged: {err}.") from None
