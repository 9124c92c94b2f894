"""Part `labels` of benchmarks/data_loop.py: does tlearn find flipped labels, and does removing them help?

flowers17 with the shared MobileNetV2, features as the feature method computes them (288 px, cached).
Per seed: a stratified, duplicate-aware split (30% test per class, seed s), then 5% of the training
images get another class at random (seed s). tlearn's label check runs on the training images alone
(their noisy labels, out-of-fold probabilities of 5-fold cross-validation) and we count:
- precision and recall of the list it flags (at the size it chooses), precision of its top 20 and top 50;
- the same for cleanlab's `find_label_issues` on the same out-of-fold probabilities, when cleanlab is
  installed in its own environment (`--labels-cleanlab`, default /tmp/cleanlab-venv/bin/python; it is not
  a tlearn dependency; the column is left out without it);
- test accuracy of a logistic regression (C by cross-validation, as the feature method, without the
  mirror view) trained on the noisy labels, on them without the flagged images, and on the true labels.
And the cost: the "labels" stage of `tlearn train --method features` on all 1,360 images, features cached.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLEANLAB = Path("/tmp/cleanlab-venv/bin/python")
CLEANLAB_SCRIPT = """
import json, sys
import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
d = np.load(sys.argv[1])
flagged = find_label_issues(d["labels"], d["proba"], return_indices_ranked_by="self_confidence")
ranking = np.argsort(get_label_quality_scores(d["labels"], d["proba"]), kind="stable")
import cleanlab
print(json.dumps({"flagged": [int(i) for i in flagged], "ranking": [int(i) for i in ranking],
                  "version": cleanlab.__version__}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("part labels")
    group.add_argument("--labels-flip", type=float, default=0.05, help="share of training labels flipped")
    group.add_argument("--labels-cleanlab", type=Path, default=CLEANLAB, help="python of a venv with cleanlab")
    group.add_argument(
        "--labels-cache", type=Path, default=Path(tempfile.gettempdir()) / "tlearn-data-loop-cache",
        help="tlearn cache for this benchmark (features are computed once)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["TLEARN_CACHE_DIR"] = str(args.labels_cache)
    cost = _cost(args.data, args.weights)  # first: its run caches the features the rest reads
    feats, labels, groups, classes = _features(args.data, args.weights)
    seeds = [int(s) for s in str(args.seeds).split(",")]
    rows = [_one_seed(feats, labels, groups, len(classes), seed, args) for seed in seeds]
    outliers = _outliers(args.data, args.weights)
    return {
        "data": str(args.data),
        "images": len(labels),
        "flip": args.labels_flip,
        "seeds": seeds,
        "rows": rows,
        "mean": _mean(rows),
        "cost": cost,
        "outliers": outliers,
    }


def _features(data: Path, weights: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    from tlearn.data.checks import check_dataset, group_ids
    from tlearn.data.labelled import LabelledImages
    from tlearn.data.scan import scan_images
    from tlearn.data.sources import load_dataset
    from tlearn.data.split import Split
    from tlearn.models.backbones import create_backbone
    from tlearn.training.config import TrainConfig
    from tlearn.training.feature_method import for_features
    from tlearn.training.label_issues import label_features

    cfg = TrainConfig(data=data, weights=str(weights))
    backbone = create_backbone(cfg.backbone, weights=cfg.weights)
    prep = for_features(backbone, cfg).preprocessing
    dataset = load_dataset(data)
    scanned = scan_images(dataset.samples, short_side=prep.working_short_side, resample=prep.resample)
    report = check_dataset(dataset, scanned)
    index = {c: i for i, c in enumerate(report.classes)}
    labels = np.array([index[s.label] for s in scanned.samples], dtype=np.int64)
    everything, none = np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    images = LabelledImages(scanned.pixels, labels, scanned.sha256, report.classes, Split(everything, none, none))
    feats = label_features(backbone, images, cfg)
    return feats, labels, np.array(group_ids(len(labels), report.duplicates)), report.classes


def _one_seed(
    feats: np.ndarray, truth: np.ndarray, groups: np.ndarray, k: int, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    from tlearn.data.split import stratified_split
    from tlearn.training.label_issues import find_label_issues

    split = stratified_split([str(c) for c in truth], val_frac=0.0, test_frac=0.3, seed=seed, groups=groups.tolist())
    train, test = split.train, split.test
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(train), size=round(args.labels_flip * len(train)), replace=False)
    noisy = truth[train].copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, k, size=len(flipped))) % k  # another class, uniformly
    is_flipped = noisy != truth[train]

    start = time.perf_counter()
    found = find_label_issues(feats[train], noisy, num_classes=k, groups=groups[train], seed=seed)
    seconds = time.perf_counter() - start
    flagged = np.array([f.index for f in found.mislabelled], dtype=np.int64)
    ranking = _tlearn_ranking(found.proba, noisy, flagged)
    row: dict[str, Any] = {
        "seed": seed,
        "train": len(train),
        "flipped": int(is_flipped.sum()),
        "seconds": seconds,
        "outliers": len(found.outliers),
        "tlearn": _scores(flagged, ranking, is_flipped),
    }
    cleanlab = _cleanlab(found.proba, noisy, args.labels_cleanlab)
    if cleanlab is not None:
        row["cleanlab"] = _scores(np.array(cleanlab["flagged"]), np.array(cleanlab["ranking"]), is_flipped)
        row["cleanlab_version"] = cleanlab["version"]
    keep = np.setdiff1d(np.arange(len(train)), flagged)
    row["accuracy"] = {
        "noisy": _accuracy(feats[train], noisy, feats[test], truth[test], k, seed),
        "flagged_removed": _accuracy(feats[train][keep], noisy[keep], feats[test], truth[test], k, seed),
        "true_labels": _accuracy(feats[train], truth[train], feats[test], truth[test], k, seed),
    }
    if cleanlab is not None:
        keep = np.setdiff1d(np.arange(len(train)), cleanlab["flagged"])
        acc = _accuracy(feats[train][keep], noisy[keep], feats[test], truth[test], k, seed)
        row["accuracy"]["cleanlab_removed"] = acc
    return row


def _tlearn_ranking(proba: np.ndarray, labels: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """The flagged list, then every other image by how much another class beats its given one."""
    rows = np.arange(len(labels))
    others = proba.copy()
    others[rows, labels] = -1.0
    margin = others.max(axis=1) - proba[rows, labels]
    rest = [int(i) for i in np.argsort(-margin, kind="stable") if i not in set(flagged.tolist())]
    return np.array([*flagged.tolist(), *rest], dtype=np.int64)


def _scores(flagged: np.ndarray, ranking: np.ndarray, is_flipped: np.ndarray) -> dict[str, Any]:
    hits = int(is_flipped[flagged].sum()) if len(flagged) else 0
    return {
        "flagged": len(flagged),
        "precision": hits / len(flagged) if len(flagged) else float("nan"),
        "recall": hits / int(is_flipped.sum()),
        "p_at_20": float(is_flipped[ranking[:20]].mean()),
        "p_at_50": float(is_flipped[ranking[:50]].mean()),
    }


def _cleanlab(proba: np.ndarray, labels: np.ndarray, python: Path) -> dict[str, Any] | None:
    if not python.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oof.npz"
        np.savez(path, proba=proba, labels=labels)
        done = subprocess.run(
            [str(python), "-c", CLEANLAB_SCRIPT, str(path)], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        print(f"cleanlab failed, column skipped: {done.stderr.strip().splitlines()[-1:]}")
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _accuracy(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int, seed: int) -> float:
    from tlearn.training.linear import fit_linear

    fit = fit_linear(x, y, num_classes=k, seed=seed)
    return float((fit.logits(x_test).argmax(axis=1) == y_test).mean())


def _outliers(data: Path, weights: Path) -> dict[str, Any]:
    """flowers17 with 10 Caltech-101 photos (one per class) and 5 noise images put into its class folders:
    which does the check call far from every class, and how many flower photos with them, at several z."""
    from PIL import Image

    from tlearn.training.label_issues import OUTLIER_Z, find_label_issues, outlier_threshold

    caltech = data.parent / "caltech101_10"
    rng = np.random.default_rng(0)
    noise = [
        rng.random((256, 256, 3)),
        (rng.random((256, 256, 1)) > 0.5).repeat(3, axis=2),
        np.asarray(Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((256, 256))) / 255,
        np.zeros((256, 256, 3)),
        np.broadcast_to(np.linspace(0, 1, 256)[None, :, None], (256, 256, 3)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "flowers_plus"
        classes = sorted(p.name for p in data.iterdir() if p.is_dir())
        for c in classes:
            (root / c).mkdir(parents=True)
            for f in (data / c).iterdir():
                (root / c / f.name).symlink_to(f.resolve())
        extra = []
        others = sorted(p for p in caltech.iterdir() if p.is_dir()) if caltech.is_dir() else []
        for i, folder in enumerate(others):
            src = sorted(folder.iterdir())[0]
            dst = root / classes[i % len(classes)] / f"extra_caltech_{folder.name}{src.suffix}"
            dst.symlink_to(src.resolve())
            extra.append(dst.name)
        for i, pixels in enumerate(noise):
            name = f"extra_noise_{i}.png"
            folder = root / classes[(-1 - i) % len(classes)]
            Image.fromarray((np.asarray(pixels) * 255).astype(np.uint8)).save(folder / name)
            extra.append(name)
        feats, labels, groups, _ = _features(root, weights)
        from tlearn.data.sources import load_dataset

        names = [s.path.name for s in load_dataset(root).samples]
    found = find_label_issues(feats, labels, num_classes=len(classes), groups=groups)
    is_extra = np.array([n.startswith("extra_") for n in names])
    by_z = {}
    for z in (3.0, 4.0, 5.0, 6.0):
        far = found.similarity < outlier_threshold(found.similarity, z)
        by_z[str(z)] = {"extra": int((far & is_extra).sum()), "flowers": int((far & ~is_extra).sum())}
    flagged = {f.index for f in found.outliers}
    return {
        "extra_images": int(is_extra.sum()),
        "z": OUTLIER_Z,
        "extra_flagged": sum(i in flagged for i in np.flatnonzero(is_extra)),
        "flowers_flagged": sum(i in flagged for i in np.flatnonzero(~is_extra)),
        "extra_flagged_as_label_issue": sum(f.index in set(np.flatnonzero(is_extra)) for f in found.mislabelled),
        "by_z": by_z,
        "missed": [names[i] for i in np.flatnonzero(is_extra) if i not in flagged],
    }


def _cost(data: Path, weights: Path) -> dict[str, Any]:
    """The "labels" stage of a features run on every image, after a first run cached the features."""
    from tlearn.training.config import TrainConfig
    from tlearn.training.run import run as train

    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for name in ("first", "cached"):
            cfg = TrainConfig(
                data=data, out=Path(tmp) / name, method="features", weights=str(weights), val_frac=0.0, test_frac=0.3
            )
            start = time.perf_counter()
            result = train(cfg)
            runs.append(
                {
                    "run": name,
                    "seconds": time.perf_counter() - start,
                    "labels_seconds": result.timings.get("labels", float("nan")),
                    "mislabelled": result.mislabelled,
                    "outliers": result.outliers,
                    "images": result.dataset.total,
                }
            )
    return {"runs": runs}


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def avg(get: Any) -> float:
        values = [get(r) for r in rows if get(r) is not None]
        return float(np.nanmean(values)) if values else float("nan")

    out: dict[str, Any] = {}
    for tool in ("tlearn", "cleanlab"):
        if all(tool in r for r in rows):
            out[tool] = {key: avg(lambda r, t=tool, k=key: r[t][k]) for key in rows[0][tool]}
    out["accuracy"] = {key: avg(lambda r, k=key: r["accuracy"].get(k)) for key in rows[0]["accuracy"]}
    out["seconds"] = avg(lambda r: r["seconds"])
    return out


def print_table(result: dict[str, Any]) -> None:
    rows, mean = result["rows"], result["mean"]
    tools = [t for t in ("tlearn", "cleanlab") if t in mean]
    print(
        f"\nLabel errors: {Path(result['data']).name}, {result['flip']:.0%} of the training labels flipped at random, "
        f"seeds {','.join(map(str, result['seeds']))} (mean; {rows[0]['flipped']} flipped of {rows[0]['train']})"
    )
    print(f"{'':<22}" + "".join(f"{t:>12}" for t in tools))
    for key, name in (
        ("flagged", "images flagged"),
        ("precision", "precision (flagged)"),
        ("recall", "recall (flagged)"),
        ("p_at_20", "precision at 20"),
        ("p_at_50", "precision at 50"),
    ):
        fmt = "{:>12.1f}" if key == "flagged" else "{:>12.1%}"
        print(f"{name:<22}" + "".join(fmt.format(mean[t][key]) for t in tools))
    acc = mean["accuracy"]
    print("\nTest accuracy, logistic regression on the features (mean over seeds):")
    for key, name in (
        ("noisy", "noisy labels"),
        ("flagged_removed", "tlearn's flagged removed"),
        ("cleanlab_removed", "cleanlab's flagged removed"),
        ("true_labels", "true labels (reference)"),
    ):
        if key in acc:
            print(f"  {name:<28}{acc[key]:>8.2%}")
    o = result["outliers"]
    print(
        f"\nOutliers: {o['extra_images']} extra images (Caltech-101 photos, noise) among the flowers: "
        f"{o['extra_flagged']} flagged far from every class (z = {o['z']:g}), with {o['flowers_flagged']} flower photos"
        + (f"; missed {', '.join(o['missed'])}" if o["missed"] else "")
    )
    print(
        "  at other z: "
        + ", ".join(f"z {z}: {v['extra']} extra + {v['flowers']} flowers" for z, v in o["by_z"].items())
    )
    print(f"\nLabel check on {rows[0]['train']} training images: {mean['seconds']:.1f} s (mean)")
    for r in result["cost"]["runs"]:
        print(
            f"tlearn train --method features, {r['run']} run: {r['seconds']:.1f} s in all, label check "
            f"{r['labels_seconds']:.1f} s ({r['images']} images: {r['mislabelled']} may be mislabelled, "
            f"{r['outliers']} far from every class)"
        )
