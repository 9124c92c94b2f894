"""Run a model with ONNX Runtime: `OnnxPredictor` has the interface of the PyTorch `Predictor`.

Decoding, batching, TTA and top-k are the shared ones of `BasePredictor`; only the network runs in
ONNX Runtime, usually faster on a CPU than eager PyTorch. One session is made per model and reused
for every call (sessions are thread-safe), with one intra-op thread per physical core: hyper-threads
of a busy core add nothing but contention.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tlearn.bundle import BUNDLE_FORMAT, CONFIG_FILE, BundleConfig
from tlearn.errors import BundleError, ExtraMissingError
from tlearn.files import read_json
from tlearn.predict import BasePredictor, Predictor, load

log = logging.getLogger(__name__)

BUNDLE_ONNX = "model.onnx"  # what `tlearn export` writes into a bundle by default, and --engine onnx reuses


def import_onnxruntime() -> ModuleType:
    """The onnxruntime module, or ExtraMissingError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise ExtraMissingError("onnxruntime", "export") from None
    return onnxruntime


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-thread siblings count once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package, core = (topology / "physical_package_id").read_text(), (topology / "core_id").read_text()
            cores.add((package.strip(), core.strip()))
        except OSError:  # no sysfs (macOS, some containers): count logical CPUs
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def create_session(model: bytes | str | Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session: every graph optimisation, `threads` intra-op threads (default: physical cores)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    # Decoding threads share the cores with inference: workers that spin between batches would starve them.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        where = "" if isinstance(model, bytes) else f" {model}"
        raise BundleError(f"ONNX Runtime cannot load the model{where}: {err}".rstrip(".") + ".") from None


class OnnxPredictor(BasePredictor):
    """The ONNX Runtime engine. `model` is a serialized ONNX model or its file; `config` the bundle's config."""

    engine = "onnx"

    def __init__(
        self, model: bytes | str | Path, config: BundleConfig, *, source: str = "", threads: int | None = None
    ) -> None:
        super().__init__(config, source=source)
        self.session = create_session(model, threads=threads)
        first = self.session.get_inputs()[0]
        self.input_name: str = first.name
        self.input_uint8 = first.type == "tensor(uint8)"

    def proba_of_batch(self, x: np.ndarray) -> np.ndarray:
        if self.input_uint8:
            feed = np.rint(x * 255).astype(np.uint8)  # exact: the eval transform gives multiples of 1/255
        else:
            feed = np.ascontiguousarray(x, dtype=np.float32)
        out: np.ndarray = self.session.run(None, {self.input_name: feed})[0]
        return out


def load_onnx(path: str | Path) -> OnnxPredictor:
    """An ONNX model written by `tlearn export` (with its JSON beside it), or a bundle folder.

    For a bundle, its exported model.onnx is used when it was made from the current weights;
    otherwise the bundle is exported in memory (a few seconds), and nothing is written.
    """
    from tlearn.export import bundle_to_onnx, sidecar_path, weights_digest

    path = Path(path).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        exported = path / BUNDLE_ONNX
        if exported.is_file() and sidecar_path(exported).is_file():
            doc = read_sidecar(exported)
            if doc.get("weights_sha256") == weights_digest(path):
                return OnnxPredictor(exported, _config_of(doc, exported), source=str(path))
            log.info("%s was exported from other weights: exporting the bundle again, in memory.", exported)
        predictor = load(path, engine="torch")
        assert isinstance(predictor, Predictor)
        return OnnxPredictor(bundle_to_onnx(predictor), predictor.config, source=str(path))
    if not path.is_file():
        raise BundleError(
            f"No such bundle or ONNX file: {path}.",
            hint="Pass the folder that `tlearn train` wrote or the .onnx file that `tlearn export` wrote.",
        )
    if path.suffix.lower() != ".onnx":
        raise BundleError(f"{path} is not an ONNX file.", hint="Pass a bundle folder or a .onnx file.")
    doc = read_sidecar(path)
    return OnnxPredictor(path, _config_of(doc, path), source=str(path))


def read_sidecar(model_path: Path) -> dict[str, Any]:
    """The JSON that `tlearn export` writes beside a model. Raises BundleError."""
    from tlearn.export import SIDECAR_FORMAT, sidecar_path

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


def _config_of(doc: dict[str, Any], model_path: Path) -> BundleConfig:
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
