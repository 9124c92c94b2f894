"""tlearn against the plain ways on a suite of real datasets at different distances from ImageNet.

    python -m benchmarks.suite [--datasets flowers17,caltech101_10,plantvillage_tomato,eurosat_rgb200]
                               [--seeds 0,1,2] [--methods probe,tutorial,default,features,finetune] [--readme]

For every dataset, in one process per dataset (`--one NAME`, started by this script), and for every
split seed: tlearn's stratified, duplicate-aware split (15% validation, 15% test per class) is drawn
once and written to a split file that every method reads, so all are scored on the same test images.
The plain ways (benchmarks/plain.py) train on the training and validation parts together (they have
no use for a validation part); tlearn's methods get the same images, with its validation part held
out as tlearn holds it out.

- probe: the PyTorch-tutorial / Keras-guide linear probe (one pass, 224 center crop, logistic
  regression with C by 5-fold CV). The features are extracted once per dataset and reused across
  seeds; its time is that pass plus the fit.
- tutorial: frozen warm-up then unfreeze, fixed epochs (plain.py).
- default: `tlearn train DATA` with default options (its time budget included).
- features / finetune: `tlearn train DATA --method ...`.

Every tlearn run starts from an empty feature cache, so its time is what a new user waits for.
Prints one table (mean ± sd over seeds), writes benchmarks/results/suite.json, and with --readme
rewrites the README table between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv2_100.tf_in1k.safetensors"
DATASETS = ("flowers17", "caltech101_10", "plantvillage_tomato", "eurosat_rgb200")
METHODS = ("probe", "tutorial", "default", "features", "finetune")
RESULTS = ROOT / "benchmarks" / "results" / "suite.json"
MARKERS = ("<!-- suite table: start -->", "<!-- suite table: end -->")


# --- one dataset, in its own process -------------------------------------------------------------


def make_split(data: Path, seed: int, path: Path) -> None:
    """tlearn's default split (duplicate-aware, stratified) for this seed, as a split file."""
    from tlearn.data.checks import check_dataset, group_ids
    from tlearn.data.scan import scan_images
    from tlearn.data.sources import load_dataset
    from tlearn.data.split import save_split, stratified_split

    dataset = load_dataset(data)
    scanned = scan_images(dataset.samples, short_side=256)
    report = check_dataset(dataset, scanned)
    groups = group_ids(len(scanned), report.duplicates)
    split = stratified_split([s.label for s in scanned.samples], seed=seed, groups=groups)
    save_split(split, scanned.samples, dataset.root, path)


def read_split(data: Path, path: Path) -> tuple[list[Path], np.ndarray, list[str], dict[str, np.ndarray]]:
    doc = json.loads(path.read_text())
    paths: list[Path] = []
    parts: dict[str, list[int]] = {}
    for part in ("train", "val", "test"):
        parts[part] = []
        for rel in doc[part]:
            parts[part].append(len(paths))
            paths.append(data / rel)
    names = [p.parent.name for p in paths]
    classes = sorted(set(names))
    labels = np.array([classes.index(n) for n in names])
    return paths, labels, classes, {k: np.array(v, dtype=np.int64) for k, v in parts.items()}


def tlearn_run(method: str, data: Path, split: Path, work: Path, seed: int) -> dict[str, Any]:
    from tlearn.training.config import TrainConfig
    from tlearn.training.run import run

    os.environ["TLEARN_CACHE_DIR"] = str(work / f"cache-{method}")  # a first run: nothing cached
    cfg = TrainConfig(data=data, out=work / method, method=method, seed=seed, split_file=split, weights=str(WEIGHTS))
    start = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - start
    test = result.metrics["test"]
    auto = result.details.auto
    return {
        "test_accuracy": test.accuracy,
        "balanced_accuracy": test.balanced_accuracy,
        "seconds": seconds,
        "chosen": result.details.method,
        "why": auto.explanation if auto is not None else "",
        "stages": result.timings,
    }


def one_dataset(name: str, seeds: list[int], methods: list[str]) -> dict[str, Any]:
    import torch

    from benchmarks import plain

    torch.manual_seed(0)
    data = SHARED / "datasets" / name
    rows: list[dict[str, Any]] = []
    probe: dict[str, np.ndarray] = {}  # path -> features: one pass over every image, reused by every seed
    probe_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            work = Path(tmp) / f"seed{seed}"
            work.mkdir()
            split = work / "split.json"
            make_split(data, seed, split)
            paths, labels, classes, parts = read_split(data, split)
            learn = np.concatenate([parts["train"], parts["val"]])
            for method in methods:
                start = time.perf_counter()
                if method == "probe":
                    if not probe:
                        feats = plain.extract(plain.pretrained(WEIGHTS), paths)
                        probe = {str(p): f for p, f in zip(paths, feats, strict=True)}
                        probe_seconds = time.perf_counter() - start
                    features = np.stack([probe[str(p)] for p in paths])
                    row = plain.linear_probe(features, labels, learn, parts["test"], seed=seed)
                    row["seconds"] = probe_seconds + row.pop("fit_seconds")
                elif method == "tutorial":
                    row = plain.tutorial_finetune(
                        WEIGHTS, paths, labels, learn, parts["test"], num_classes=len(classes), seed=seed
                    )
                    row["seconds"] = time.perf_counter() - start
                else:
                    row = tlearn_run("auto" if method == "default" else method, data, split, work, seed)
                row.update(dataset=name, seed=seed, method=method, test_images=len(parts["test"]))
                rows.append(row)
                print(
                    f"{name} seed {seed} {method}: {row['test_accuracy']:.2%} (balanced "
                    f"{row['balanced_accuracy']:.2%}) in {row['seconds']:.0f}s"
                    + (f", chose {row['chosen']}" if method == "default" else ""),
                    flush=True,
                )
    return {"dataset": name, "rows": rows}


# --- the whole suite -----------------------------------------------------------------------------


def _order(name: str) -> int:
    return DATASETS.index(name) if name in DATASETS else len(DATASETS)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for name in sorted(dict.fromkeys(r["dataset"] for r in rows), key=_order):
        for method in sorted(dict.fromkeys(r["method"] for r in rows if r["dataset"] == name), key=METHODS.index):
            mine = [r for r in rows if r["dataset"] == name and r["method"] == method]
            acc = np.array([r["test_accuracy"] for r in mine])
            bal = np.array([r["balanced_accuracy"] for r in mine])
            table.append(
                {
                    "dataset": name,
                    "method": method,
                    "seeds": [r["seed"] for r in mine],
                    "accuracy": float(acc.mean()),
                    "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "balanced": float(bal.mean()),
                    "balanced_sd": float(bal.std(ddof=1)) if len(bal) > 1 else 0.0,
                    "seconds": float(np.mean([r["seconds"] for r in mine])),
                    "chosen": sorted({r.get("chosen", "") for r in mine} - {""}),
                }
            )
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | method | seeds | accuracy | balanced accuracy | wall time | auto chose |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in table:
        one = len(t["seeds"]) == 1

        def pm(mean: float, sd: float, one: bool = one) -> str:
            return f"{mean:.1%}" if one else f"{mean:.1%} ± {sd:.1%}"

        lines.append(
            f"| {t['dataset']} | {t['method']} | {','.join(map(str, t['seeds']))} | "
            f"{pm(t['accuracy'], t['accuracy_sd'])} | {pm(t['balanced'], t['balanced_sd'])} | "
            f"{t['seconds']:.0f} s | {', '.join(t['chosen']) if t['method'] == 'default' else ''} |"
        )
    return "\n".join(lines)


def write_readme(table: list[dict[str, Any]]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = MARKERS
    if start not in text or end not in text:
        print("README has no suite markers: table not written there")
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{markdown(table)}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--one", help="run one dataset in this process and print its JSON (used by the suite)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="rewrite the README's suite table")
    parser.add_argument("--no-run", action="store_true", help="run nothing: print (and --readme) the JSON's table")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {','.join(METHODS)}")
    if args.one:
        result = one_dataset(args.one, seeds, methods)
        print("JSON " + json.dumps(result, default=str))
        return

    rows: list[dict[str, Any]] = []
    if args.json.exists():  # keep the rows of datasets/methods/seeds not rerun now
        old = json.loads(args.json.read_text()).get("rows", [])
        rerun = set() if args.no_run else {(d, m, s) for d in args.datasets.split(",") for m in methods for s in seeds}
        rows = [r for r in old if (r["dataset"], r["method"], r["seed"]) not in rerun]
    for name in [] if args.no_run else args.datasets.split(","):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.suite",
            "--one",
            name,
            "--seeds",
            args.seeds,
            "--methods",
            args.methods,
        ]
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
        out = proc.stdout.splitlines()
        for line in out:
            if not line.startswith("JSON "):
                print(line, flush=True)
        done = [json.loads(line[5:]) for line in out if line.startswith("JSON ")]
        if proc.returncode or not done:
            print(f"{name}: failed (exit {proc.returncode})", flush=True)
            continue
        rows += done[0]["rows"]
        table = summarise(rows)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows, "table": table}, indent=1)
        )
    table = summarise(rows)
    print()
    print(markdown(table))
    print(f"\nwrote {args.json}")
    if args.readme:
        write_readme(table)


if __name__ == "__main__":
    main()
