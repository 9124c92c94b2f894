"""Photos without labels on flowers17: test accuracy of `tlearn train` with and without `--unlabelled`.

    flock /tmp/tlearn-heavy.lock python -m benchmarks.data_loop --part unlabelled [--seeds 0,1,2]
    (alone: python -m benchmarks.data_loop_unlabelled [--unlabelled-per-class 5,10])

Per seed: the duplicate-aware stratified split of `data_loop_suggest` keeps 30% of each class as the
test. Of the rest (the training split), k images per class are labelled: a fifth of them (1 of 5,
2 of 10) in a val/ folder, the others in train/; every other image of the training split goes, by a
link, into one folder without labels. Both runs read the same folders (the built-in MobileNetV2,
features cached); the only difference is `--unlabelled`. Real `tlearn.training.run.run` calls: the
unlabelled folder goes through the same checks (copies of labelled or test images are left out).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data_loop_suggest import BACKBONE, flowers_features, per_class, run_alone, test_split

NOISE = 0.01  # a gain or loss within a point is within the noise of 3 seeds


def make_folders(f: Any, seed: int, k: int, root: Path) -> Path:
    """root/data/{train,val,test}/<class>/ and root/pool/ of links to the flowers17 files; returns root."""
    train, test = test_split(f, seed)
    labelled = per_class(train, f.labels, k, np.random.default_rng(seed))
    n_val = max(1, round(k / 5))
    val = np.concatenate([labelled[f.labels[labelled] == c][:n_val] for c in range(len(f.classes))])
    parts = {"train": np.setdiff1d(labelled, val), "val": val, "test": test}
    for part, idx in parts.items():
        for i in idx:
            target = root / "data" / part / f.classes[f.labels[i]] / f.paths[i].name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f.paths[i], target)
    (root / "pool").mkdir()
    for i in np.setdiff1d(train, labelled):
        os.symlink(f.paths[i], root / "pool" / f.paths[i].name)
    return root


def one_run(root: Path, seed: int, unlabelled: bool) -> dict[str, Any]:
    from tlearn.training.config import TrainConfig
    from tlearn.training.run import run

    out = root / ("with" if unlabelled else "without")
    cfg = TrainConfig(
        data=root / "data", out=out, method="features", backbone=BACKBONE, seed=seed,
        unlabelled=root / "pool" if unlabelled else None,
    )  # fmt: skip
    start = time.perf_counter()
    result = run(cfg)
    pseudo = result.details.unlabelled
    return {
        "test_accuracy": result.metrics["test"].accuracy,
        "val_accuracy": result.metrics["val"].accuracy,
        "split": result.split_counts,
        "seconds": round(time.perf_counter() - start, 1),
        "fit_seconds": round(result.timings.get("fit", 0.0), 1),
        "unlabelled": None
        if pseudo is None
        else {
            "found": pseudo.found, "excluded": pseudo.excluded, "used": pseudo.used, "rounds": pseudo.rounds,
            "threshold": pseudo.threshold, "val_before": pseudo.val_before, "val_after": pseudo.val_after,
            "class_counts": pseudo.class_counts, "checked": pseudo.checked,
            "right_before": pseudo.right_before, "right_after": pseudo.right_after,
        },
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """This part of `benchmarks/data_loop.py`: the JSON under its "unlabelled" key."""
    started = time.perf_counter()
    f = flowers_features(args.data)  # also fills the feature cache the runs read
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for k in [int(v) for v in args.unlabelled_per_class.split(",")]:
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                root = make_folders(f, seed, k, Path(tmp))
                without, with_ = one_run(root, seed, False), one_run(root, seed, True)
            rows.append({"per_class": k, "seed": seed, "without": without, "with": with_})
            u = with_["unlabelled"]
            print(
                f"{k}/class seed {seed}: without {without['test_accuracy']:.1%}, with {with_['test_accuracy']:.1%} "
                f"({u['used']} of {u['found']} used, {u['excluded']} copies left out, {u['rounds']} rounds; "
                f"fit {with_['fit_seconds']}s)",
                flush=True,
            )
    summary = {}
    for k in sorted({r["per_class"] for r in rows}):
        mine = [r for r in rows if r["per_class"] == k]
        a = np.array([r["without"]["test_accuracy"] for r in mine])
        b = np.array([r["with"]["test_accuracy"] for r in mine])
        summary[str(k)] = {
            "without": float(a.mean()), "with": float(b.mean()), "gain": float((b - a).mean()),
            "gain_per_seed": (b - a).tolist(), "used": float(np.mean([r["with"]["unlabelled"]["used"] for r in mine])),
        }  # fmt: skip
    gain5 = summary.get("5", {}).get("gain")
    return {
        "data": "flowers17",
        "backbone": "built-in MobileNetV2 (mobilenetv2_100.tf_in1k), --method features",
        "seeds": seeds,
        "test": "30% of each class, duplicate-aware stratified split of each seed",
        "labelled": "k per class from the training split, a fifth of them as val/; the rest of the split unlabelled",
        "rows": rows,
        "summary": summary,
        "target": "+2 points at 5 per class, never a loss beyond noise (1 point)",
        "target_met": bool(gain5 is not None and gain5 >= 0.02 and all(s["gain"] >= -NOISE for s in summary.values())),
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_table(res: dict[str, Any]) -> None:
    print(f"\nflowers17, test accuracy (mean of seeds {res['seeds']})")
    print(f"{'labelled/class':<15}{'without':>9}{'with':>9}{'gain':>8}{'used':>7}")
    for k, s in res["summary"].items():
        print(f"{k:<15}{s['without']:>9.1%}{s['with']:>9.1%}{s['gain'] * 100:>+7.1f}p{s['used']:>7.0f}")
    print(f"target (+2 points at 5/class, no loss beyond noise): {'met' if res['target_met'] else 'MISSED'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This part's options (data_loop.py adds the shared --data and --seeds)."""
    parser.add_argument("--unlabelled-per-class", default="5,10", help="labelled images per class, comma-separated")


def main() -> None:
    run_alone("unlabelled", __doc__.splitlines()[0], sys.modules[__name__])


if __name__ == "__main__":
    main()
