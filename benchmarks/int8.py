"""int8 against float on a bundle's own images, as `tlearn export --int8 auto` quantizes and chooses, in one process.

    nice -n 19 flock /tmp/tlearn-heavy.lock python -m benchmarks.int8 BUNDLE [BUNDLE ...] [--per-tensor]

For each bundle (its dataset must be where it was trained): the bundle's ONNX model with one more
output, the pooled features of the image, quantized by tlearn's own `quantize_int8` on its own
calibration images; then on the test split, float against int8: top-1 accuracy, the share of images
whose class is unchanged, the cosine of the features, the share whose "unknown" answer is unchanged;
the engine alone (ONNX Runtime on inputs decoded beforehand, the two in turn, ENGINE_ROUNDS rounds,
the fastest of each), and what `--int8 auto` chooses from the validation split. `--per-tensor` adds
the same with one scale per weight tensor, for comparison. Prints a table, writes
benchmarks/results/int8.json.

    nice -n 19 flock /tmp/tlearn-heavy.lock python -m benchmarks.int8 BUNDLE --sweep [SETTING ...]

compares quantization settings (SWEEP, or the ones given as "name=value ..." over the default
QuantSettings) on the first bundle: validation and test accuracy, the share of answers unchanged,
the features' cosine, and each int8 model's engine speed against float's, timed in turn in its row
(ratios only compare within one run on a shared machine). Writes benchmarks/results/int8_sweep.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEATURES = "features"
ENGINE_IMAGES, ENGINE_ROUNDS = 64, 5


def with_features(model: bytes) -> bytes:
    """`model` with the input of its first Gemm (the head on the image's pooled features) as an output too."""
    import onnx

    m = onnx.load_from_string(model)
    head = next(n for n in m.graph.node if n.op_type == "Gemm")
    m.graph.node.append(onnx.helper.make_node("Identity", [head.input[0]], [FEATURES]))
    m.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
    return m.SerializeToString()


def outputs(session: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Probabilities, unknown flags (None without) and features of model inputs x, 8 at a time."""
    names = [o.name for o in session.get_outputs()]
    wanted = ["probabilities", *(["unknown"] if "unknown" in names else []), FEATURES]
    parts = [session.run(wanted, {"image": x[s : s + 8]}) for s in range(0, len(x), 8)]
    cat = [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]
    return cat[0], cat[1] if len(cat) == 3 else None, cat[-1]


def engine_speeds(a: Any, b: Any, x: np.ndarray) -> tuple[float, float]:
    """Images per second of sessions a and b on x, in turn, ENGINE_ROUNDS rounds, the fastest of each."""
    best = [float("inf")] * 2
    for s in (a, b):
        s.run(None, {"image": x[:8]})
    for _ in range(ENGINE_ROUNDS):
        for i, s in enumerate((a, b)):
            start = time.perf_counter()
            for k in range(0, len(x), 8):
                s.run(None, {"image": x[k : k + 8]})
            best[i] = min(best[i], time.perf_counter() - start)
    return len(x) / best[0], len(x) / best[1]


def measure(bundle: Path, *, per_channel: bool) -> dict[str, Any]:
    from tlearn.core.progress import no_progress
    from tlearn.infer.bundle_images import labelled_splits, model_inputs
    from tlearn.infer.int8 import (
        DEFAULT_SETTINGS,
        calibration_batches,
        calibration_paths,
        int8_report,
        quantize_int8,
    )
    from tlearn.infer.int8_choice import choose_int8
    from tlearn.infer.load import load
    from tlearn.infer.onnx_graph import bundle_to_onnx
    from tlearn.infer.onnx_predictor import OnnxPredictor

    predictor = load(bundle, engine="torch")
    splits = labelled_splits(bundle, predictor.config)
    if isinstance(splits, str):
        raise SystemExit(f"{bundle}: {splits}")
    model = with_features(bundle_to_onnx(predictor))  # type: ignore[arg-type]
    settings = replace(DEFAULT_SETTINGS, per_channel=per_channel)
    calibration = calibration_paths(splits, settings.images)
    start = time.perf_counter()
    quantized, _ = quantize_int8(
        model, calibration_batches(predictor, calibration, "float", no_progress), settings=settings
    )
    quantize_s = time.perf_counter() - start
    before, after = OnnxPredictor(model, predictor.config), OnnxPredictor(quantized, predictor.config)
    report = int8_report(splits, before, after, method="static", calibration_images=len(calibration),
                         sizes=(len(model), len(quantized)), progress=no_progress)  # fmt: skip
    choice = choose_int8(report, "auto")
    paths, y = splits["test"]
    x = model_inputs(predictor, paths)
    (p0, u0, f0), (p1, u1, f1) = outputs(before.sessions.calls, x), outputs(after.sessions.calls, x)
    cos = np.sum(f0 * f1, 1) / (np.linalg.norm(f0, axis=1) * np.linalg.norm(f1, axis=1))
    float_ips, int8_ips = engine_speeds(before.sessions.calls, after.sessions.calls, x[:ENGINE_IMAGES])
    config = predictor.config
    return {
        "bundle": str(bundle),
        "method": config.method,
        "backbone": config.backbone,
        "size": list(config.preprocessing.input_size),
        "mirror": config.flip_tta,
        "per_channel": per_channel,
        "calibration_images": len(calibration),
        "quantize_s": quantize_s,
        "float_mb": len(model) / 1e6,
        "int8_mb": len(quantized) / 1e6,
        "test_images": len(y),
        "test_float": float((p0.argmax(1) == y).mean()),
        "test_int8": float((p1.argmax(1) == y).mean()),
        "agreement": float((p0.argmax(1) == p1.argmax(1)).mean()),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "unknown_agreement": None if u0 is None or u1 is None else float((u0 == u1).mean()),
        "float_ips": float_ips,
        "int8_ips": int8_ips,
        "speedup": int8_ips / float_ips,
        "val_images": report.n,
        "val_float": report.accuracy_float,
        "val_int8": report.accuracy_int8,
        "val_speedup": report.speedup,
        "auto_uses_int8": choice.use,
        "auto_reason": choice.reason,
    }


# The settings compared by --sweep (README, "int8"): "name=value ..." over tlearn's default
# QuantSettings (min / max over 64 images, the tail float, shape arithmetic folded); the first is the
# previous default, the rest change one or two things.
PREVIOUS = "fold_shapes=false float_tail=false images=256"
SWEEP = (
    PREVIOUS,
    "float_tail=false images=256",
    "images=256",
    "images=256 float_ends=true",
    "images=32",
    "",
    "images=128",
    "images=32 float_ends=true",
    "images=32 calibration=percentile percentile=99.999",
    "images=32 calibration=percentile percentile=99.99",
    "images=32 calibration=entropy",
    "calibration=percentile percentile=99.999",
    f"{PREVIOUS} float_ends=true",
    f"{PREVIOUS} symmetric_activations=true",
    f"{PREVIOUS} activations=int8",
    f"{PREVIOUS} symmetric_weights=false",
    f"{PREVIOUS} reduce_range=true",
    f"{PREVIOUS} per_channel=false",
    f"{PREVIOUS} images=512",
)


def parse_setting(spec: str) -> Any:
    """QuantSettings from "name=value ..." (values true/false, numbers or words), over tlearn's default."""
    from tlearn.infer.int8 import DEFAULT_SETTINGS

    fields = {f.name: f for f in dataclasses.fields(DEFAULT_SETTINGS)}
    changes: dict[str, Any] = {}
    for item in spec.split():
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"{spec!r}: {name!r} is not one of {', '.join(fields)}")
        default = getattr(DEFAULT_SETTINGS, name)
        flag = isinstance(default, bool) or (default is None and name == "reduce_range")  # None: by the CPU
        changes[name] = value.lower() in ("1", "true", "yes") if flag else type(default)(value)
    return replace(DEFAULT_SETTINGS, **changes)


def sweep(bundle: Path, specs: list[str]) -> list[dict[str, Any]]:
    """Each setting of `specs` on one bundle, in one process: validation and test accuracy, agreement and
    feature cosine against float, and the engine's speed against float's, measured in turn for each row.
    The images are decoded once; the float model's answers computed once."""
    from tlearn.infer.bundle_images import labelled_splits, model_inputs
    from tlearn.infer.int8 import calibration_paths, quantize_int8
    from tlearn.infer.load import load
    from tlearn.infer.onnx_graph import bundle_to_onnx
    from tlearn.infer.onnx_predictor import OnnxPredictor

    predictor = load(bundle, engine="torch")
    splits = labelled_splits(bundle, predictor.config)
    if isinstance(splits, str):
        raise SystemExit(f"{bundle}: {splits}")
    model = with_features(bundle_to_onnx(predictor))  # type: ignore[arg-type]
    before = OnnxPredictor(model, predictor.config).sessions.calls
    parts = {p: (model_inputs(predictor, splits[p][0]), splits[p][1]) for p in ("val", "test")}
    floats = {p: outputs(before, x) for p, (x, _) in parts.items()}
    calibration: dict[int, np.ndarray] = {}
    rows = []
    for spec in specs:
        settings = parse_setting(spec)
        if settings.images not in calibration:
            calibration[settings.images] = model_inputs(predictor, calibration_paths(splits, settings.images))
        cal = calibration[settings.images]
        start = time.perf_counter()
        quantized, _ = quantize_int8(model, (cal[s : s + 16] for s in range(0, len(cal), 16)), settings=settings)
        quantize_s = time.perf_counter() - start
        after = OnnxPredictor(quantized, predictor.config).sessions.calls
        row: dict[str, Any] = {"setting": spec or "default", "settings": dataclasses.asdict(settings),
                               "calibration_images": len(cal), "quantize_s": quantize_s,
                               "int8_mb": len(quantized) / 1e6}  # fmt: skip
        for p, (x, y) in parts.items():
            (p0, u0, f0), (p1, u1, f1) = floats[p], outputs(after, x)
            cos = np.sum(f0 * f1, 1) / (np.linalg.norm(f0, axis=1) * np.linalg.norm(f1, axis=1))
            row |= {f"{p}_images": len(y), f"{p}_float": float((p0.argmax(1) == y).mean()),
                    f"{p}_int8": float((p1.argmax(1) == y).mean()),
                    f"{p}_agreement": float((p0.argmax(1) == p1.argmax(1)).mean()),
                    f"{p}_cosine_mean": float(cos.mean()), f"{p}_cosine_min": float(cos.min()),
                    f"{p}_unknown_agreement": None if u0 is None or u1 is None else float((u0 == u1).mean()),
                    }  # fmt: skip
        float_ips, int8_ips = engine_speeds(before, after, parts["test"][0][:ENGINE_IMAGES])
        row |= {"float_ips": float_ips, "int8_ips": int8_ips, "speedup": int8_ips / float_ips}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def print_sweep(rows: list[dict[str, Any]]) -> None:
    head = f"{'setting':<44} {'val float':>9} {'val int8':>8} {'test float':>10} {'test int8':>9} {'same':>6} "
    print("\n" + head + f"{'cos mean':>8} {'cos min':>8} {'ratio':>6}")
    for r in rows:
        same = (r["val_agreement"] * r["val_images"] + r["test_agreement"] * r["test_images"]) / (
            r["val_images"] + r["test_images"]
        )
        print(f"{r['setting']:<44} {r['val_float']:>9.1%} {r['val_int8']:>8.1%} {r['test_float']:>10.1%} "
              f"{r['test_int8']:>9.1%} {same:>6.1%} {r['test_cosine_mean']:>8.4f} {r['test_cosine_min']:>8.4f} "
              f"{r['speedup']:>5.2f}x")  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'bundle':<28} {'weights':<12} {'test float':>10} {'test int8':>9} {'same':>7} {'cos mean':>8} "
    print("\n" + head + f"{'cos min':>8} {'float':>7} {'int8':>7} {'ratio':>6}  auto")
    for r in rows:
        name = f"{Path(r['bundle']).name} ({r['size'][0]} px{', mirror' if r['mirror'] else ''})"
        print(f"{name:<28} {'per-channel' if r['per_channel'] else 'per-tensor':<12} {r['test_float']:>10.1%} "
              f"{r['test_int8']:>9.1%} {r['agreement']:>7.1%} {r['cosine_mean']:>8.4f} {r['cosine_min']:>8.4f} "
              f"{r['float_ips']:>7.0f} {r['int8_ips']:>7.0f} {r['speedup']:>5.2f}x  "
              f"{'int8' if r['auto_uses_int8'] else 'float'}")  # fmt: skip
    for r in rows:
        print(f"  {Path(r['bundle']).name}, {'per-channel' if r['per_channel'] else 'per-tensor'}: {r['auto_reason']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--per-tensor", action="store_true", help="also quantize with one scale per weight tensor")
    parser.add_argument(
        "--sweep",
        nargs="*",
        metavar="SETTING",
        help="compare quantization settings on the first bundle (none given: the built-in list)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "int8.json")
    args = parser.parse_args()
    from benchmarks.machine import machine

    if args.sweep is not None:
        rows = sweep(args.bundles[0], args.sweep or list(SWEEP))
        where = {"machine": machine(), "date": datetime.date.today().isoformat(), "bundle": str(args.bundles[0])}
        out = args.json.with_name("int8_sweep.json") if args.json.name == "int8.json" else args.json
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**where, "rows": rows}, indent=1))
        print_sweep(rows)
        print(f"\n{where['machine']}, {where['date']}; wrote {out}")
        return

    rows = []
    for bundle in args.bundles:
        for per_channel in (True, False) if args.per_tensor else (True,):
            rows.append(measure(bundle, per_channel=per_channel))
            print(json.dumps(rows[-1]), flush=True)
    where = {"machine": machine(), "date": datetime.date.today().isoformat()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**where, "rows": rows}, indent=1))
    print_table(rows)
    print(f"\n{where['machine']}, {where['date']}; wrote {args.json}")


if __name__ == "__main__":
    main()
