"""Pooled features of a frozen network, computed once per image and kept on disk.

The frozen part of the network gives the same output for the same pixels every time, so running it
once per image (and once per augmented view) and caching the result is what makes the feature
method, the warm-up phase and `auto` cheap. Entries are keyed by the image's content hash and the
view, inside a namespace that names the network, its weights, its preprocessing and the precision:
a second run with another head costs seconds, and a different network never reads stale features.
Progress is written every few hundred images, so Ctrl-C loses at most one chunk.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.cache import cache_root, digest
from tlearn.core.errors import ExtraMissingError
from tlearn.core.files import atomic_path
from tlearn.core.onnx import cached_model, onnx_pays, open_sessions, run_session, to_onnx
from tlearn.core.progress import Progress, no_progress
from tlearn.core.threads import cpu_workers, prefetched

log = logging.getLogger(__name__)

FEATURE_FORMAT = 1
FLUSH_EVERY = 256  # images between writes to the cache
COMPACT_ABOVE = 16  # chunk files before they are merged into one


class FeatureCache:
    """Feature vectors by key, in chunk files under `root/features/<namespace digest>/`."""

    def __init__(self, namespace: dict[str, Any], root: Path | None = None) -> None:
        self.namespace = {"format": FEATURE_FORMAT, **namespace}
        self.dir = (root or cache_root()) / "features" / digest(self.namespace)
        self._rows: dict[str, np.ndarray] | None = None

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions of the keys that are not cached yet."""
        rows = self._load()
        return [i for i, k in enumerate(keys) if k not in rows]

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._load()
        return {k: rows[k] for k in keys if k in rows}

    def add(self, keys: Sequence[str], feats: np.ndarray) -> None:
        """Write one chunk (atomically) and remember its rows. Only rank 0 writes; other ranks remember."""
        if not len(keys):
            return
        if not distributed.is_main():
            self._load().update(zip(keys, feats.astype(np.float32), strict=True))
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "namespace.json"
        if not meta.exists():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(self.namespace, indent=1, default=str))
        with atomic_path(self.dir / f"chunk-{uuid.uuid4().hex[:12]}.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, keys=np.array(keys), feats=feats.astype(np.float32))
        rows = self._load()
        rows.update(zip(keys, feats.astype(np.float32), strict=True))

    def _load(self) -> dict[str, np.ndarray]:
        if self._rows is None:
            self._rows = {}
            chunks = sorted(self.dir.glob("chunk-*.npz")) if self.dir.is_dir() else []
            for chunk in chunks:
                try:
                    with np.load(chunk) as data:
                        self._rows.update(zip(data["keys"].tolist(), data["feats"], strict=True))
                except (OSError, ValueError, KeyError):
                    log.warning("Skipping an unreadable feature cache file: %s", chunk)
            if len(chunks) > COMPACT_ABOVE and distributed.is_main():
                self._compact(chunks)
        return self._rows

    def _compact(self, chunks: list[Path]) -> None:
        assert self._rows is not None
        keys = list(self._rows)
        with atomic_path(self.dir / f"chunk-{uuid.uuid4().hex[:12]}.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, keys=np.array(keys), feats=np.stack([self._rows[k] for k in keys]))
        for c in chunks:
            c.unlink(missing_ok=True)


def extract_features(
    embed: nn.Module,
    inputs: Sequence[Callable[[], torch.Tensor]],
    *,
    keys: Sequence[str] | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    progress: Progress = no_progress,
    stage: str = "features",
    engine: str = "auto",
    workers: int | None = None,
    network: dict[str, Any] | None = None,
) -> np.ndarray:
    """Run `embed` (float [0, 1] NCHW -> (N, D)) on every input, reusing cached rows.

    `inputs[i]()` returns image i as a (3, H, W) float tensor (clean or an augmented view); only the
    inputs whose key is not cached are computed. Returns (len(inputs), D) float32 in input order.
    `engine`: "torch", "onnx", or "auto" (ONNX Runtime when it is installed and the inputs to compute
    repay exporting the network, see `onnx_pays`; on a GPU, always PyTorch). `workers`: processes making the
    inputs (see `input_batches`); 0 makes them here, for inputs that cost little beside the network.
    `network`: what identifies `embed` (a feature namespace), under which its exported ONNX model is kept
    in the cache folder for the next extraction of any process (`core.onnx.cached_model`); None exports it.

    Under torchrun the rows missing on any rank are split between the ranks, gathered back in order
    every FLUSH_EVERY rows per rank, and rank 0 writes them to the cache: every rank returns them all.
    """
    n = len(inputs)
    found = cache.lookup(keys) if cache is not None and keys is not None else {}
    todo = distributed.union([i for i in range(n) if keys is None or keys[i] not in found])
    out: dict[int, np.ndarray] = {i: found[keys[i]] for i in range(n) if keys is not None and keys[i] in found}
    cached = n - len(todo)
    progress(stage, cached, n)
    share = distributed.shard(todo)
    dev = distributed.device()
    embed.eval()
    runner = Runner(embed, engine if dev.type == "cpu" else "torch", passes=len(share), network=network)
    pending: list[np.ndarray] = []
    start = computed = 0  # share rows gathered so far / computed here

    def flush() -> None:
        nonlocal pending, start
        rows = distributed.gather_rows(np.concatenate(pending), share, start)
        positions = [todo[k] for k in range(start * share.size, start * share.size + len(rows))]
        out.update(zip(positions, rows, strict=True))
        if cache is not None and keys is not None:
            fresh = [j for j, i in enumerate(positions) if keys[i] not in found]
            cache.add([keys[positions[j]] for j in fresh], rows[fresh])
        start += sum(len(p) for p in pending)
        pending = []

    with distributed.moved(embed, dev):
        for x in input_batches([inputs[i] for i in share.items], batch_size, workers=workers):
            pending.append(runner(x))
            computed += len(x)
            progress(stage, min(n, cached + computed * share.size), n)
            if sum(len(p) for p in pending) >= FLUSH_EVERY:
                flush()
        if pending:
            flush()
    if not n:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([out[i] for i in range(n)]).astype(np.float32)


class Runner:
    """One batch in, features out: eager PyTorch, or the same network exported to ONNX Runtime.

    ONNX Runtime runs these networks in fp32 three to six times faster than eager PyTorch on a
    laptop CPU, with the same features (to about 1e-5), so the cache does not care which one ran.
    "auto" with `passes` (the inputs this runner will see) exports only where `onnx_pays`, judged on
    the first batch's size. Export problems fall back to PyTorch with a note in the log.
    """

    def __init__(
        self,
        embed: nn.Module,
        engine: str = "auto",
        *,
        passes: int | None = None,
        network: dict[str, Any] | None = None,
    ) -> None:
        self.embed = embed
        self.network = network
        self.engine = engine
        self.passes = passes
        self.session: Any = None
        self.tried = engine == "torch"

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if not self.tried:
            self.tried = True
            pays = self.engine != "auto" or self.passes is None or onnx_pays(self.passes, x.shape[-2:])
            self.session = self._session(x[:1]) if pays else None
        if self.session is None:
            return run_embed(self.embed, x)
        return run_session(self.session, "input", x.numpy())[0].astype(np.float32, copy=False)

    def _session(self, example: torch.Tensor) -> Any:
        try:
            if self.network is None:
                return open_sessions(self._export(example))
            key = {**self.network, "input": list(example.shape[1:])}
            return open_sessions(cached_model(key, partial(self._export, example)))
        except ExtraMissingError:
            if self.engine == "onnx":
                raise
        except Exception as err:
            if self.engine == "onnx":
                raise
            log.info("Running features in PyTorch: exporting to ONNX failed (%s).", err)
        return None

    def _export(self, example: torch.Tensor) -> bytes:
        model = to_onnx(self.embed, example)
        assert model is not None
        return model


def run_embed(embed: nn.Module, x: torch.Tensor) -> np.ndarray:
    """One batch through the network in inference mode, channels-last (faster convolutions on CPU)."""
    x = x.to(distributed.module_device(embed), non_blocking=True)
    with torch.inference_mode():
        return embed(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()


class _Made(torch.utils.data.Dataset[torch.Tensor]):
    def __init__(self, inputs: Sequence[Callable[[], torch.Tensor]]) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.inputs[i]()


def input_batches(
    inputs: Sequence[Callable[[], torch.Tensor]], batch_size: int, *, workers: int | None = None
) -> Iterator[torch.Tensor]:
    """Stacked batches of `inputs[i]()`, made in worker processes while the model runs.

    Transforms are many small tensor operations: on the main process they fight the model for the
    same threads (and are several times slower for it); a worker process with one thread each makes
    them at full speed and overlaps them with the model's work. `workers` 0, for inputs that cost
    little (crops of decoded pixels): made on one thread of this process, a batch or two ahead of the
    model, so that the cores do not wait for them between passes.
    """
    workers = input_workers() if workers is None else workers
    if workers == 0 or len(inputs) <= batch_size:

        def batch(start: int) -> torch.Tensor:
            return torch.stack([make() for make in inputs[start : start + batch_size]])

        yield from prefetched(batch, range(0, len(inputs), batch_size), ahead=2, workers=1)
        return
    loader = torch.utils.data.DataLoader(
        _Made(inputs), batch_size=batch_size, num_workers=workers, collate_fn=torch.stack, prefetch_factor=4
    )
    yield from loader


def input_workers() -> int:
    """Worker processes for making inputs: TLEARN_WORKERS, else the cores available (at most 4)."""
    env = os.environ.get("TLEARN_WORKERS")
    if env is not None:
        return max(0, int(env))
    return cpu_workers(4)
