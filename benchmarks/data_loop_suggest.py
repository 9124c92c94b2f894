"""What to label next, simulated on flowers17: tlearn's ranking against random choice and uncertainty alone.

    flock /tmp/tlearn-heavy.lock python -m benchmarks.data_loop --part suggest [--seeds 0,1,2]
    (alone: python -m benchmarks.data_loop_suggest [--suggest-rounds 5] [--suggest-per-round 17])

The built-in MobileNetV2 gives every image its features once, as `tlearn train --method features`
computes them (1.25x input, the mirror image a second view; cached, so a rerun costs seconds). Per
seed: a duplicate-aware stratified split keeps 30% of each class as the test; of the rest, 3 images
per class start labelled and the others are the unlabelled pool. Each round fits the feature method's
head (logistic regression, C by cross-validation) on the labelled images, ranks the pool with
`rank_for_labelling` (strategies diverse = tlearn's, uncertainty, random), "labels" the first
`--suggest-per-round` (their true class is revealed) and refits. Test accuracy after each round, mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "data_loop.json"
STRATEGIES = ("diverse", "uncertainty", "random")
BACKBONE = "mobilenetv2_100.tf_in1k"  # the built-in one: no download, no weights file


@dataclass(frozen=True)
class Features:
    """Features of every flowers17 image (and of its mirror image), labels and the copies-aware groups."""

    clean: np.ndarray  # (N, D)
    mirror: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,)
    groups: list[int]  # copies of one photo share an id
    classes: tuple[str, ...]
    paths: tuple[Path, ...]


def flowers_features(data: Path) -> Features:
    from tlearn.data.checks import check_dataset, group_ids
    from tlearn.data.scan import scan_images
    from tlearn.data.sources import load_dataset
    from tlearn.data.split import stratified_split
    from tlearn.models.backbones import create_backbone
    from tlearn.training.config import TrainConfig
    from tlearn.training.feature_method import compute_features, feature_trunk, for_features
    from tlearn.training.run import _labelled

    cfg = TrainConfig(data=data, method="features", backbone=BACKBONE, val_frac=0.0, test_frac=0.3)
    dataset = load_dataset(data)
    backbone = for_features(create_backbone(BACKBONE), cfg)
    prep = backbone.preprocessing
    scanned = scan_images(dataset.samples, short_side=prep.working_short_side, resample=prep.resample)
    report = check_dataset(dataset, scanned)
    groups = group_ids(len(scanned), report.duplicates)
    split = stratified_split([s.label for s in scanned.samples], val_frac=0.0, test_frac=0.3, seed=0, groups=groups)
    labelled = _labelled(scanned, report, split)
    shell = feature_trunk(backbone, cfg.feature_layer)
    feats = compute_features(shell, backbone, labelled, views=0, mirror=True, cfg=cfg)
    assert feats.mirror is not None
    return Features(
        feats.clean, feats.mirror, labelled.labels, groups, labelled.classes, tuple(s.path for s in scanned.samples)
    )


def test_split(f: Features, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training-split indices, test indices): 30% of each class is the test, copies kept in one part."""
    from tlearn.data.split import stratified_split

    names = [f.classes[y] for y in f.labels]
    split = stratified_split(names, val_frac=0.0, test_frac=0.3, seed=seed, groups=f.groups)
    return np.sort(split.train), np.sort(split.test)


def per_class(train: np.ndarray, labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k images of each class drawn from `train`."""
    return np.sort(np.concatenate([rng.choice(train[labels[train] == c], k, replace=False) for c in np.unique(labels)]))


class Head:
    """The feature method's head on cached features: logistic regression on clean and mirror rows,
    C by cross-validation, predictions by the mirror rule."""

    def __init__(self, f: Features, idx: np.ndarray, seed: int) -> None:
        from tlearn.training.linear import fit_linear

        x = np.concatenate([f.clean[idx], f.mirror[idx]])
        y = np.concatenate([f.labels[idx]] * 2)
        owners = np.concatenate([idx, idx])
        self.fit = fit_linear(x, y, num_classes=len(f.classes), groups=owners, seed=seed)
        self.f = f

    def proba(self, idx: np.ndarray) -> np.ndarray:
        from tlearn.models.tta import mirror_logits

        z = mirror_logits(self.fit.logits(self.f.clean[idx]), self.fit.logits(self.f.mirror[idx]))
        return np.asarray(softmax(z, axis=1))

    def accuracy(self, idx: np.ndarray) -> float:
        return float((self.proba(idx).argmax(1) == self.f.labels[idx]).mean())


def simulate(f: Features, seed: int, strategy: str, *, start: int, rounds: int, per_round: int) -> list[float]:
    """Test accuracy after 0..rounds rounds of labelling `per_round` suggestions."""
    from tlearn.training.ranking import rank_for_labelling

    train, test = test_split(f, seed)
    labelled = per_class(train, f.labels, start, np.random.default_rng(seed))
    accuracy = []
    for r in range(rounds + 1):
        head = Head(f, labelled, seed)
        accuracy.append(head.accuracy(test))
        if r == rounds:
            break
        pool = np.setdiff1d(train, labelled)
        feats = (f.clean[pool] + f.mirror[pool]) / 2  # what `tlearn suggest` reads from a mirror-TTA bundle
        order, _ = rank_for_labelling(head.proba(pool), feats, per_round, strategy=strategy, seed=seed * 100 + r)  # type: ignore[arg-type]
        labelled = np.sort(np.concatenate([labelled, pool[order[:per_round]]]))
    return accuracy


def run(args: argparse.Namespace) -> dict[str, Any]:
    """This part of `benchmarks/data_loop.py`: the JSON under its "suggest" key."""
    start_time = time.perf_counter()
    f = flowers_features(args.data)
    feature_seconds = time.perf_counter() - start_time
    seeds = [int(s) for s in args.seeds.split(",")]
    curves: dict[str, dict[int, list[float]]] = {s: {} for s in STRATEGIES}
    for seed in seeds:
        for strategy in STRATEGIES:
            curves[strategy][seed] = simulate(
                f,
                seed,
                strategy,
                start=args.suggest_start,
                rounds=args.suggest_rounds,
                per_round=args.suggest_per_round,
            )
            print(f"seed {seed} {strategy:<12}", " ".join(f"{a:.1%}" for a in curves[strategy][seed]), flush=True)
    mean = {s: np.mean([curves[s][k] for k in seeds], axis=0).tolist() for s in STRATEGIES}
    rounds, per_round, start = args.suggest_rounds, args.suggest_per_round, args.suggest_start
    above = [mean["diverse"][r] > mean["random"][r] for r in range(1, rounds + 1)]
    return {
        "data": "flowers17",
        "backbone": "built-in MobileNetV2 (mobilenetv2_100.tf_in1k), feature method, mirror view",
        "seeds": seeds,
        "start_per_class": start,
        "rounds": rounds,
        "per_round": per_round,
        "test": "30% of each class, duplicate-aware stratified split of each seed",
        "labelled_after_round": [start * len(f.classes) + r * per_round for r in range(rounds + 1)],
        "test_accuracy": {s: {str(k): v for k, v in curves[s].items()} for s in STRATEGIES},
        "mean_test_accuracy": mean,
        "target": "diverse above random after every round, on average over seeds",
        "target_met": all(above),
        "feature_seconds": round(feature_seconds, 1),
        "seconds": round(time.perf_counter() - start_time, 1),
    }


def print_table(res: dict[str, Any]) -> None:
    n = res["labelled_after_round"]
    print(f"\nflowers17, test accuracy (mean of seeds {res['seeds']}) by labelled images")
    print(f"{'strategy':<12}" + "".join(f"{k:>8}" for k in n))
    for s in STRATEGIES:
        print(f"{s:<12}" + "".join(f"{a:>8.1%}" for a in res["mean_test_accuracy"][s]))
    print(f"target (diverse above random every round): {'met' if res['target_met'] else 'MISSED'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This part's options (data_loop.py adds the shared --data and --seeds)."""
    parser.add_argument("--suggest-start", type=int, default=3, help="labelled images per class to start from")
    parser.add_argument("--suggest-rounds", type=int, default=5)
    parser.add_argument("--suggest-per-round", type=int, default=17)


def add_shared(parser: argparse.ArgumentParser) -> None:
    """The options data_loop.py shares between the parts, for running one part alone."""
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "flowers17")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", type=Path, default=RESULTS)


def save(key: str, res: dict[str, Any], path: Path = RESULTS) -> None:
    """Write one part's results under its key, keeping the other parts' in the file."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc[key] = res
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {path} [{key}]")


def run_alone(key: str, description: str, part: Any) -> None:
    """One part of benchmarks/data_loop.py run on its own: its options and the shared ones, its table, its JSON key."""
    parser = argparse.ArgumentParser(description=description)
    add_shared(parser)
    part.add_arguments(parser)
    args = parser.parse_args()
    res = part.run(args)
    part.print_table(res)
    save(key, res, args.json)


def main() -> None:
    run_alone("suggest", __doc__.splitlines()[0], sys.modules[__name__])


if __name__ == "__main__":
    main()
