"""Export a bundle for use outside tlearn: ONNX (optionally int8) or TorchScript, verified on the spot.

The exported graph is the bundle's `Classifier` (normalisation inside, the mirror TTA inside when
the bundle uses it) followed by a softmax:

    input  "image"          float32 (N, 3, H, W) RGB in [0, 1]   (or uint8 in [0, 255] with input_type="uint8")
    output "probabilities"  float32 (N, K), rows sum to 1, columns in the order of `classes`

N is dynamic; (H, W) is the bundle's input size. A JSON file beside the model (`model.onnx.json`,
see `onnx_files.py`) holds the classes, this contract and the resize/crop a caller must apply before it.

Every export checks itself before it is written (`verify.py`): ONNX Runtime (or the reloaded
TorchScript module) must give PyTorch's probabilities on random inputs and on images of the bundle's
dataset. `int8` quantizes with ONNX Runtime (`int8.py`) and reports the accuracy change on the
bundle's validation split and times it; with `int8="auto"` (`int8_choice.py`) prediction uses it only where
it keeps the validation accuracy and is faster on this machine. The int8 model goes beside the float one
(model.onnx -> model.int8.onnx), and the float model's JSON records the choice, which `--engine onnx`
follows for the bundle.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core.errors import BundleError, ConfigError, OutputError
from tlearn.core.files import atomic_path, write_json_atomic
from tlearn.core.marks import refuse_to_replace
from tlearn.core.onnx import OPSET, create_session
from tlearn.core.progress import Progress, no_progress
from tlearn.core.words import not_one_of
from tlearn.data.sources import display_path
from tlearn.infer.bundle_images import labelled_splits
from tlearn.infer.int8 import Int8Report, quantize_bundle_model
from tlearn.infer.int8_choice import MODES, Int8Choice, choose_int8
from tlearn.infer.load import load
from tlearn.infer.onnx_files import int8_path, is_tlearn_export, sidecar_doc, sidecar_path, weights_digest
from tlearn.infer.onnx_graph import INPUT_NAME, bundle_to_onnx, export_module
from tlearn.infer.predictor import Predictor
from tlearn.infer.verify import Check, Samples, check_export, check_samples

FORMATS = ("onnx", "torchscript")
INPUT_TYPES = ("float", "uint8")


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
    unknown_outputs: bool = False  # the ONNX model also has unknown_score and unknown (bundles that have them)
    int8_path: Path | None = None  # the int8 model beside `path` (int8 "on" or "auto")
    int8_choice: Int8Choice | None = None  # whether prediction uses it, and why


def export_bundle(
    bundle: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    input_type: str = "float",
    int8: str | bool = "off",
    opset: int = OPSET,
    progress: Progress = no_progress,
) -> ExportResult:
    """Export, verify, optionally quantize, and write the model and its JSON beside it. Raises TlearnError.

    `out` defaults to model.onnx (model.uint8.onnx for uint8 input) or model.pt in the bundle folder.
    `int8`: "off"; "on" (also write the int8 model, model.int8.onnx, and predict with it); "auto" (write
    it, and predict with it only where it keeps the accuracy and is faster: see `int8_choice.py`).
    True and False mean "on" and "off".
    """
    mode = ("on" if int8 else "off") if isinstance(int8, bool) else int8
    _check_options(format=format, input_type=input_type, int8=mode, opset=opset, out=out)
    folder = Path(bundle).expanduser()
    if folder.suffix.lower() in (".onnx", ".pt"):
        raise BundleError(
            f"{display_path(folder)} is already an export.", hint="Pass the bundle folder that `tlearn train` wrote."
        )
    path = Path(out).expanduser() if out is not None else folder / _default_name(format, input_type)
    if out is not None or folder.is_dir():  # a missing bundle is load's to report
        check_writable(path)
        _refuse_users_files(path, int8=mode != "off")
    predictor = load(folder, engine="torch")
    assert isinstance(predictor, Predictor)  # engine="torch" gives the PyTorch engine
    splits = labelled_splits(folder, predictor.config)
    samples = check_samples(predictor, splits, input_type)
    report: Int8Report | None = None
    choice: Int8Choice | None = None
    quantized: Path | None = None
    document = partial(
        sidecar_doc,
        predictor.config,
        runtime=format,
        input_type=input_type,
        opset=opset if format == "onnx" else None,
        weights_sha256=weights_digest(folder),
    )
    if format == "onnx":
        model, check = _onnx_model(predictor, samples, input_type=input_type, opset=opset)
        if mode != "off":
            int8_model, report = quantize_bundle_model(
                model, predictor, splits, input_type=input_type, progress=progress
            )
            choice, quantized = choose_int8(report, mode), int8_path(path)
            # The int8 model first: the float model's JSON, written last, is what points to it.
            _write_model(quantized, int8_model)
            doc = document(model_file=quantized.name, check=None, int8=report, choice=choice, precision="int8")
            write_json_atomic(sidecar_path(quantized), doc)
        _write_model(path, model)
    else:
        check = _write_torchscript(path, predictor, samples, input_type=input_type)
    # The model file is there only if its check passed (check_export raises otherwise).
    sidecar = sidecar_path(path)
    write_json_atomic(sidecar, document(model_file=path.name, check=check, int8=report, choice=choice))
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
        unknown_outputs=format == "onnx" and predictor.unknown_rule is not None,
        int8_path=quantized,
        int8_choice=choice,
    )


def _onnx_model(predictor: Predictor, samples: Samples, *, input_type: str, opset: int) -> tuple[bytes, Check]:
    """The bundle as an ONNX model, checked against PyTorch (check_export raises when it differs)."""
    model = bundle_to_onnx(predictor, input_type=input_type, opset=opset)
    session = create_session(model)
    reference = export_module(predictor.classifier, input_type)
    return model, check_export(lambda x: session.run(None, {INPUT_NAME: x})[0], reference, samples)


def _write_model(path: Path, model: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(model)


def _write_torchscript(path: Path, predictor: Predictor, samples: Samples, *, input_type: str) -> Check:
    """Trace to TorchScript and save to `path`; the module reloaded from the file is what is checked."""
    reference = export_module(predictor.classifier, input_type)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in favour of torch.export
        traced = _trace(reference, torch.from_numpy(samples.random[:2]))
        torch.jit.save(traced, str(tmp))
        reloaded = torch.jit.load(str(tmp))
        # Inside atomic_path: a failed check raises before the file gets its name.
        return check_export(lambda x: _run_torch(reloaded, x), reference, samples)


def _trace(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module.eval(), example, check_trace=False)


def _run_torch(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: torch.Tensor = module(torch.from_numpy(x))
    return out.numpy()


def _check_options(*, format: str, input_type: str, int8: str, opset: int, out: str | Path | None) -> None:
    problems = []
    if format not in FORMATS:
        problems.append(not_one_of("--format", format, FORMATS))
    if input_type not in INPUT_TYPES:
        problems.append(not_one_of("--input", input_type, INPUT_TYPES))
    if int8 not in MODES:
        problems.append(not_one_of("--int8", int8, MODES))
    elif int8 != "off" and format != "onnx":
        problems.append("--int8 works with --format onnx only.")
    if not 17 <= opset <= 20:
        problems.append(f"--opset must be between 17 and 20. Got {opset}.")
    suffix = {"onnx": ".onnx", "torchscript": ".pt"}.get(format)
    if out is not None and suffix and Path(out).suffix.lower() != suffix:
        problems.append(f"--out must end in {suffix} for --format {format}. Got {display_path(out)!r}.")
    if problems:
        raise ConfigError(" ".join(problems))


def check_writable(path: Path) -> None:
    """Raise OutputError now if `path` and the JSON beside it cannot be written there, rather than after the
    export and its checks (seconds to minutes): a bundle on a read-only mount, a path below a file."""
    if path.is_dir():
        raise OutputError(f"Cannot write {display_path(path)}: it is a folder.", hint=_elsewhere(path))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # atomic_path makes the missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(
            f"Cannot write {display_path(path)}: {display_path(folder)} is a file, not a folder.", hint=_elsewhere(path)
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as err:
        why = "is on a read-only file system" if err.errno == errno.EROFS else f"cannot be written ({err.strerror})"
        raise OutputError(
            f"Cannot write {display_path(path)}: {display_path(folder)} {why}.", hint=_elsewhere(path)
        ) from None
    os.close(fd)
    os.unlink(probe)


def _refuse_users_files(path: Path, *, int8: bool) -> None:
    """Raise OutputError before any work when the model, its int8 twin or their JSONs would replace a file that
    no `tlearn export` wrote (an earlier export of this or another bundle is replaced, as a rerun expects)."""
    for model in (path, int8_path(path)) if int8 else (path,):
        for target in (model, sidecar_path(model)):
            refuse_to_replace(target, ours=is_tlearn_export, option="--out", what="an export")


def _elsewhere(path: Path) -> str:
    return f"Write it elsewhere with --out, e.g. --out ./{display_path(path.name)} (its JSON goes beside it)."


def _default_name(format: str, input_type: str) -> str:
    if format == "torchscript":
        return "model.uint8.pt" if input_type == "uint8" else "model.pt"
    return "model" + (".uint8" if input_type == "uint8" else "") + ".onnx"
