"""Where a `tlearn` command's time goes: wall seconds inside named library functions, in one process.

    python -m benchmarks.stage_times OUT.json -- train demo      # any tlearn command line after --

Each function in STEPS is wrapped (in its module and wherever it was imported by name) to add up the
seconds spent inside it; nested steps are counted in their parents too (the extraction is inside
auto's probe pass). Imports are timed as one step, before the command runs. No profiler runs, so the
figures are the command's own ("imports": the library's modules, before the command starts; what the
command imports later is in "command" but in no step): compare them within one session, the machine's load moves them.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# step name: the function, in the order a run calls them
STEPS = {
    "run": "tlearn.training.run:run",
    "decode": "tlearn.data.scan:scan_images",
    "auto: probe pass (the features)": "tlearn.training.auto:probe_pass",
    "auto measuring": "tlearn.training.auto:measure",
    "extraction (network)": "tlearn.training.features:extract_features",
    "linear fits (probes, head CV)": "tlearn.training.linear:fit_linear",
    "fine-tuning timing": "tlearn.training.costs:finetune_estimates",
    "feature method": "tlearn.training.feature_method:fit_feature_method",
    "calibration": "tlearn.training.calibrate:calibrated",
    "unknown answer": "tlearn.training.unknown:with_unknown",
    "unknown: validation pass": "tlearn.training.unknown:predicted_outputs",
    "label check": "tlearn.training.label_issues:check_images",
    "predictions.csv": "tlearn.training.run:_write_predictions",
    "bundle": "tlearn.artifacts.bundle:save_bundle",
    "report": "tlearn.report.page:write_report",
    "report: heatmaps": "tlearn.report.heatmaps:heatmap_tiles",
    "report: pictures": "tlearn.report.page:draw_pictures",
    "report: model card": "tlearn.report.page:write_model_card",
    "ONNX export": "tlearn.core.onnx:to_onnx",
}


@contextmanager
def timed(steps: dict[str, str] = STEPS) -> Iterator[dict[str, float]]:
    """Seconds per step while the block runs (a step never called is absent)."""
    seconds: dict[str, float] = {}
    swaps: dict[Any, Any] = {}
    for name, spec in steps.items():
        module, attr = spec.split(":")
        original = getattr(importlib.import_module(module), attr)
        swaps[original] = _wrapped(original, name, seconds)
    patched = []
    for mod in list(sys.modules.values()):
        if not getattr(mod, "__name__", "").startswith("tlearn"):
            continue
        for attr, value in list(vars(mod).items()):
            if callable(value) and value in swaps:
                setattr(mod, attr, swaps[value])
                patched.append((mod, attr, value))
    try:
        yield seconds
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)


def _wrapped(fn: Callable[..., Any], name: str, seconds: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def main() -> None:
    out, args = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1 :]
    start = time.perf_counter()
    import tlearn.cli
    from tlearn.cli.heap import long_lived

    with long_lived():  # as the command imports them (see tlearn/cli/heap.py)
        for spec in STEPS.values():
            importlib.import_module(spec.split(":")[0])
    with timed() as seconds:  # the steps' modules: most of what the command would import
        imports = time.perf_counter() - start
        sys.argv = ["tlearn", *args]
        t = time.perf_counter()
        try:
            tlearn.cli.main()
        except SystemExit as stop:
            if stop.code:
                raise
        seconds["command"] = time.perf_counter() - t
    seconds["imports"] = imports
    out.write_text(json.dumps(seconds, indent=1))


if __name__ == "__main__":
    main()
