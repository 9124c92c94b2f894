"""ONNX helpers every layer may use: trace a module into ONNX, and open an ONNX Runtime CPU session.

onnx and onnxruntime are optional (the `export` extra): they are imported inside the functions that
need them, and a missing one raises ExtraMissingError naming the extra to install.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core.cache import cache_root, digest
from tlearn.core.errors import BundleError, ExtraMissingError
from tlearn.core.files import atomic_path
from tlearn.core.threads import by_row_chunks, cpu_flags, usable_cpus

OPSET = 17  # the classic exporter supports 7 to 20; 17 runs on every ONNX Runtime since 1.11

# ONNX Runtime on a CPU runs these networks fastest one image per call, each call on one thread of its own,
# with one call in flight per physical core: larger batches spill the activations out of the caches, and a
# call spread over the cores leaves them idle between its operators (its threads wait for each other there).
# Measured on a 2-core AMD EPYC with `python -m benchmarks.engine_batch` (img/s at 1 / 2 / 4 / 8 / 16 images
# per call, fastest of 3 rounds, all in one run). MobileNetV2 features at 224 px: one call at a time on a
# thread per core 218 / 240 / 243 / 205 / 193; in flight on a thread per core 275 / 274 / 248 / 212 / 182;
# in flight on one thread each 320 / 333 / 260 / 214 / 189. At 288 px: 118 / 133 / 140 / 119 / 103; 175 /
# 143 / 124 / 129 / 104; 193 / 158 / 138 / 134 / 124. DINOv2 ViT-S/14 at 224 px: 21 / 21 / 21 / 22 / 19;
# 24 / 23 / 20 / 18 / 17; 27 / 25 / 24 / 22 / 18. One per call on one thread each: 10 to 16% faster than
# the same calls on a thread per core, 32 to 45% faster than the best serial batch.
ENGINE_BATCH = 1

# What ONNX Runtime costs and saves, in eager passes of one image at REFERENCE_SIDE px: exporting the
# network and opening the session costs EXPORT_PASSES of them (the graph's size sets it, not the
# input's), after which every pass runs ONNX_SPEEDUP times faster. The built-in MobileNetV2 on a 2-core
# AMD EPYC, 3 trials each at 224 and 288 px in one loaded session: export 13 to 23 passes, ONNX Runtime
# 3.7 to 6.3x faster. MobileNetV2 is where the export weighs most (little work per pass for its graph);
# bigger networks repay it sooner, so these figures err towards PyTorch for them.
EXPORT_PASSES = 25.0
ONNX_SPEEDUP = 3.5
REFERENCE_SIDE = 224


def onnx_pays(passes: int, input_size: Sequence[int]) -> bool:
    """Whether exporting to ONNX Runtime repays itself over `passes` inputs of `input_size` (H, W): the
    eager time it saves is more than the export costs. Pixels count, not images: the demo's 240 inputs
    at 288 px repay it (22 would), as do 36 at 224 px; at 64 px (the tests' tiny networks) it takes 429.
    """
    work = passes * input_size[0] * input_size[1] / REFERENCE_SIDE**2  # in passes at REFERENCE_SIDE px
    return work * (1 - 1 / ONNX_SPEEDUP) > EXPORT_PASSES


def import_onnxruntime() -> ModuleType:
    """The onnxruntime module, or ExtraMissingError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise ExtraMissingError("onnxruntime", "export") from None
    return onnxruntime


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-thread siblings count once)."""
    cpus = usable_cpus()
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package, core = (topology / "physical_package_id").read_text(), (topology / "core_id").read_text()
            cores.add((package.strip(), core.strip()))
        except OSError:  # no sysfs (macOS, some containers): count logical CPUs
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


# CPU flags whose int8 dot products add in 32 bits (VNNI; AMX implies it).
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def int8_saturates() -> bool:
    """Whether ONNX Runtime's uint8 x int8 convolutions can overflow on this CPU: x86 without VNNI (AVX2,
    AVX-512 without VNNI) adds pairs of products in 16 bits, which 8-bit weights overflow (ONNX Runtime's
    advice: 7-bit weights, its `reduce_range`). Other CPUs add in 32 bits. An x86 CPU whose flags cannot be
    read counts as saturating: 7-bit weights run correctly everywhere, 8-bit ones do not."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = cpu_flags()
    return flags is None or not _VNNI_FLAGS & flags


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


@dataclass(frozen=True)
class Sessions:
    """One model opened in ONNX Runtime for `run_session`: `calls` has one intra-op thread, and passes
    keep one call of it in flight per physical core; `lone`, where asked for, has a thread per core and
    runs a pass of a single row (a lone request to a server), which one thread would answer later."""

    calls: Any
    lone: Any = None

    def inputs(self) -> Any:
        return self.calls.get_inputs()

    def outputs(self) -> Any:
        return self.calls.get_outputs()


def open_sessions(model: bytes | str | Path, *, lone: bool = False) -> Sessions:
    """`Sessions` of `model`; `lone` opens it a second time for single rows (only worth it on more than one
    core, and where single rows are common: a server)."""
    calls = create_session(model, threads=1)
    return Sessions(calls, create_session(model) if lone and physical_cores() > 1 else None)


def run_session(sessions: Sessions, name: str, x: np.ndarray, *, outputs: list[str] | None = None) -> list[np.ndarray]:
    """The outputs (all, or those named) for input `name` = x, run ENGINE_BATCH rows per call (rows are
    independent) with one call in flight per physical core, each concatenated back in row order. A single
    row runs on the `lone` session where there is one."""
    if len(x) == 1 and sessions.lone is not None:
        return [np.asarray(p) for p in sessions.lone.run(outputs, {name: x})]
    parts = by_row_chunks(lambda chunk: sessions.calls.run(outputs, {name: chunk}), x, ENGINE_BATCH, pool=_calls())
    return [np.asarray(p) for p in parts]


@functools.cache
def _calls() -> ThreadPoolExecutor:
    """The threads session calls run on, one per physical core, shared by every session of the process
    (sessions are thread-safe; a call never waits for another call, so sharing cannot deadlock)."""
    return ThreadPoolExecutor(max_workers=physical_cores(), thread_name_prefix="tlearn-onnx")


# A forked child (a DataLoader worker) has the pool but not its threads: it makes its own on first use.
os.register_at_fork(after_in_child=_calls.cache_clear)


def to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path | None = None,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    opset: int = OPSET,
) -> bytes | None:
    """Trace `module` (put in eval mode) on `example` into ONNX; the first axis of every input and output is dynamic.

    Writes `path` and returns None, or returns the serialized model when `path` is None. Uses the
    classic TorchScript-based exporter (`dynamo=False`): it handles every timm model tlearn builds.
    """
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
    except ImportError:
        raise ExtraMissingError("onnx", "export") from None
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    target: Any = io.BytesIO() if path is None else str(path)  # torch's hints omit file objects; they work
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen on purpose
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            target,
            dynamo=False,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic,
        )
    return target.getvalue() if isinstance(target, io.BytesIO) else None


# Exported models kept in the cache folder, the most recently used: a bundle's (tlearn predict, serve) and a
# feature network's at one input size (extraction) are 9 to 14 MB each for MobileNetV2.
CACHED_MODELS = 8
log = logging.getLogger(__name__)


def cached_model(key: dict[str, Any], make: Callable[[], bytes]) -> bytes:
    """`make()`'s serialized ONNX model, kept in the cache folder under `key` (what the model was made
    from) and the exporting code (versions of torch, onnx and timm, and tlearn's own source), so that a
    later process reads it instead of exporting again: 2.6 s for the demo's bundle on a 2-core AMD EPYC,
    against a few ms. The file's name carries its content's digest: a damaged file is exported anew, never
    run. A cache that cannot be read or written costs the export, nothing else."""
    folder = cache_root() / "onnx"
    name = digest({"model": key, "exporter": _exporter()})
    try:
        for kept in folder.glob(f"{name}.*.onnx"):
            model = kept.read_bytes()
            if kept.name == _file_name(name, model):
                _used_now(kept)
                return model
            kept.unlink(missing_ok=True)  # damaged: its bytes are not the ones written
    except OSError:
        pass
    model = make()
    path = folder / _file_name(name, model)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(model)
        _used_now(path)
        for old in sorted(folder.glob("*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)[CACHED_MODELS:]:
            old.unlink(missing_ok=True)
    except OSError as err:
        log.warning("Cannot keep the exported model in %s: %s", folder, err)
    return model


def _file_name(name: str, model: bytes) -> str:
    return f"{name}.{hashlib.sha256(model).hexdigest()[:16]}.onnx"


def _used_now(path: Path) -> None:
    """Mark a kept model as used now, the last to be pruned: from a clock finer than the file system's own
    (a few ms), so two models used one after the other are kept in that order."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


@functools.cache
def _exporter() -> dict[str, str]:
    """What else decides an exported model: the versions of the libraries and of tlearn's own code."""
    versions = {name: _version(name) for name in ("torch", "onnx", "timm")}
    code = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        code.update(source.relative_to(package).as_posix().encode())
        code.update(source.read_bytes())
    return {**versions, "opset": str(OPSET), "tlearn": code.hexdigest()}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"
