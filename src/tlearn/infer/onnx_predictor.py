"""Run a model with ONNX Runtime: `OnnxPredictor` has the interface of the PyTorch `Predictor`.

Decoding, batching, TTA and top-k are the shared ones of `BasePredictor`; only the network runs in
ONNX Runtime, usually faster on a CPU than eager PyTorch. The model is opened once and reused for every
call (sessions are thread-safe) as `core.onnx.Sessions`: one thread per call, one call in flight per
physical core (hyper-threads of a busy core add nothing but contention); `lone` adds a session on every
core for a pass of a single row, which a server meets whenever one request comes alone.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from tlearn.artifacts.bundle import BundleConfig
from tlearn.core.onnx import open_sessions, run_session
from tlearn.infer.onnx_graph import SCORE_NAME
from tlearn.infer.predictor import BasePredictor

log = logging.getLogger(__name__)

BUNDLE_ONNX = "model.onnx"  # what `tlearn export` writes into a bundle by default, and --engine onnx reuses


class OnnxPredictor(BasePredictor):
    """The ONNX Runtime engine. `model` is a serialized ONNX model or its file; `config` the bundle's config.

    `precision` says what the model computes in ("float32", or "int8" for a quantized export) and
    `precision_reason` why it was chosen (the export's measurement), for the summaries to show.
    """

    engine = "onnx"

    def __init__(
        self,
        model: bytes | str | Path,
        config: BundleConfig,
        *,
        source: str = "",
        lone: bool = False,
        precision: str = "float32",
        precision_reason: str | None = None,
    ) -> None:
        super().__init__(config, source=source)
        self.precision = precision
        self.precision_reason = precision_reason
        self.sessions = open_sessions(model, lone=lone)
        first = self.sessions.inputs()[0]
        self.input_name: str = first.name
        self.input_uint8 = first.type == "tensor(uint8)"
        names = [o.name for o in self.sessions.outputs()]
        # The unknown score only when both the graph and the bundle's rule have it (an older export: neither).
        scored = SCORE_NAME in names and config.unknown is not None
        self._outputs = [names[0], SCORE_NAME] if scored else [names[0]]
        if not scored and config.unknown is not None:
            self.config = replace(config, unknown=None)

    def answer_of_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.input_uint8:
            feed = np.rint(x * 255).astype(np.uint8)  # exact: the eval transform gives multiples of 1/255
        else:
            feed = np.ascontiguousarray(x, dtype=np.float32)
        out = run_session(self.sessions, self.input_name, feed, outputs=self._outputs)
        return out[0], out[1] if len(out) > 1 else None
