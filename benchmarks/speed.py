"""tlearn against the plain way, in one process, on the same split: time, throughput, accuracy.

    python -m benchmarks.speed [--data ../shared/datasets/flowers17] [--weights ...mobilenetv2...]
        [--stages extract,first-run,warmup,finetune,predict,serve,demo] [--finetuned-bundle DIR]
    python -m benchmarks.speed --table      # rewrite README.md's tables from the JSON

A run of some stages replaces their rows in the JSON and keeps the others'; every row records the
machine and the date it ran on.

"The plain way" is what the PyTorch transfer-learning tutorial and the Keras guide do, written here
faithfully: a Dataset that opens and decodes every JPEG at each epoch (Pillow, torchvision Resize /
CenterCrop / Normalize), a DataLoader with one worker per core, the frozen base run every epoch in
float32 eager mode, and BatchNorm kept in inference mode (as the Keras guide says; left in training
mode it collapses these weights to chance). Both sides use the shared MobileNetV2 and the same
split: 30% test per class (seed 0), 10% validation, the rest to train.

Stages: feature extraction (throughput and agreement of the features), the feature method end to
end (first run with where its time goes, rerun, and first run with the fast settings), the warm-up phase
(20 epochs of head training on the frozen base), fine-tuning the last two stages to the accuracy target,
prediction on 1,000 images after `tlearn export BUNDLE --int8 auto` (int8 where the bundle's validation split
keeps its accuracy; the engine alone, end to end and its share, the plain way: see
benchmarks/predict_speed.py), serving the feature-method bundle so exported to 1, 8 and 32 clients at once on
loopback, each sending one 1600 x 1200 JPEG per request, against the engine alone and against the plain way's
server (benchmarks/plain_server.py; see benchmarks/serve_load.py), with both servers' accuracy on the test
photos, and the quick start (`tlearn sample-data demo && tlearn train demo` in
fresh processes with empty caches, as on a fresh clone; no plain way). The first run and the quick
start say where their time goes, step by step (benchmarks/stage_times.py). Prints one table with the
ratios and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision import transforms

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TARGET = 0.965
PLAIN_BATCH = 16
STAGES = ("extract", "first-run", "warmup", "finetune", "predict", "serve", "demo")
DEMO = "quick start: sample-data + train demo"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- speed.json: stages -->", "<!-- /speed.json: stages -->"
PREDICT_START, PREDICT_END = "<!-- speed.json: predict -->", "<!-- /speed.json: predict -->"
SERVE_START, SERVE_END = "<!-- speed.json: serve -->", "<!-- /speed.json: serve -->"
SERVE_CLIENTS, SERVE_SECONDS = [1, 8, 32], 10.0  # clients at once, and seconds of requests for each


# --- the plain way ---------------------------------------------------------------------------------


class Photos(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Decodes the file at every access, as torchvision's ImageFolder does."""

    def __init__(self, paths: list[Path], labels: np.ndarray, transform: Any) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.open(self.paths[i]).convert("RGB")), int(self.labels[i])


def plain_transforms(train: bool) -> Any:
    norm = transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # the weights' own statistics
    if train:
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(224, scale=(0.7, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        )
    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])


def plain_model(weights: Path, num_classes: int) -> nn.Module:
    model = timm.create_model("mobilenetv2_100", pad_type="same", num_classes=1000)
    model.load_state_dict(load_file(str(weights)))
    model.reset_classifier(num_classes)
    return model


def loader(paths: list[Path], labels: np.ndarray, *, train: bool) -> torch.utils.data.DataLoader[Any]:
    return torch.utils.data.DataLoader(
        Photos(paths, labels, plain_transforms(train)), batch_size=PLAIN_BATCH, shuffle=train,
        num_workers=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
    )  # fmt: skip


def plain_features(model: nn.Module, paths: list[Path], labels: np.ndarray) -> tuple[np.ndarray, float]:
    model.eval()
    out, start = [], time.perf_counter()
    with torch.no_grad():
        for x, _ in loader(paths, labels, train=False):
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).numpy())
    return np.concatenate(out), time.perf_counter() - start


def plain_accuracy(model: nn.Module, paths: list[Path], labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader(paths, labels, train=False):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(paths)


def frozen_bn_train(model: nn.Module) -> None:
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def plain_epochs(
    model: nn.Module,
    params: list[nn.Parameter],
    paths: list[Path],
    labels: np.ndarray,
    *,
    epochs: int,
    lr: float,
    evaluate: Any = None,
) -> list[tuple[float, float]]:
    """Train `params` for `epochs`, every epoch decoding and running the whole network; (seconds, score) per epoch."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    trace, start = [], time.perf_counter()
    for _ in range(epochs):
        frozen_bn_train(model)
        for x, y in loader(paths, labels, train=True):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = evaluate() if evaluate is not None else float("nan")
        trace.append((time.perf_counter() - start, score))
    return trace


# --- the benchmark -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "flowers17")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenetv2_100.tf_in1k.safetensors")
    parser.add_argument("--plain-finetune-epochs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--finetuned-bundle", type=Path, help="predict stage: this bundle instead of training one")
    parser.add_argument("--table", action="store_true", help="only rewrite README.md's tables from the JSON")
    args = parser.parse_args()
    if args.table:
        write_tables(json.loads(args.json.read_text()), README)
        return
    stages = set(args.stages.split(","))
    if stages - set(STAGES):
        parser.error(f"--stages: unknown {', '.join(sorted(stages - set(STAGES)))}; choose from {', '.join(STAGES)}")
    torch.manual_seed(0)
    doc: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {"rows": []}
    rows: list[dict[str, Any]] = doc["rows"]
    where = {"machine": machine(), "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads()}

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # after every stage: a late failure keeps the rest
        args.json.write_text(json.dumps(doc, indent=1))

    def put(new: dict[str, Any]) -> None:
        """Replace the row of this stage, or add it (in the order of the first full run)."""
        new = {**new, **where}
        at = next((i for i, r in enumerate(rows) if r["stage"] == new["stage"]), None)
        if at is None:
            rows.append(new)
        else:
            rows[at] = new
        save()

    def row(stage: str, plain_s: float | None, tlearn_s: float, *, plain_acc: float | None = None,
            tlearn_acc: float | None = None, note: str = "", **extra: Any) -> None:  # fmt: skip
        ratio = None if plain_s is None else plain_s / tlearn_s
        put({"stage": stage, "plain_s": plain_s, "tlearn_s": tlearn_s, "ratio": ratio,
             "plain_acc": plain_acc, "tlearn_acc": tlearn_acc, "note": note, **extra})  # fmt: skip
        print(f"  {stage}: plain {_secs(plain_s)}, tlearn {_secs(tlearn_s)}, {_ratio(ratio)} {note}", flush=True)

    if "demo" in stages:
        with tempfile.TemporaryDirectory() as tmp:
            demo_row(row, tmp=Path(tmp))
        if stages == {"demo"}:  # nothing needs the dataset
            print_table(rows)
            return

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLEARN_CACHE_DIR"] = str(Path(tmp) / "cache")
        from tlearn.data.checks import check_dataset
        from tlearn.data.scan import scan_images
        from tlearn.data.sources import load_dataset
        from tlearn.training.config import TrainConfig
        from tlearn.training.run import _backbone, _labelled, _split, run

        base = TrainConfig(data=args.data, weights=str(args.weights), seed=0, val_frac=0.1, test_frac=0.3)
        backbone = _backbone(base)
        dataset = load_dataset(args.data)
        t = time.perf_counter()
        scanned = scan_images(
            dataset.samples,
            short_side=backbone.preprocessing.working_short_side,
            resample=backbone.preprocessing.resample,
        )
        decode_s = time.perf_counter() - t
        report = check_dataset(dataset, scanned)
        data = _labelled(scanned, report, _split(base, dataset, scanned, report))
        split = data.split
        paths = [s.path for s in scanned.samples]
        pick = lambda idx: [paths[i] for i in idx]  # noqa: E731
        n = len(paths)
        print(f"{n} images, train {len(split.train)}, val {len(split.val)}, test {len(split.test)}", flush=True)

        # 1. feature extraction: the same images, every one once
        model = plain_model(args.weights, len(data.classes))
        if stages & {"extract", "first-run"}:
            plain_feats, plain_s = plain_features(model, paths, data.labels)
        if "extract" in stages:
            extraction_row(row, backbone, data, base, plain_feats, plain_s, decode_s, model, scanned.samples, Path(tmp))

        # 2. the feature method end to end: the plain way is extraction + a scikit-learn fit
        os.environ["TLEARN_CACHE_DIR"] = str(Path(tmp) / "cache-e2e")
        feats_cfg = replace(base, method="features", val_frac=0.0, out=Path(tmp) / "f1")
        if "first-run" in stages:
            first_run_rows(row, feats_cfg, data, plain_feats, plain_s, tmp=Path(tmp))
        if stages & {"predict", "serve"}:  # a bundle with a validation split, on which `--int8 auto` decides
            os.environ["TLEARN_CACHE_DIR"] = str(Path(tmp) / "cache-predict")
            feats_bundle = run(replace(base, method="features", out=Path(tmp) / "fp")).out

        # 3. warm-up: 20 epochs of the head on the frozen base
        if stages & {"warmup", "finetune"}:
            tuned = finetune_rows(row, args, backbone, base, data, pick, model, tmp=Path(tmp), stages=stages)
        elif "predict" in stages and args.finetuned_bundle is None:
            os.environ["TLEARN_CACHE_DIR"] = str(Path(tmp) / "cache-ft")
            tuned = run(replace(base, method="finetune", out=Path(tmp) / "ft"))

        # 5. prediction on 1,000 images with the ONNX engine
        if "predict" in stages:
            from benchmarks.predict_speed import measure, reduced_scale_check, test_files
            from tlearn.infer.export import export_bundle
            from tlearn.infer.load import load

            tuned_out = args.finetuned_bundle or tuned.out
            for name, bundle in (("feature-method bundle", feats_bundle), ("fine-tuned bundle", tuned_out)):
                # as a user deploys it: `tlearn export BUNDLE --int8 auto`, int8 where validation keeps
                # its accuracy within 0.5 point; `tlearn predict` then runs the exported model
                export_bundle(bundle, int8="auto")
                tests = test_files(bundle, args.data)
                m = measure(bundle, paths[:1000], tests, batch_size=32)
                if bundle == feats_bundle:
                    m["reduced_scale"] = reduced_scale_check(load(bundle, engine="onnx"), tests)
                size = "x".join(map(str, m["size"]))
                row(f"predict 1,000 images, {name}", m["plain_s"], m["e2e_s"], plain_acc=m["plain_acc"],
                    tlearn_acc=m["acc"], note=f"{m['plain_ips']:.0f} vs {m['e2e_ips']:.0f} img/s end to end; "
                    f"engine alone {m['engine_ips']:.0f} img/s, share {m['share']:.0%}; ONNX engine in "
                    f"{m['precision']}, {size} input, "
                    f"mirror {'on' if m['mirror'] else 'off'}; plain = the same network in eager PyTorch",
                    predict=m)  # fmt: skip

        # 6. serving the feature-method bundle, as exported for prediction
        if "serve" in stages:
            from benchmarks.predict_speed import test_files
            from tlearn.infer.export import export_bundle

            if "predict" not in stages:
                export_bundle(feats_bundle, int8="auto")
            labelled = [(f.read_bytes(), f.parent.name) for f in test_files(feats_bundle, args.data)]
            doc["serve"] = {**serve_figures(feats_bundle, labelled, Path(tmp)), **where}
            save()
            print_serve(doc["serve"])

    print_table(rows)
    print(f"\nwrote {args.json}")


EXTRACT_ROUNDS = 2  # each side's extraction runs this many times, in turn, and keeps its fastest


def extraction_row(row: Any, backbone: Any, data: Any, base: Any, plain_feats: np.ndarray, plain_s: float,
                   decode_s: float, model: nn.Module, samples: Any, tmp: Path) -> None:  # fmt: skip
    """Both sides extract the features of every image EXTRACT_ROUNDS times, in turn (ours: decode, then the
    network; from empty caches each time), and each keeps its fastest round: a machine whose speed drifts
    (another tenant, a CPU that slows under a minute of full load) moves both alike."""
    from tlearn.data.scan import scan_images
    from tlearn.training.feature_method import compute_features, feature_trunk
    from tlearn.training.linear import fit_linear

    split, n, paths = data.split, len(data), [s.path for s in samples]
    prep = backbone.preprocessing
    rounds: list[tuple[float, float]] = []
    for r in range(EXTRACT_ROUNDS):
        if r:  # the plain way again, then a fresh decode of ours
            plain_s = min(plain_s, plain_features(model, paths, data.labels)[1])
            os.environ["TLEARN_CACHE_DIR"] = str(tmp / f"cache-extract-{r}")
            t = time.perf_counter()
            scanned = scan_images(samples, short_side=prep.working_short_side, resample=prep.resample)
            decode_s = time.perf_counter() - t
            data = replace(data, pixels=scanned.pixels)
        os.environ["TLEARN_CACHE_DIR"] = str(tmp / f"cache-extract-net-{r}")
        t = time.perf_counter()
        data.pixels.load()
        shell = feature_trunk(backbone, "last")
        ours = compute_features(shell, backbone, data, views=0, mirror=False, cfg=base).clean
        rounds.append((decode_s, time.perf_counter() - t))
    decode_s, tlearn_s = min(rounds, key=sum)
    cos = np.sum(plain_feats * ours, 1) / (np.linalg.norm(plain_feats, axis=1) * np.linalg.norm(ours, axis=1))

    def probe(f: np.ndarray) -> float:
        fit = fit_linear(f[split.train], data.labels[split.train], num_classes=len(data.classes), C=1.0)
        return float((fit.logits(f[split.test]).argmax(1) == data.labels[split.test]).mean())

    spent = ", ".join(f"{d:.1f} + {e:.1f} s" for d, e in rounds)
    row("feature extraction (decode + network)", plain_s, tlearn_s + decode_s, plain_acc=probe(plain_feats),
        tlearn_acc=probe(ours), note=f"{n / plain_s:.0f} vs {n / (tlearn_s + decode_s):.0f} img/s (tlearn: decode "
        f"{decode_s:.1f} s, network {tlearn_s:.1f} s; fastest of {EXTRACT_ROUNDS} rounds each, in turn; ours: "
        f"{spent}), cosine min {cos.min():.5f}; accuracy = linear probe C=1",
        breakdown={"decode": decode_s, "network": tlearn_s, "rounds": rounds})  # fmt: skip


class StageClock:
    """A progress callback that keeps when each progress stage was first and last reported."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def seconds(self, stage: str) -> float:
        return self.last.get(stage, 0.0) - self.first.get(stage, 0.0)


def first_run_rows(row: Any, feats_cfg: Any, data: Any, plain_feats: np.ndarray, plain_s: float, *,
                   tmp: Path) -> Any:  # fmt: skip
    """The feature method end to end: first run (with where its time goes), rerun, fast settings."""
    from sklearn.linear_model import LogisticRegression

    from tlearn.training.run import run

    split = data.split
    t = time.perf_counter()
    clf = LogisticRegression(max_iter=2000).fit(plain_feats[split.train], data.labels[split.train])
    plain_fit = time.perf_counter() - t
    plain_acc = float(clf.score(plain_feats[split.test], data.labels[split.test]))
    from benchmarks.stage_times import timed

    clock = StageClock()
    t = time.perf_counter()
    with timed() as steps:
        first = run(feats_cfg, progress=clock)
    first_s = time.perf_counter() - t
    times = dict(first.timings)
    breakdown = {**times, "extract": clock.seconds("features")}
    breakdown["fit"] = times["fit"] - breakdown["extract"]  # the head, its cross-validation, calibration
    spent = ", ".join(f"{k} {v:.1f}s" for k, v in breakdown.items() if v >= 0.05)
    breakdown["steps"] = steps  # finer, nested: see benchmarks/stage_times.py
    t = time.perf_counter()
    again = run(replace(feats_cfg, out=tmp / "f2"))
    again_s = time.perf_counter() - t
    row("feature method, first run", plain_s + plain_fit, first_s, plain_acc=plain_acc,
        tlearn_acc=first.metrics["test"].accuracy, note=f"decode + extract + fit + evaluate: {spent}",
        breakdown=breakdown)  # fmt: skip
    row("feature method, rerun", plain_s + plain_fit, again_s, plain_acc=plain_acc,
        tlearn_acc=again.metrics["test"].accuracy, note="from caches")  # fmt: skip
    os.environ["TLEARN_CACHE_DIR"] = str(tmp / "cache-fast")
    t = time.perf_counter()
    fast = run(replace(feats_cfg, out=tmp / "f3", input_size=224, tta=False))
    fast_s = time.perf_counter() - t
    row("feature method, first run, fast", plain_s + plain_fit, fast_s, plain_acc=plain_acc,
        tlearn_acc=fast.metrics["test"].accuracy,
        note="--input-size 224 --no-tta: no FixRes, no mirror view")  # fmt: skip
    return first


def demo_row(row: Any, *, tmp: Path) -> None:
    """The quick start as a new user runs it on a fresh clone: both commands in new processes, empty
    caches; where train's time goes from benchmarks/stage_times.py in the same process."""
    env = {**os.environ, "TLEARN_CACHE_DIR": str(tmp / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tlearn", "sample-data", "demo"], cwd=tmp, env=env, check=True,
                   capture_output=True)  # fmt: skip
    sample_s = time.perf_counter() - t
    t = time.perf_counter()
    steps_file = tmp / "steps.json"
    subprocess.run([sys.executable, "-m", "benchmarks.stage_times", str(steps_file), "--", "train", "demo",
                    "--out", str(tmp / "run")], cwd=tmp, env=env, check=True, capture_output=True)  # fmt: skip
    train_s = time.perf_counter() - t
    steps = json.loads(steps_file.read_text())
    config = json.loads((tmp / "run" / "tlearn.json").read_text())
    breakdown = {"sample-data": sample_s, "train": train_s,
                 "startup and imports": train_s - steps.get("run", 0.0), **config["details"]["timings"],
                 "steps": steps}  # fmt: skip
    spent = ", ".join(f"{k} {v:.1f}s" for k, v in breakdown.items() if isinstance(v, float) and v >= 0.05)
    row(DEMO, None, sample_s + train_s, tlearn_acc=config["metrics"]["test"]["accuracy"],
        note=f"{config['method']}; {spent}", breakdown=breakdown)  # fmt: skip


def finetune_rows(row: Any, args: Any, backbone: Any, base: Any, data: Any, pick: Any, model: nn.Module, *,
                  tmp: Path, stages: set[str]) -> Any:  # fmt: skip
    """Warm-up (20 epochs of the head on the frozen base) and fine-tuning the last two stages to the target."""
    from tlearn.training.finetune import fit_finetune
    from tlearn.training.run import run

    split = data.split
    torch.manual_seed(0)
    head = list(model.get_classifier().parameters())
    trace = plain_epochs(model, head, pick(split.train), data.labels[split.train], epochs=20, lr=1e-3)
    warm_plain = trace[-1][0]
    warm_acc = plain_accuracy(model, pick(split.test), data.labels[split.test])
    ft_cfg = replace(
        base, method="finetune", views=0, finetune=replace(base.finetune, head_epochs=20, patience=0, epochs=0)
    )
    os.environ["TLEARN_CACHE_DIR"] = str(tmp / "cache-warm")
    (tmp / "warm").mkdir()
    t = time.perf_counter()
    warm = fit_finetune(backbone, data, ft_cfg, out=tmp / "warm")
    warm_tlearn = time.perf_counter() - t
    warm_tlearn_acc = float((warm.proba["test"].argmax(1) == data.labels[split.test]).mean())
    row("warm-up, 20 epochs", warm_plain, warm_tlearn, plain_acc=warm_acc, tlearn_acc=warm_tlearn_acc,
        note="frozen base every epoch vs cached features (image + mirror)")  # fmt: skip
    if "finetune" not in stages:
        return None
    top = [dict(model.named_parameters())[p] for s in backbone.stages[-2:] for p in s.params
           if p in dict(model.named_parameters())] + head  # fmt: skip

    def test_acc() -> float:
        return plain_accuracy(model, pick(split.test), data.labels[split.test])

    trace = plain_epochs(model, top, pick(split.train), data.labels[split.train], epochs=args.plain_finetune_epochs,
                         lr=3e-4, evaluate=test_acc)  # fmt: skip
    reached = next((s for s, a in trace if a >= TARGET), None)
    plain_ft = warm_plain + (reached if reached is not None else trace[-1][0])
    plain_ft_acc = max(a for _, a in trace)
    os.environ["TLEARN_CACHE_DIR"] = str(tmp / "cache-ft")
    t = time.perf_counter()
    tuned = run(replace(base, method="finetune", out=tmp / "ft"))
    ft_s = time.perf_counter() - t
    note = "plain time to reach the target" if reached is not None else f"plain never reached {TARGET:.1%}: all of it"
    row("fine-tune to the target", plain_ft, ft_s, plain_acc=plain_ft_acc, tlearn_acc=tuned.metrics["test"].accuracy,
        note=f"{note}; tlearn: whole run, decode to bundle")  # fmt: skip
    return tuned


def serve_figures(bundle: Path, labelled: list[tuple[bytes, str]], folder: Path) -> dict[str, Any]:
    """`tlearn serve BUNDLE` and the plain way's server at SERVE_CLIENTS, with the engine alone
    (benchmarks/serve_load.py) and the servers' accuracy on the `labelled` photos."""
    from benchmarks.serve_load import engine_throughput, jpeg, scaling, scaling_result

    photo = jpeg((1600, 1200), 0)
    engine = engine_throughput(bundle, photo)
    ours, forward_pass = scaling(bundle, photo, SERVE_CLIENTS, seconds=SERVE_SECONDS, extra=[], folder=folder,
                                 labelled=labelled)  # fmt: skip
    plain, _ = scaling(bundle, photo, SERVE_CLIENTS, seconds=SERVE_SECONDS, extra=[], folder=folder, plain=True,
                       labelled=labelled)  # fmt: skip
    config = json.loads((bundle / "tlearn.json").read_text())
    exported = bundle / "model.onnx.json"
    int8 = (json.loads(exported.read_text()).get("int8") if exported.is_file() else None) or {}
    prep = config["preprocessing"]
    setting = f"{prep['input_size'][0]} px{', mirror' if config.get('flip_tta') else ''}"
    return {
        **scaling_result(engine, ours, forward_pass),
        "plain": scaling_result(engine, plain, None)["clients"],
        "photo": "1600 x 1200 JPEG",
        "bundle": setting + (", int8" if int8.get("used") else ""),
        "int8": int8.get("reason"),
        "accuracy_photos": len(labelled),
    }


def print_serve(serve: dict[str, Any]) -> None:
    print(f"\nserving ({serve['bundle']}; engine alone, best: {serve['engine_best']['images_per_second']:.0f} img/s)")
    for line in serve_table(serve):
        print(line)


def serve_table(serve: dict[str, Any]) -> list[str]:
    """Rows of requests/s, share of the engine, latency, p95 against one client's p50, and the plain way's."""
    lines = ["| clients | tlearn serve | share of the engine | p50 / p95 | p95 / one client's p50 (the least "
             "possible) | the plain way | p50 / p95 plain | ratio |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r, p in zip(serve["clients"], serve["plain"], strict=True):
        least = f" ({r['least_latency_ratio']:.1f}x)" if r.get("least_latency_ratio") else ""
        lines.append(f"| {r['clients']} | {r['requests_per_second']:.1f} req/s | {r['share_of_engine']:.0%} | "
                     f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms | {r['p95_over_single']:.1f}x{least} | "
                     f"{p['requests_per_second']:.1f} req/s | {p['p50_ms']:.0f} / {p['p95_ms']:.0f} ms | "
                     f"{r['requests_per_second'] / p['requests_per_second']:.1f}x |")  # fmt: skip
    ours, plain = serve["clients"][-1].get("accuracy"), serve["plain"][-1].get("accuracy")
    lines += ["", f"The feature-method bundle ({serve['bundle']}), one {serve['photo']} per request; the engine "
              f"alone {serve['engine_best']['images_per_second']:.0f} img/s at its best "
              f"(passes of {serve['engine_best']['batch']}), {_bound(serve)}; accuracy on the "
              f"{serve['accuracy_photos']} test photos sent by {serve['clients'][-1]['clients']} clients: tlearn "
              f"{_acc(ours)}, the plain way {_acc(plain)}. "
              f"Measured on {serve['machine']} ({serve['date']})."]  # fmt: skip
    return lines


def _bound(serve: dict[str, Any]) -> str:
    """What bounds the share on this machine: the engine's CPU per image against the photo's decoding."""
    if "most_share_possible" not in serve:  # a run before the bound was measured
        return "the bound not measured"
    engine = serve["engine_cpu_ms_per_image"][str(serve["engine_best"]["batch"])]
    share = serve["most_share_possible"]
    return (f"{engine:.0f} ms of CPU per image there, and decoding the photo {serve['decode_cpu_ms']:.0f} ms on "
            f"the same cores: no server on this machine passes {share:.0%} of the engine")  # fmt: skip


def _acc(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def _secs(v: float | None) -> str:
    return "" if v is None else f"{v:.1f} s"


def _ratio(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}x"


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(f"{'stage':<44} {'plain':>8} {'tlearn':>8} {'ratio':>7} {'acc plain':>10} {'acc tlearn':>11}")
    for r in rows:
        print(f"{r['stage']:<44} {_secs(r['plain_s']):>8} {_secs(r['tlearn_s']):>8} {_ratio(r['ratio']):>7} "
              f"{_acc(r['plain_acc']):>10} {_acc(r['tlearn_acc']):>11}")  # fmt: skip
    for r in rows:
        print(f"  {r['stage']}: {r['note']} [{r.get('machine', '?')}, {r.get('date', '?')}]")


def tables(doc: dict[str, Any]) -> tuple[str, str, str]:
    """README's three tables: every stage against the plain way, prediction against the engine alone, and
    serving (a note that it has not run, before it has)."""
    lines = ["| stage | plain | tlearn | ratio | accuracy plain | accuracy tlearn |", "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['stage']} | {_secs(r['plain_s'])} | {_secs(r['tlearn_s'])} | {_ratio(r['ratio'])} | "
                     f"{_acc(r['plain_acc'])} | {_acc(r['tlearn_acc'])} |")  # fmt: skip
    machines = sorted({f"{r.get('machine', 'an earlier run')} ({r.get('date', 'date not kept')})" for r in doc["rows"]})
    lines += ["", "Measured on " + "; ".join(machines) + "."]
    pred = ["| bundle | engine alone | end to end | share of the engine | the plain way | ratio | accuracy plain | "
            "accuracy tlearn |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in doc["rows"]:
        m = r.get("predict")
        if m:
            name = r["stage"].split(", ", 1)[1]
            int8 = ", int8" if m.get("precision") == "int8" else ""
            setting = f"{m['size'][0]} px{', mirror' if m['mirror'] else ''}{int8}"
            pred.append(f"| {name} ({setting}) | {m['engine_ips']:.0f} img/s | {m['e2e_ips']:.0f} img/s | "
                        f"{m['share']:.0%} | {m['plain_ips']:.0f} img/s | {m['ratio']:.1f}x | {_acc(m['plain_acc'])} | "
                        f"{_acc(m['acc'])} |")  # fmt: skip
    serve = serve_table(doc["serve"]) if "serve" in doc else ["(not measured yet: `--stages serve`)"]
    return "\n".join(lines), "\n".join(pred), "\n".join(serve)


def write_tables(doc: dict[str, Any], readme: Path) -> None:
    """Replace the text between each pair of markers in README.md by its table."""
    text = readme.read_text(encoding="utf-8")
    marks = ((TABLE_START, TABLE_END), (PREDICT_START, PREDICT_END), (SERVE_START, SERVE_END))
    for (start, end), table in zip(marks, tables(doc), strict=True):
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n{table}\n{end}{after}"
    readme.write_text(text, encoding="utf-8")
    print(f"wrote the tables of {readme}")


if __name__ == "__main__":
    main()
