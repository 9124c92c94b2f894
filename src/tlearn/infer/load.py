"""`tlearn.load(...)`: a bundle folder or an exported ONNX file, as a predictor of the engine asked for."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from tlearn.artifacts.bundle import CONFIG_FILE, UNKNOWN_FILE, WEIGHTS_FILE, load_bundle
from tlearn.core.errors import BundleError, ConfigError, ExtraMissingError
from tlearn.core.files import file_sha256
from tlearn.core.onnx import cached_model, import_onnxruntime, int8_saturates, onnx_pays
from tlearn.core.words import not_one_of
from tlearn.data.sources import display_path
from tlearn.infer.onnx_files import config_of, int8_model_of, read_sidecar, sidecar_path, weights_digest
from tlearn.infer.onnx_graph import bundle_to_onnx
from tlearn.infer.onnx_predictor import BUNDLE_ONNX, OnnxPredictor
from tlearn.infer.predictor import NO_UNKNOWN_HINT, BasePredictor, Predictor
from tlearn.models.unknown import NO_UNKNOWN_WHY

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnx")
BUNDLE_FILES = (CONFIG_FILE, WEIGHTS_FILE, UNKNOWN_FILE)  # what `load_bundle` reads: what its exported model is made of


def load(bundle: str | Path, *, engine: str = "auto", images: int | None = None) -> BasePredictor:
    """Load a bundle folder written by `tlearn train`, or an ONNX file written by `tlearn export`.

    `engine`: "torch" runs the bundle's PyTorch network; "onnx" runs ONNX Runtime (the bundle's
    exported model.onnx if it is up to date, else one exported in memory); "auto" picks "onnx" for
    an .onnx file, and for a bundle folder "onnx" where `images` (how many are about to be predicted)
    repay the export (`core.onnx.onnx_pays`) or it was exported, else "torch". Raises BundleError,
    ConfigError, ExtraMissingError.
    """
    path = Path(bundle).expanduser()
    if engine not in (*ENGINES, "auto"):
        raise ConfigError(not_one_of("--engine", engine, ENGINES))
    is_onnx_file = path.suffix.lower() == ".onnx"
    if engine == "onnx" or (engine == "auto" and is_onnx_file):
        return _said_once(load_onnx(path))
    if is_onnx_file:
        raise ConfigError(f"{display_path(path)} is an ONNX file: it runs with --engine onnx, not {engine}.")
    classifier, config = load_bundle(path)
    predictor = Predictor(classifier, config, source=display_path(path))
    if engine == "auto" and images is not None and onnx_available():
        # ONNX Runtime where the bundle has an up-to-date exported model (`tlearn export`, int8 where that
        # chose it) or the images' passes (two per image with the mirror) repay exporting one in memory
        exported = _exported(path)
        passes = images * (2 if config.flip_tta else 1)
        if exported is not None or onnx_pays(passes, config.preprocessing.input_size):
            try:
                return _said_once(_bundle_onnx(path, predictor, exported))
            except Exception as err:  # a network the exporter cannot trace still predicts, in PyTorch
                log.info("Predicting in PyTorch: exporting the bundle to ONNX failed (%s).", err)
    return _said_once(predictor)


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter are installed (the `export` extra)."""
    try:
        import_onnxruntime()
        import onnx  # noqa: F401  (the export writes through it)
    except (ExtraMissingError, ImportError):
        return False
    return True


def load_for_serving(bundle: str | Path, *, engine: str = "auto") -> tuple[BasePredictor, Predictor | None]:
    """What a server answers with, and the PyTorch predictor its heatmaps come from (None: no heatmaps).

    "auto": a bundle folder is served by ONNX Runtime where it is installed (a server answers many
    images, so the export at start-up repays itself: 2.9x the requests per second of PyTorch at 8
    clients on a 2-core CPU), with the bundle's PyTorch network beside it for heatmaps, which need
    gradients; an .onnx file by ONNX Runtime alone. "torch": PyTorch for both. "onnx": ONNX Runtime
    alone. ONNX Runtime also opens the model for lone requests (`core.onnx.Sessions`). Raises what `load` raises.
    """
    path = Path(bundle).expanduser()
    if engine == "auto" and path.is_dir() and onnx_available():
        torch_predictor = load(path, engine="torch")
        assert isinstance(torch_predictor, Predictor)
        try:
            return _bundle_onnx(path, torch_predictor, _exported(path), lone=True), torch_predictor
        except Exception as err:  # a network the exporter cannot trace is still served, in PyTorch
            log.info("Serving in PyTorch: exporting the bundle to ONNX failed (%s).", err)
            return torch_predictor, torch_predictor
    if engine == "onnx" or (engine == "auto" and path.suffix.lower() == ".onnx"):
        return _said_once(load_onnx(path, lone=True)), None
    predictor = load(path, engine=engine)
    return predictor, predictor if isinstance(predictor, Predictor) else None


def _said_once(predictor: BasePredictor) -> BasePredictor:
    """A model without an unknown answer says so, and why it may lack one, once, when it is loaded."""
    if predictor.unknown_rule is None:
        log.warning(
            "%s has no 'unknown' answer (%s): every image gets one of its classes, however far from them. %s",
            predictor.source or "This model",
            NO_UNKNOWN_WHY,
            NO_UNKNOWN_HINT,
        )
    return predictor


def load_onnx(path: str | Path, *, lone: bool = False) -> OnnxPredictor:
    """An ONNX model written by `tlearn export` (with its JSON beside it), or a bundle folder.

    For a bundle, its exported model.onnx is used when it was made from the current weights; otherwise
    the bundle is exported in memory (a few seconds), and nothing is written. Where `tlearn export
    --int8` chose the int8 model for a float model (its JSON says so, and why), the int8 model beside
    it runs in its place. `lone`: also open the model for passes of a single row (`core.onnx.Sessions`).
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return _bundle_onnx(path, None, _exported(path), lone=lone)
    if not path.is_file():
        raise BundleError(
            f"No such bundle or ONNX file: {display_path(path)}.",
            hint="Pass the folder that `tlearn train` wrote or the .onnx file that `tlearn export` wrote.",
        )
    if path.suffix.lower() != ".onnx":
        raise BundleError(f"{display_path(path)} is not an ONNX file.", hint="Pass a bundle folder or a .onnx file.")
    return _int8_or(path, read_sidecar(path), source=display_path(path), lone=lone)


def _exported(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The bundle's exported model.onnx and its JSON, when it was made from the bundle's current weights."""
    exported = folder / BUNDLE_ONNX
    if not (exported.is_file() and sidecar_path(exported).is_file()):
        return None
    doc = read_sidecar(exported)
    if doc.get("weights_sha256") != weights_digest(folder):
        log.info("%s was exported from other weights: exporting the bundle again, in memory.", exported)
        return None
    return exported, doc


def _bundle_onnx(
    folder: Path, predictor: Predictor | None, exported: tuple[Path, dict[str, Any]] | None, *, lone: bool = False
) -> OnnxPredictor:
    """The bundle's `exported` model where it is up to date (`_exported`; see `_int8_or`), else the bundle
    (`predictor`, loaded here if None) exported in memory: a few seconds, and nothing is written."""
    if exported is not None:
        return _int8_or(*exported, source=display_path(folder), lone=lone)
    if predictor is None:
        classifier, config = load_bundle(folder)
        predictor = Predictor(classifier, config, source=display_path(folder))
    # kept in the cache folder under the bundle's files, so the next `tlearn predict` or `serve` of it
    # reads the model instead of exporting it again
    files = {name: file_sha256(folder / name) for name in BUNDLE_FILES if (folder / name).is_file()}
    model = cached_model({"bundle": files}, partial(bundle_to_onnx, predictor))
    return OnnxPredictor(model, predictor.config, source=display_path(folder), lone=lone)


def _int8_or(model: Path, doc: dict[str, Any], *, source: str, lone: bool = False) -> OnnxPredictor:
    """The int8 model beside `model` where its export chose it (and it is there, from the same weights, with
    weights this CPU's int8 kernels run correctly: `core.onnx.int8_saturates`); else `model` itself. `doc`
    is `model`'s JSON."""
    config = config_of(doc, model)
    chosen = int8_model_of(doc, model)
    if chosen is not None and _overflows_here(doc):
        log.warning(
            "%s has 8-bit weights, which this CPU's int8 kernels (no VNNI) would overflow: running the float model "
            "%s. Export it here again (`tlearn export BUNDLE --int8 auto`) for 7-bit weights.",
            chosen[0].name, model.name,
        )  # fmt: skip
        chosen = None
    if chosen is not None:
        int8_file, reason = chosen
        there = int8_file.is_file() and sidecar_path(int8_file).is_file()
        if there and read_sidecar(int8_file).get("weights_sha256") == doc.get("weights_sha256"):
            predictor = OnnxPredictor(
                int8_file, config, source=source, lone=lone, precision="int8", precision_reason=reason
            )
            return _checked(predictor, int8_file)
        log.warning("%s is missing or from other weights: running the float model %s.", int8_file, model.name)
    # Exports made before the JSON said its precision: an int8 section meant an int8 model.
    precision = "int8" if doc.get("precision", "int8" if doc.get("int8") else "") == "int8" else "float32"
    if precision == "int8" and _overflows_here(doc):
        log.warning(
            "%s has 8-bit weights, which this CPU's int8 kernels (no VNNI) may overflow: its answers can differ "
            "from the float model's. Export the bundle here again (`tlearn export BUNDLE --int8 on`) for 7-bit "
            "weights.", model.name,
        )  # fmt: skip
    return _checked(OnnxPredictor(model, config, source=source, lone=lone, precision=precision), model)


def _overflows_here(doc: dict[str, Any]) -> bool:
    """Whether the int8 model of an export (`doc`: its JSON) has 8-bit weights (exports before `weight_bits`
    all had) and this CPU's int8 kernels would overflow them."""
    int8 = doc.get("int8")
    return isinstance(int8, dict) and int8.get("weight_bits", 8) == 8 and int8_saturates()


def _checked(predictor: OnnxPredictor, model_path: Path) -> OnnxPredictor:
    """The classes of the JSON beside an ONNX model must be as many as its outputs (as load_bundle checks
    for a bundle): an edited JSON would label every answer wrongly, or index past its list."""
    width = predictor.sessions.outputs()[0].shape[-1]
    classes = predictor.config.classes
    if isinstance(width, int) and width != len(classes):
        raise BundleError(
            f"{display_path(sidecar_path(model_path))} lists {len(classes)} classes but the model has {width} "
            "outputs: the two must match, one class per output.",
            hint="Export the bundle again (`tlearn export BUNDLE`); it writes both files.",
        )
    return predictor
