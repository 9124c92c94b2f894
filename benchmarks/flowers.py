"""Accuracy and time of tlearn's methods on flowers17 with the shared MobileNetV2 weights.

    python -m benchmarks.flowers [--data ../shared/datasets/flowers17] [--methods features,finetune,auto]

Every method is scored on the same test images: 30% of each class, seed 0 (`--test-frac 0.3
--seed 0`), drawn by tlearn's stratified split, which keeps copies of one photo in one part (flowers17
holds about 70 pairs of near-identical photos; a plain split leaks them between train and test).
The feature method trains on the other 70% (`--val-frac 0`); fine-tuning and auto hold 10% of all
images out of it for validation. Each method runs twice: first with an empty cache (what a new user
waits for), then again (what a rerun with other options costs). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TARGETS = {"features": 0.95, "finetune": 0.965}


def run_method(method: str, data: Path, weights: Path, out: Path, *, seed: int, cache: Path) -> dict[str, Any]:
    from tlearn.training.config import TrainConfig
    from tlearn.training.run import run

    os.environ["TLEARN_CACHE_DIR"] = str(cache)
    val_frac = 0.0 if method == "features" else 0.1
    cfg = TrainConfig(
        data=data, out=out, method=method, weights=str(weights), seed=seed, val_frac=val_frac, test_frac=0.3
    )
    start = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - start
    test = result.metrics["test"]
    return {
        "method": method,
        "chosen": result.method,
        "test_accuracy": test.accuracy,
        "balanced_accuracy": test.balanced_accuracy,
        "macro_f1": test.macro_f1,
        "test_images": test.n,
        "seconds": seconds,
        "stages": result.timings,
        "split": result.split_counts,
        "details": {
            k: v for k, v in result.details.to_dict().items() if k in ("C", "unfrozen", "best_epoch", "summary")
        },
        "auto": result.details.auto.explanation if result.details.auto is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "flowers17")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenetv2_100.tf_in1k.safetensors")
    parser.add_argument("--methods", default="features,finetune,auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "flowers.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            cache = Path(tmp) / f"cache-{method}"
            first = run_method(method, args.data, args.weights, Path(tmp) / method, seed=args.seed, cache=cache)
            again = run_method(method, args.data, args.weights, Path(tmp) / f"{method}-2", seed=args.seed, cache=cache)
            first["rerun_seconds"] = again["seconds"]
            first["rerun_test_accuracy"] = again["test_accuracy"]
            rows.append(first)
            print(
                f"{method}: {first['test_accuracy']:.2%} in {first['seconds']:.0f}s (rerun {again['seconds']:.1f}s)",
                flush=True,
            )

    print()
    n_test = rows[0]["test_images"]
    print(f"flowers17, seed {args.seed}, test = 30% of each class ({n_test} images), duplicate-aware split")
    print(f"{'method':<10} {'chosen':<10} {'test acc':>9} {'bal. acc':>9} {'first run':>10} {'rerun':>8}  target")
    for r in rows:
        target = TARGETS.get(r["method"])
        verdict = "" if target is None else f">= {target:.1%} {'ok' if r['test_accuracy'] >= target else 'MISSED'}"
        print(
            f"{r['method']:<10} {r['chosen']:<10} {r['test_accuracy']:>9.2%} {r['balanced_accuracy']:>9.2%} "
            f"{r['seconds']:>9.1f}s {r['rerun_seconds']:>7.1f}s  {verdict}"
        )
    for r in rows:
        if r["auto"]:
            print(f"\nauto: {r['auto']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=1, default=str))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
