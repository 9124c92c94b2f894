"""Does `--method auto` notice data far from ImageNet, and does its choice change?

    python -m benchmarks.domains [--data ../shared/datasets/flowers17] [--variants original,edges,tiles]

Builds variants of flowers17 that move it away from the pretraining data while keeping the classes
learnable, then runs `tlearn train --method auto` and the fixed feature method (last layer) on each,
with the split of the other benchmarks (30% test per class, seed 0, 10% validation):

- original: the photos as they are (the similar case);
- edges: line drawings (grayscale edge maps, inverted, contrast stretched): no colour, no texture;
- tiles: each photo cut into a 4x4 grid of tiles shuffled at random: colour and texture survive, the
  shapes of objects that ImageNet's last layers respond to do not.

Prints the measurements (linear probe of the last layer and of the best earlier one), the quadrant,
the decision and the test accuracy of both, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def edges(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    gray = ImageOps.grayscale(img).filter(ImageFilter.GaussianBlur(1))
    lines = ImageOps.autocontrast(gray.filter(ImageFilter.FIND_EDGES), cutoff=1)
    return ImageOps.invert(lines).convert("RGB")


def tiles(img: Image.Image, rng: np.random.Generator, grid: int = 4) -> Image.Image:
    a = np.asarray(img.convert("RGB"))
    h, w = (a.shape[0] // grid) * grid, (a.shape[1] // grid) * grid
    th, tw = h // grid, w // grid
    blocks = [a[r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(grid) for c in range(grid)]
    order = rng.permutation(len(blocks))
    rows = [np.concatenate([blocks[order[r * grid + c]] for c in range(grid)], axis=1) for r in range(grid)]
    return Image.fromarray(np.concatenate(rows, axis=0))


VARIANTS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image] | None] = {
    "original": None,
    "edges": edges,
    "tiles": tiles,
}


def build(source: Path, dest: Path, change: Callable[[Image.Image, np.random.Generator], Image.Image]) -> Path:
    rng = np.random.default_rng(0)
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir()):
            with Image.open(f) as img:
                change(ImageOps.exif_transpose(img).convert("RGB"), rng).save(
                    dest / folder.name / f"{f.stem}.jpg", quality=92
                )
    return dest


def run(data: Path, weights: Path, method: str, out: Path) -> dict[str, Any]:
    from tlearn.training.config import TrainConfig
    from tlearn.training.run import run as train

    cfg = TrainConfig(data=data, out=out, method=method, weights=str(weights), seed=0, val_frac=0.1, test_frac=0.3)
    start = time.perf_counter()
    result = train(cfg)
    row: dict[str, Any] = {"seconds": time.perf_counter() - start, "test_accuracy": result.metrics["test"].accuracy}
    auto = result.details.to_dict().get("auto")
    if auto:
        e, d = auto["evidence"], auto["decision"]
        last = next(p for p in e["probes"] if p["layer"] == "last")
        earlier = max((p for p in e["probes"] if p["layer"] != "last"), key=lambda p: p["accuracy"])
        row.update(
            probe_last=last["accuracy"],
            probe_earlier=earlier["accuracy"],
            earlier_layer=earlier["description"],
            quadrant=f"{d['size']} and {d['domain']}",
            decision=f"{d['method']}, layer {d['feature_layer']}, unfreeze {d['unfreeze']}",
            chosen=auto.get("chosen", d["method"]),
            explanation=auto["explanation"],
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "flowers17")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenetv2_100.tf_in1k.safetensors")
    parser.add_argument("--variants", default="original,edges,tiles")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "domains.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLEARN_CACHE_DIR"] = str(Path(tmp) / "cache")
        for name in args.variants.split(","):
            change = VARIANTS[name]
            data = args.data if change is None else build(args.data, Path(tmp) / name, change)
            auto = run(data, args.weights, "auto", Path(tmp) / f"{name}-auto")
            features = run(data, args.weights, "features", Path(tmp) / f"{name}-features")
            rows.append({"variant": name, "auto": auto, "features_last": features})
            print(f"{name}: {auto['explanation']}", flush=True)

    print()
    head = f"{'variant':<9} {'probe last':>10} {'earlier':>8} {'quadrant':<20} {'decision':<34}"
    print(f"{head} {'auto':>7} {'features':>9}")
    for r in rows:
        a, f = r["auto"], r["features_last"]
        print(
            f"{r['variant']:<9} {a['probe_last']:>10.1%} {a['probe_earlier']:>8.1%} {a['quadrant']:<20} "
            f"{a['decision'] + ' -> ' + a['chosen']:<34} {a['test_accuracy']:>7.1%} {f['test_accuracy']:>9.1%}"
        )
    print("auto: test accuracy of --method auto; features: the feature method on the last layer, same split")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows}, indent=1, default=str))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
