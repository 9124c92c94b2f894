"""Prediction speed of a bundle: the engine alone, end to end, and the plain way, in one process.

- engine alone: the bundle's ONNX Runtime session on model inputs decoded beforehand (same size,
  same mirror), batch after batch: the ceiling this machine sets.
- end to end: `predict_proba` on the files (decoding, cropping, batching, the network).
  The two run in turn SHARE_ROUNDS times and each keeps its best: the share is their ratio (a single
  round of each once gave 104%, the machine faster during end to end than during the engine's 3 s).
- the plain way: a DataLoader with one worker per core that opens each file with Pillow and runs
  torchvision's Resize / CenterCrop / ToTensor, and the bundle's own network in eager PyTorch, one
  batch at a time: the same network at the same settings, so the same accuracy.
- reduced-scale JPEG decoding: flowers17's photos are 500 px on the short side, below twice any working
  size, so they never use it; the test photos enlarged 2x (as a camera's larger photo would be) are
  predicted with and without it, and the accuracy and pixels compared.

    python -m benchmarks.predict_speed BUNDLE [--data ../shared/datasets/flowers17] [--int8-against-float ROUNDS]

The ONNX engine is the one `--engine onnx` uses: int8 where `tlearn export BUNDLE --int8 auto` chose it
(`precision` in the output). `--int8-against-float 3` instead runs, on every third of the 1,000 files,
the int8 model, the float one and the plain way end to end in turn, three times, the fastest of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

ROOT = Path(__file__).resolve().parents[1]
FLOWERS = ROOT.parent / "shared" / "datasets" / "flowers17"
SHARE_ROUNDS = 3  # the engine alone and end to end, in turn; each keeps its best
ENGINE_REPEATS = 768  # images per engine timing: seconds of it, as end to end takes, not a lucky second


class _Photos(torch.utils.data.Dataset[torch.Tensor]):
    def __init__(self, paths: Sequence[Path], transform: Any) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def test_files(bundle: Path, data: Path) -> list[Path]:
    """The bundle's test images, from its predictions.csv."""
    with (bundle / "predictions.csv").open(encoding="utf-8") as fh:
        return [data / r["path"] for r in csv.DictReader(fh) if r["split"] == "test"]


def accuracy(classes: Sequence[str], proba: np.ndarray, files: Sequence[Path], among: Sequence[Path] = ()) -> float:
    """Share of files (those in `among`, if given) whose folder name is the most probable class."""
    keep = {str(f) for f in among}
    hits = [classes[int(i)] == f.parent.name for i, f in zip(proba.argmax(1), files, strict=True)
            if not keep or str(f) in keep]  # fmt: skip
    return float(np.mean(hits))


def engine_alone(predictor: Any, files: Sequence[Path], batch_size: int) -> float:
    """Images per second of the engine on inputs decoded beforehand (128 inputs, cycled)."""
    x = np.stack([predictor.prepare_input(f) for f in files[:128]])
    predictor.proba_of_batch(x[:batch_size])  # warm-up
    done, start = 0, time.perf_counter()
    while done < ENGINE_REPEATS:
        for s in range(0, len(x), batch_size):
            predictor.proba_of_batch(x[s : s + batch_size])
            done += len(x[s : s + batch_size])
    return done / (time.perf_counter() - start)


def end_to_end(predictor: Any, files: Sequence[Path], batch_size: int) -> tuple[float, np.ndarray]:
    """Seconds for `predict_proba` on the files, and the probabilities."""
    predictor.predict_proba(list(files[:batch_size]), batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    proba = predictor.predict_proba(list(files), batch_size=batch_size)
    return time.perf_counter() - start, proba


def plain_network(bundle: Path) -> tuple[Any, torch.nn.Module, list[str]]:
    """The plain way's transform (torchvision's Resize / CenterCrop / ToTensor at the bundle's settings), the
    bundle's network in eager PyTorch (with its mirror averaging), and its classes."""
    from tlearn.infer.load import load

    torch_predictor = load(bundle, engine="torch")
    prep = torch_predictor.config.preprocessing
    tf = transforms.Compose(
        [transforms.Resize(prep.resize_short_side), transforms.CenterCrop(list(prep.input_size)), transforms.ToTensor()]
    )
    return tf, torch_predictor.classifier.eval(), list(torch_predictor.classes)  # type: ignore[attr-defined]


def plain_way(bundle: Path, files: Sequence[Path], *, batch_size: int = 16) -> tuple[float, np.ndarray]:
    """Seconds and probabilities of the plain way (see the module's docstring)."""
    tf, model, _ = plain_network(bundle)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    loader = torch.utils.data.DataLoader(_Photos(files, tf), batch_size=batch_size, num_workers=workers)
    out, start = [], time.perf_counter()
    with torch.no_grad():
        for x in loader:
            out.append(model(x).softmax(1).numpy())
    return time.perf_counter() - start, np.concatenate(out)


def reduced_scale_check(predictor: Any, files: Sequence[Path]) -> dict[str, float]:
    """Accuracy on the files enlarged 2x, decoded at half scale (the default) and in full; pixel differences."""
    import tlearn.data.eval_pixels as eval_pixels_module
    from tlearn.data.images import open_image

    with tempfile.TemporaryDirectory() as tmp:
        big = []
        for i, f in enumerate(files):
            img = Image.open(f).convert("RGB")
            dest = Path(tmp) / f.parent.name / f"{i:04d}.jpg"
            dest.parent.mkdir(exist_ok=True)
            img.resize((img.width * 2, img.height * 2), Image.Resampling.LANCZOS).save(dest, quality=92)
            big.append(dest)
        reduced = predictor.predict_proba(big)
        reduced_px = [predictor.input_pixels(f).astype(int) for f in big[:64]]
        original = eval_pixels_module.open_image

        def full(source: Any, *, max_pixels: int, at_least: int | None = None) -> Image.Image:
            return open_image(source, max_pixels=max_pixels)

        eval_pixels_module.open_image = full  # type: ignore[assignment]
        try:
            whole = predictor.predict_proba(big)
            whole_px = [predictor.input_pixels(f).astype(int) for f in big[:64]]
        finally:
            eval_pixels_module.open_image = original
    diff = np.stack([np.abs(a - b) for a, b in zip(reduced_px, whole_px, strict=True)])
    return {
        "reduced_acc": accuracy(predictor.classes, reduced, big),
        "full_acc": accuracy(predictor.classes, whole, big),
        "agree": float((reduced.argmax(1) == whole.argmax(1)).mean()),
        "pixel_mean_diff": float(diff.mean()),
        "pixel_p99_diff": float(np.percentile(diff, 99)),
    }


def int8_against_float(
    bundle: Path, files: Sequence[Path], tests: Sequence[Path], *, batch_size: int, rounds: int = 3
) -> dict[str, Any]:
    """Where the bundle's export chose int8: `predict_proba` end to end with the int8 and with the float
    ONNX model, and the plain way, the three in turn on the same files, `rounds` times, the fastest of
    each (img/s): on a machine shared with other work the load changes over minutes, and in turn the
    three see the same. Accuracies on the test images among the files."""
    from tlearn.infer.load import load
    from tlearn.infer.onnx_predictor import BUNDLE_ONNX, OnnxPredictor

    int8 = load(bundle, engine="onnx")
    if getattr(int8, "precision", "float32") != "int8":
        raise SystemExit(f"{bundle}: its export did not choose int8 (tlearn export {bundle} --int8 auto)")
    runs = {
        "int8": lambda: end_to_end(int8, files, batch_size),
        "float": lambda: end_to_end(OnnxPredictor(bundle / BUNDLE_ONNX, int8.config), files, batch_size),
        "plain": lambda: plain_way(bundle, files),
    }
    best, proba = dict.fromkeys(runs, float("inf")), {}
    for _ in range(rounds):
        for name, run in runs.items():
            seconds, proba[name] = run()
            best[name] = min(best[name], seconds)
    out: dict[str, Any] = {"images": len(files), "rounds": rounds}
    for name in runs:
        out[f"{name}_ips"] = len(files) / best[name]
        out[f"{name}_acc"] = accuracy(int8.classes, proba[name], files, among=tests)
    out["int8_over_float"] = best["float"] / best["int8"]
    out["int8_over_plain"] = best["plain"] / best["int8"]
    out["int8_agreement"] = float((proba["int8"].argmax(1) == proba["float"].argmax(1)).mean())
    return out


def measure(bundle: Path, files: Sequence[Path], tests: Sequence[Path], *, batch_size: int) -> dict[str, Any]:
    """Every figure for one bundle, in one process: throughputs (img/s), the share, the ratio, accuracies."""
    from tlearn.infer.load import load

    predictor = load(bundle, engine="onnx")
    engines, ends = [], []
    for _ in range(SHARE_ROUNDS):  # in turn, the best of each: the share is not one side's slow minute
        engines.append(engine_alone(predictor, files, batch_size))
        ends.append(end_to_end(predictor, files, batch_size))
    engine = max(engines)
    e2e_s, ours = min(ends, key=lambda e: e[0])
    plain_s, plain = plain_way(bundle, files)
    prep = predictor.config.preprocessing
    return {
        "images": len(files),
        "size": list(prep.input_size),
        "mirror": predictor.config.flip_tta,
        "batch_size": batch_size,
        "precision": getattr(predictor, "precision", "float32"),
        "engine_ips": engine,
        "e2e_ips": len(files) / e2e_s,
        "plain_ips": len(files) / plain_s,
        "e2e_s": e2e_s,
        "plain_s": plain_s,
        "share": len(files) / e2e_s / engine,
        "rounds": {"engine_ips": engines, "e2e_s": [e[0] for e in ends]},
        "ratio": plain_s / e2e_s,
        "acc": accuracy(predictor.classes, ours, files, among=tests),  # the test images among the files
        "plain_acc": accuracy(predictor.classes, plain, files, among=tests),
        "test_images": len({str(f) for f in tests} & {str(f) for f in files}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reduced-scale", action="store_true", help="also check reduced-scale JPEG decoding")
    parser.add_argument(
        "--int8-against-float",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="instead: int8, float and the plain way in turn on every third file, ROUNDS times",
    )
    args = parser.parse_args()
    files = sorted(args.data.glob("*/*.jpg"))[:1000]
    tests = test_files(args.bundle, args.data)
    if args.int8_against_float:
        compared = int8_against_float(args.bundle, files[::3], tests, batch_size=args.batch_size,
                                      rounds=args.int8_against_float)  # fmt: skip
        print(json.dumps(compared, indent=1))
        return
    result = measure(args.bundle, files, tests, batch_size=args.batch_size)
    if args.reduced_scale:
        from tlearn.infer.load import load

        result["reduced_scale"] = reduced_scale_check(load(args.bundle, engine="onnx"), tests)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
