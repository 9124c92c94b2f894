"""Images per second of ONNX Runtime and eager PyTorch at each batch size per call, for the networks tlearn runs.

    flock /tmp/tlearn-heavy.lock python -m benchmarks.engine_batch [--images 96] [--rounds 3]

What `core/onnx.py` ENGINE_BATCH is set from: every ONNX Runtime pass (feature extraction, fine-tuning's
frozen bottom, prediction, the server) runs at most that many rows per call; and `infer/predictor.py`
TORCH_PASS_INPUTS, the most inputs per eager PyTorch pass of the `Predictor`. Networks: the built-in
MobileNetV2 feature trunk at 224 px (prediction of a fine-tuned bundle) and 288 px (the feature
method), and the DINOv2 ViT-S/14 at 224 px with random weights (speed does not depend on them). Each
batch size runs on a session with a thread per physical core, one call at a time ("serial") and one call
in flight per core ("in flight, threads per core"); on a session with one thread, one call in flight
per core ("in flight, one thread each", what `run_session` does); and in eager PyTorch. They run in turn, `--rounds`
times, and each keeps its fastest round, so the machine's load moves all of them alike. Prints a table and writes
benchmarks/results/engine_batch.json.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine
from tlearn.core.onnx import create_session, physical_cores, to_onnx
from tlearn.models.backbones import BUILTIN_NAME, DEFAULT_BACKBONE, create_backbone
from tlearn.models.classifier import FeatureTrunk, Normalize

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 2, 4, 8, 16, 32)


def features_net(name: str, size: int) -> torch.nn.Module:
    """The network's pooled-feature trunk with its normalisation, in eval mode."""
    weights = None if name == BUILTIN_NAME else "none"
    backbone = create_backbone(name, weights=weights, input_size=size, warn_random=False)
    prep = backbone.preprocessing
    return torch.nn.Sequential(Normalize(prep.mean, prep.std), FeatureTrunk(backbone.model, ())).eval()


def speeds(net: torch.nn.Module, size: int, images: int, rounds: int) -> dict[str, dict[int, float]]:
    """The fastest of `rounds` runs over `images` inputs, in img/s, for each batch size and mode (see the
    module's docstring); eager PyTorch as `infer.predictor.Predictor` runs it (channels-last, inference
    mode, one pass at a time)."""
    model = to_onnx(net, torch.rand(1, 3, size, size))
    assert model is not None
    session, narrow = create_session(model), create_session(model, threads=1)
    x = np.random.default_rng(0).random((images, 3, size, size), dtype=np.float32)
    session.run(None, {"input": x[:16]})
    narrow.run(None, {"input": x[:16]})
    pool = ThreadPoolExecutor(max_workers=physical_cores())
    modes = ("serial", "in flight, threads per core", "in flight, one thread each", "eager PyTorch")
    best = {mode: dict.fromkeys(BATCHES, float("inf")) for mode in modes}
    eager = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    for _ in range(rounds):
        for batch in BATCHES:
            chunks = [x[s : s + batch] for s in range(0, images, batch)]
            start = time.perf_counter()
            for chunk in chunks:
                session.run(None, {"input": chunk})
            best["serial"][batch] = min(best["serial"][batch], time.perf_counter() - start)
            start = time.perf_counter()
            list(pool.map(lambda chunk: session.run(None, {"input": chunk}), chunks))
            best[modes[1]][batch] = min(best[modes[1]][batch], time.perf_counter() - start)
            start = time.perf_counter()
            list(pool.map(lambda chunk: narrow.run(None, {"input": chunk}), chunks))
            best[modes[2]][batch] = min(best[modes[2]][batch], time.perf_counter() - start)
            start = time.perf_counter()
            with torch.inference_mode():
                for s in range(0, images, batch):
                    net(eager[s : s + batch])
            best["eager PyTorch"][batch] = min(best["eager PyTorch"][batch], time.perf_counter() - start)
    return {mode: {b: images / t for b, t in times.items()} for mode, times in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "engine_batch.json")
    args = parser.parse_args()
    rows = []
    print(f"| network | size | calls | {' | '.join(f'{b} per call' for b in BATCHES)} |", flush=True)
    for name, label, size, images in (
        (BUILTIN_NAME, "MobileNetV2 (built-in)", 224, args.images),
        (BUILTIN_NAME, "MobileNetV2 (built-in)", 288, args.images),
        (DEFAULT_BACKBONE, "DINOv2 ViT-S/14 (random weights)", 224, BATCHES[-1]),  # ~10 img/s in eager PyTorch
    ):
        ips = speeds(features_net(name, size).to(memory_format=torch.channels_last), size, images, args.rounds)
        rows.append(
            {
                "network": label,
                "size": size,
                "img_per_s": {mode: {str(b): round(v, 1) for b, v in by.items()} for mode, by in ips.items()},
            }
        )
        for mode, by in ips.items():
            cells = " | ".join(f"{by[b]:.0f}" for b in BATCHES)
            print(f"| {label} | {size} px | {mode} | {cells} |", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "batches": list(BATCHES), "rows": rows}, indent=1))
    print(f"{machine()}; wrote {args.json}")


if __name__ == "__main__":
    main()
