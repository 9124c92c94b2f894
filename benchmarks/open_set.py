"""Open-set recognition and calibration on flowers17 with the built-in MobileNetV2.

    flock /tmp/tlearn-heavy.lock python -m benchmarks.open_set [--seeds 0,1,2] [--finetune-seeds 0]

14 flower classes are known (the same 14 in every run: 3 held out by a fixed draw, HELD_OUT_SEED) and
trained on with tlearn's Python API (`tlearn.train`, the feature method; its default 15% val, 15% test
stratified split, seeded by the run's seed). Unknowns:
  near: every photo of the 3 held-out flower classes (240);
  far:  clearly different images: 15 photos of each Caltech-101 class of ../shared/datasets/caltech101_10,
        15 satellite tiles of each EuroSAT class, and 60 synthetic shapes of `tlearn sample-data`.
Each score (higher = more unknown) is computed from the same (features, logits) of the trained bundle
(`models/unknown.py`): msp (1 - maximum softmax probability, the baseline), energy, class_mean (cosine
to the nearest class mean) and knn (cosine to the k-th nearest training image, k = 1, 5, 10), plus
knn+msp (`knn_msp`: the sum of knn k=1 and msp, each standardised on the validation images). Reported: AUROC known test
images against near, far and all unknowns; at the threshold that keeps 95% of the validation images,
the share of unknowns answered unknown and the known test accuracy: without rejection, on the images
kept, and counting a rejected known image as wrong. Also the test ECE before and after the temperature,
and the time rejection adds to a prediction. Prints a table, writes benchmarks/results/open_set.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HELD_OUT_SEED = 17  # draws the 3 held-out classes once: the same 14 known classes for every run
FAR_PER_CLASS = 15
RECALL = 0.95


def held_out_classes(classes: list[str]) -> list[str]:
    rng = np.random.default_rng(HELD_OUT_SEED)
    return sorted(str(c) for c in rng.choice(sorted(classes), size=3, replace=False))


def link_known(flowers: Path, known: list[str], out: Path) -> Path:
    """A folder of the known classes made of symlinks to the read-only dataset."""
    for c in known:
        (out / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((flowers / c).iterdir()):
            (out / c / f.name).symlink_to(f)
    return out


def far_images(tmp: Path, per_class: int = FAR_PER_CLASS) -> dict[str, list[Path]]:
    from tlearn.data.synthetic import make_sample_dataset

    groups: dict[str, list[Path]] = {}
    for name in ("caltech101_10", "eurosat_rgb200"):
        root = SHARED / "datasets" / name
        groups[name] = [p for c in sorted(root.iterdir()) for p in sorted(c.iterdir())[:per_class]]
    synthetic = make_sample_dataset(tmp / "synthetic", classes=6, per_class=max(1, per_class * 2 // 3), seed=0)
    groups["synthetic"] = sorted(synthetic.rglob("*.jpg"))
    return groups


def outputs(predictor: Any, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) calibrated logits and (N, D) pooled features of images, as the bundle computes them."""
    logits, feats = [], []
    for _, x, failed in predictor.input_batches(paths, batch_size=32):
        assert not failed, failed
        with torch.inference_mode():
            z, f = predictor.classifier.logits_and_features(torch.from_numpy(x))
        logits.append(z.numpy())
        feats.append(f.numpy())
    return np.concatenate(logits), np.concatenate(feats)


def all_scores(predictor: Any, logits: np.ndarray, feats: np.ndarray) -> dict[str, np.ndarray]:
    from tlearn.models.unknown import score_of

    scorer = predictor.classifier.unknown
    means, bank = scorer.get_buffer("means"), scorer.get_buffer("bank")
    z, f = torch.from_numpy(logits), torch.from_numpy(feats)
    out = {}
    for kind in ("msp", "energy", "class_mean"):
        out[kind] = score_of(kind, f, z, means, bank).numpy()
    for k in (1, 5, 10):
        out[f"knn k={k}"] = score_of("knn", f, z, means, bank, k=k).numpy()
    return out


def combined(predictor: Any, val: tuple[np.ndarray, np.ndarray], logits: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """The knn_msp score (knn k=1 + msp, each standardised on the validation images), as a bundle computes it."""
    from tlearn.models.unknown import score_of, standardising

    scorer = predictor.classifier.unknown
    means, bank = scorer.get_buffer("means"), scorer.get_buffer("bank")
    norm = standardising("knn_msp", torch.from_numpy(val[1]), torch.from_numpy(val[0]), means, bank)
    return score_of("knn_msp", torch.from_numpy(feats), torch.from_numpy(logits), means, bank, norm=norm).numpy()


def evaluate_bundle(bundle: Path, dataset: Path, near: list[Path], far: dict[str, list[Path]]) -> dict[str, Any]:
    import tlearn
    from tlearn.artifacts.bundle import SPLIT_FILE
    from tlearn.data.sources import load_dataset
    from tlearn.data.split import load_split

    predictor = tlearn.load(bundle)
    ds = load_dataset(dataset)
    split = load_split(bundle / SPLIT_FILE, ds.samples, ds.root)
    index = {c: i for i, c in enumerate(predictor.classes)}
    parts = {}
    for part in ("val", "test"):
        idx = getattr(split, part)
        paths = [ds.samples[i].path for i in idx]
        parts[part] = (paths, np.array([index[ds.samples[i].label] for i in idx]))
    far_paths = [p for group in far.values() for p in group]
    out = {name: outputs(predictor, paths) for name, paths in (("val", parts["val"][0]), ("test", parts["test"][0]))}
    out["near"] = outputs(predictor, near)
    out["far"] = outputs(predictor, far_paths)
    scores = {name: all_scores(predictor, *zf) for name, zf in out.items()}
    for name, zf in out.items():
        scores[name]["knn+msp"] = combined(predictor, out["val"], *zf)
    y_test = parts["test"][1]
    correct = out["test"][0].argmax(1) == y_test
    rows = {}
    for kind in scores["test"]:
        s = {name: scores[name][kind] for name in scores}
        threshold = float(np.quantile(s["val"], RECALL, method="higher"))
        kept = s["test"] <= threshold
        row = {
            "auroc_near": _auroc(s["test"], s["near"]),
            "auroc_far": _auroc(s["test"], s["far"]),
            "auroc_all": _auroc(s["test"], np.concatenate([s["near"], s["far"]])),
            "near_rejected": float((s["near"] > threshold).mean()),
            "far_rejected": float((s["far"] > threshold).mean()),
            "known_kept": float(kept.mean()),
            "accuracy": float(correct.mean()),
            "accuracy_of_kept": float(correct[kept].mean()),
            "accuracy_rejected_as_wrong": float((correct & kept).mean()),
        }
        start = 0
        for group, paths in far.items():  # far unknowns by kind
            row[f"far_rejected_{group}"] = float((s["far"][start : start + len(paths)] > threshold).mean())
            start += len(paths)
        rows[kind] = row
    # the bundle's own answer, through the public API: the same rule as "knn k=1"
    api = predictor.predict_many(near[:40], top_k=1)
    rule = predictor.unknown_rule
    return {
        "scores": rows,
        "bundle_rule": rule.to_dict() if rule else None,
        "api_near_rejected_first40": float(np.mean([p.unknown for p in api.items])),
        "calibration": _calibration(predictor),
        "overhead": _overhead(predictor, parts["test"][0][:64]),
        "test_images": len(y_test),
    }


def _auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def _calibration(predictor: Any) -> dict[str, Any]:
    cal = predictor.config.details.get("calibration", {})
    test = next((r for r in cal.get("reliability", []) if r["part"] == "test"), None)
    return {
        "temperature": cal.get("temperature"),
        "test_ece_before": None if test is None else test["ece_before"],
        "test_ece_after": None if test is None else test["ece_after"],
    }


def _overhead(predictor: Any, paths: list[Path], rounds: int = 10) -> dict[str, float]:
    """Seconds per image of the bundle's network with and without the unknown score on the same 64 inputs:
    the two alternate `rounds` times (so a busy machine slows both alike), the fastest of each counts."""
    x = np.concatenate([x for _, x, _ in predictor.input_batches(paths, batch_size=64)])
    scorer = predictor.classifier.unknown
    times: dict[str, list[float]] = {"with": [], "without": []}
    predictor.answer_of_batch(x)  # warm-up
    for _ in range(rounds):
        for name in ("with", "without"):
            predictor.classifier.unknown = scorer if name == "with" else None
            start = time.perf_counter()
            predictor.answer_of_batch(x)
            times[name].append((time.perf_counter() - start) / len(x))
    predictor.classifier.unknown = scorer
    best = {name: min(t) for name, t in times.items()}
    return {**best, "added": best["with"] / best["without"] - 1}


def train(data: Path, out: Path, *, method: str, seed: int) -> float:
    import tlearn
    from tlearn.models.builtin import BUILTIN_NAME

    start = time.perf_counter()
    tlearn.train(data, method=method, backbone=BUILTIN_NAME, seed=seed, out=out)
    return time.perf_counter() - start


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    kinds = runs[0]["scores"].keys()
    out = {}
    for kind in kinds:
        keys = runs[0]["scores"][kind].keys()
        out[kind] = {
            k: (
                statistics.mean(r["scores"][kind][k] for r in runs),
                statistics.stdev([r["scores"][kind][k] for r in runs]) if len(runs) > 1 else 0.0,
            )
            for k in keys
        }
    return out


def print_table(title: str, summary: dict[str, dict[str, tuple[float, float]]], n: int) -> None:
    print(f"\n{title} ({n} seed{'s' if n > 1 else ''}; mean ± sd)")
    head = ["score", "AUROC near", "AUROC far", "near unk.", "far unk.", "known kept", "acc", "acc kept"]
    head += ["acc rej=wrong"]
    print(" | ".join(head))
    keys = [
        "auroc_near", "auroc_far", "near_rejected", "far_rejected", "known_kept", "accuracy", "accuracy_of_kept",
        "accuracy_rejected_as_wrong",
    ]  # fmt: skip
    for kind, row in summary.items():
        cells = [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" if k.startswith("auroc") else f"{row[k][0]:.1%}" for k in keys]
        print(" | ".join([kind + (" (baseline)" if kind == "msp" else ""), *cells]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "flowers17")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--finetune-seeds", default="0")
    parser.add_argument("--far-per-class", type=int, default=FAR_PER_CLASS)
    parser.add_argument(
        "--overhead-only", action="store_true", help="Only time the score (seed 0 bundle); update the JSON's overhead."
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "open_set.json")
    args = parser.parse_args()

    classes = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    held = held_out_classes(classes)
    known = [c for c in classes if c not in held]
    doc: dict[str, Any] = {"known": known, "held_out": held, "recall": RECALL, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # tlearn's own caches (TLEARN_CACHE_DIR or the user's): features of flowers17 computed by another
        # run of the same network are reused, keyed by content
        data = link_known(args.data, known, tmp / "known")
        near = [p for c in held for p in sorted((args.data / c).iterdir())]
        if args.overhead_only:
            out = tmp / "features-0"
            train(data, out, method="features", seed=0)
            import tlearn

            predictor = tlearn.load(out)
            paths = sorted(data.rglob("*.jpg"))[::9][:64]
            overhead = _overhead(predictor, paths)
            print(f"rejection adds {overhead['added']:+.1%} to prediction time ({overhead})")
            shutil.copy(out / "plots" / "reliability.png", Path(tempfile.gettempdir()) / "open_set_reliability.png")
            saved = json.loads(args.json.read_text()) if args.json.is_file() else {}
            args.json.write_text(json.dumps({**saved, "overhead": overhead}, indent=1))
            return
        far = far_images(tmp, args.far_per_class)
        doc["unknowns"] = {"near": len(near), **{k: len(v) for k, v in far.items()}}
        print(f"held out: {', '.join(held)}; near {len(near)}, far {sum(map(len, far.values()))}", flush=True)
        plan = [("features", int(s)) for s in args.seeds.split(",") if s]
        plan += [("finetune", int(s)) for s in args.finetune_seeds.split(",") if s]
        for method, seed in plan:
            out = tmp / f"{method}-{seed}"
            seconds = train(data, out, method=method, seed=seed)
            result = evaluate_bundle(out, data, near, far)
            result["train_seconds"] = seconds
            doc["runs"].setdefault(method, []).append({"seed": seed, **result})
            knn, msp = result["scores"]["knn k=1"], result["scores"]["msp"]
            print(
                f"{method} seed {seed}: {seconds:.0f} s; AUROC near/far knn {knn['auroc_near']:.3f}/"
                f"{knn['auroc_far']:.3f}, msp {msp['auroc_near']:.3f}/{msp['auroc_far']:.3f}; calibration "
                f"{result['calibration']}; rejection adds {result['overhead']['added']:+.1%}",
                flush=True,
            )
    for method, runs in doc["runs"].items():
        summary = summarise(runs)
        doc.setdefault("summary", {})[method] = {k: {m: v[0] for m, v in row.items()} for k, row in summary.items()}
        print_table(f"{method} on 14 flowers17 classes", summary, len(runs))
        cal = [r["calibration"] for r in runs]
        print(
            f"{method}: test ECE before {statistics.mean(c['test_ece_before'] for c in cal):.4f} -> after "
            f"{statistics.mean(c['test_ece_after'] for c in cal):.4f}, T = "
            + ", ".join(f"{c['temperature']:.3f}" for c in cal)
            + f"; rejection adds {statistics.mean(r['overhead']['added'] for r in runs):+.1%} to prediction time"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
