"""`tlearn compare`: every method on the same images, to show on the user's own data what transfer buys.

`compare(data, methods=...)` trains each method with the same options (only the method differs), each
into its own bundle `out/<method>/`. The split the first run saves is handed to the others
(`split_file`), so every method is scored on exactly the same test images. A method that fails is
recorded with its error and the others still run; Ctrl-C stops after the method it interrupts. The
result is written as `out/compare.json` and drawn as `out/compare.png` (validation accuracy per epoch
of every method on one chart).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlearn.artifacts.bundle import SPLIT_FILE, load_bundle
from tlearn.artifacts.details import MethodDetails
from tlearn.artifacts.history import HISTORY_FILE, HistoryRow, read_history
from tlearn.artifacts.metrics import Metrics
from tlearn.core.errors import BackboneError, ConfigError, FileSystemError, Interrupted, OutputError, TlearnError
from tlearn.core.files import write_json_atomic
from tlearn.core.progress import Progress, no_progress
from tlearn.training.config import METHODS, TrainConfig
from tlearn.training.run import EpochCallback, TrainResult, run
from tlearn.training.run_folder import check_free, check_place, is_run_folder

if TYPE_CHECKING:
    from tlearn.report.plots import MethodCurve  # matplotlib loads only when a chart is drawn

log = logging.getLogger(__name__)

COMPARE_JSON = "compare.json"
COMPARE_PLOT = "compare.png"
DEFAULT_METHODS: tuple[str, ...] = ("features", "finetune", "scratch")


@dataclass(frozen=True)
class MethodRun:
    """One method of a comparison: its result and what it cost, or why it failed."""

    method: str  # as asked ("auto" stays "auto"; `result.method` says what it ran)
    out: Path  # its bundle folder
    seconds: float  # wall time of the whole run: reading images, training, evaluating, saving
    result: TrainResult | None = None  # None when the method failed
    error: str | None = None
    interrupted: bool = False  # Ctrl-C during this method (a bundle of the best epoch may still be there)
    trained_parameters: int | None = None  # see `count_parameters`
    total_parameters: int | None = None
    history: tuple[HistoryRow, ...] = ()  # one row per epoch; empty for methods that do not train in epochs

    @property
    def ok(self) -> bool:
        return self.result is not None

    def metrics(self, part: str | None) -> Metrics | None:
        if self.result is None or part is None:
            return None
        return self.result.metrics.get(part)

    @property
    def label(self) -> str:
        """The method, and what it ran when that differs ("auto (finetune)")."""
        ran = self.result.method if self.result is not None else self.method
        return self.method if ran == self.method else f"{self.method} ({ran})"

    @property
    def val_accuracy(self) -> float | None:
        """The final model's validation accuracy (what the chart draws for a method without epochs)."""
        m = self.metrics("val")
        return None if m is None else m.accuracy

    def to_dict(self, part: str | None, root: Path) -> dict[str, Any]:
        m = self.metrics(part)
        return {
            "method": self.method,
            "ran": self.result.method if self.result is not None else None,
            "ok": self.ok,
            "error": self.error,
            "interrupted": self.interrupted,
            "bundle": _relative(self.out, root) if self.ok else None,
            "scored_on": part if m is not None else None,
            "images": m.n if m is not None else None,
            "accuracy": m.accuracy if m is not None else None,
            "balanced_accuracy": m.balanced_accuracy if m is not None else None,
            "macro_f1": m.macro_f1 if m is not None else None,
            "val_accuracy": self.val_accuracy,
            "seconds": round(self.seconds, 2),
            "trained_parameters": self.trained_parameters,
            "total_parameters": self.total_parameters,
            "epochs_run": len(self.history),
            "history": [
                {"epoch": r.epoch, "phase": r.phase, "train_acc": r.train_acc, "val_acc": r.val_acc, "best": r.best}
                for r in self.history
            ],
        }


@dataclass(frozen=True)
class Comparison:
    """The methods side by side, and where their files went."""

    data: Path
    out: Path  # holds compare.json, compare.png and one bundle folder per method
    runs: tuple[MethodRun, ...]
    part: str | None  # "test", or "val" when the split has no test part; None when every method failed
    split_file: Path | None  # the split every method was scored on
    plot: Path | None  # None when no method succeeded
    skipped: tuple[str, ...] = ()  # methods not run because Ctrl-C stopped the comparison

    @property
    def json(self) -> Path:
        return self.out / COMPARE_JSON

    @property
    def ok(self) -> bool:
        """At least one method succeeded."""
        return any(r.ok for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        first = next((r.result for r in self.runs if r.result is not None), None)
        return {
            "data": str(Path(self.data).resolve()),
            "classes": list(first.classes) if first is not None else None,
            "split_counts": first.split_counts if first is not None else None,
            "split_file": _relative(self.split_file, self.out) if self.split_file is not None else None,
            "scored_on": self.part,
            "plot": _relative(self.plot, self.out) if self.plot is not None else None,
            "skipped": list(self.skipped),
            "methods": {r.method: r.to_dict(self.part, self.out) for r in self.runs},
        }


def compare(
    data: str | Path,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    out: str | Path | None = None,
    progress: Progress = no_progress,
    on_epoch_end: EpochCallback | None = None,
    on_method_start: Callable[[str], None] | None = None,
    on_method_end: Callable[[MethodRun], None] | None = None,
    **train_options: Any,
) -> Comparison:
    """Train each of `methods` on `data` with the same `train_options` (TrainConfig fields) and compare.

    Options, the dataset's path, the backbone's name and weights file are checked before any work, so a typo
    fails in a second, not after the methods that do not need it have trained. Every method is scored on the
    same split: the one in `split_file` if given, else the one the first run saves. `out` defaults to
    a new folder `runs/<data name>-compare`; one that holds an earlier comparison, or a bundle of one of
    `methods`, is refused before any work unless `overwrite=True`. `on_method_start(method)` and
    `on_method_end(run)` frame each method's progress and epochs for a caller that shows them.
    """
    methods = check_methods(methods)
    if "method" in train_options:
        raise ConfigError("compare runs several methods: pass them as methods=..., not method=.")
    base = TrainConfig(data=Path(data), method=methods[0], **train_options)  # raises ConfigError on bad options
    for method in methods[1:]:
        replace(base, method=method)  # options that do not fit one of the methods (--epochs 0 from scratch)
    _check_before_work(base, methods)
    root = _out_dir(Path(data), out, methods=methods, overwrite=base.overwrite)
    split_file = base.split_file
    runs: list[MethodRun] = []
    skipped: tuple[str, ...] = ()
    for i, method in enumerate(methods):
        if on_method_start is not None:
            on_method_start(method)
        cfg = replace(base, method=method, out=root / method, split_file=split_file)
        one = _run_method(cfg, root / method, progress=progress, on_epoch_end=on_epoch_end)
        runs.append(one)
        if on_method_end is not None:
            on_method_end(one)
        if split_file is None and (root / method / SPLIT_FILE).is_file():
            split_file = root / method / SPLIT_FILE
        if one.interrupted:
            skipped = methods[i + 1 :]
            break
    part = next((r.result.headline[0] for r in runs if r.result is not None and r.result.headline), None)
    plot = _plot(runs, root / COMPARE_PLOT, data=Path(data), part=part) if any(r.ok for r in runs) else None
    comparison = Comparison(Path(data), root, tuple(runs), part, split_file, plot, skipped)
    write_json_atomic(comparison.json, comparison.to_dict())
    return comparison


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods in the order given, each once. Raises ConfigError naming the unknown ones."""
    if isinstance(methods, str):
        methods = [methods]
    chosen = tuple(dict.fromkeys(m.strip() for m in methods if m.strip()))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        got = ", ".join(unknown) if unknown else "nothing"
        raise ConfigError(f"--methods takes a comma-separated list of {', '.join(METHODS)}. Got {got}.")
    return chosen


def _check_before_work(cfg: TrainConfig, methods: Sequence[str]) -> None:
    """Raise now what would make every method (or every pretrained one) fail: no dataset, an unknown
    backbone, a missing weights file. Cheap checks only: building the backbone is each run's job."""
    from tlearn.data.sources import load_dataset
    from tlearn.models.backbones import check_model_name

    load_dataset(cfg.data)
    if all(m == "scratch" for m in methods):
        return  # the from-scratch CNN uses neither --backbone nor --weights
    if cfg.backbone is not None:
        check_model_name(cfg.backbone)
    if cfg.weights is not None and cfg.weights.lower() != "none" and not Path(cfg.weights).expanduser().is_file():
        raise BackboneError(
            f"Weights file not found: {cfg.weights}.",
            hint="Pass the path of a .safetensors or .pth file, 'none' for random init, or leave --weights out.",
        )


def count_parameters(bundle: Path) -> tuple[int, int]:
    """(parameters the method trained, parameters in the whole network) of a bundle.

    What counts as trained: the head always (for the feature method, the linear layer scikit-learn
    fitted: its weights and biases); plus the backbone stages the run unfroze (the bundle's
    `details["unfrozen"]`, phase 2 of fine-tuning; each stage counts whole, BatchNorm scale and shift
    included); from scratch, every parameter. Frozen parameters and buffers (BatchNorm running
    statistics, the normalisation constants) do not count.
    """
    classifier, config = load_bundle(bundle)
    total = sum(p.numel() for p in classifier.parameters())
    if config.method == "scratch":
        return total, total
    from tlearn.models.backbones import model_stages

    backbone = classifier.trunk.backbone
    done = MethodDetails.from_dict(config.details).epochs
    unfrozen = set(done.unfrozen if done is not None else ())
    names = {n for s in model_stages(backbone) if s.name in unfrozen for n in s.params}
    stages = sum(p.numel() for n, p in backbone.named_parameters() if n in names)
    return sum(p.numel() for p in classifier.head.parameters()) + stages, total


def _run_method(cfg: TrainConfig, out: Path, *, progress: Progress, on_epoch_end: EpochCallback | None) -> MethodRun:
    """Train one method into `out`; any failure becomes the run's `error`, so the next method still runs."""
    start = time.perf_counter()
    try:
        result = run(cfg, progress=progress, on_epoch_end=on_epoch_end)
        seconds = time.perf_counter() - start
        trained, total = count_parameters(result.out)
        history = tuple(read_history(result.out / HISTORY_FILE))
    except KeyboardInterrupt:
        return MethodRun(cfg.method, out, time.perf_counter() - start, error="Interrupted.", interrupted=True)
    except TlearnError as err:
        interrupted = isinstance(err, Interrupted)  # training.run's word for Ctrl-C outside the epochs
        log.debug("--method %s failed.", cfg.method, exc_info=True)
        error = f"{err.message} {err.hint}" if err.hint else err.message
        return MethodRun(cfg.method, out, time.perf_counter() - start, error=error, interrupted=interrupted)
    except Exception as err:  # a bug in one method must not lose the others' results
        log.debug("--method %s failed.", cfg.method, exc_info=True)
        error = f"Unexpected error: {type(err).__name__}: {err}. This is a bug in tlearn (TLEARN_DEBUG=1 shows it)."
        return MethodRun(cfg.method, out, time.perf_counter() - start, error=error)
    return MethodRun(
        cfg.method, result.out, seconds, result=result, interrupted=bool(result.details.interrupted),
        trained_parameters=trained, total_parameters=total, history=history,
    )  # fmt: skip


def _plot(runs: Sequence[MethodRun], path: Path, *, data: Path, part: str | None) -> Path:
    from tlearn.report.plots import plot_comparison

    curves = [method_curve(r, part) for r in runs]
    first = next(r.result for r in runs if r.result is not None)
    scored = first.metrics.get(part) if part is not None else None
    return plot_comparison(
        curves, path, title=f"{_data_name(data)}: validation accuracy per epoch", score_part=part or "test",
        scored_images=scored.n if scored is not None else None, chance=1 / len(first.classes),
    )  # fmt: skip


def method_curve(run: MethodRun, part: str | None) -> MethodCurve:
    """What the chart draws for one method: its epochs, or its validation accuracy as a level when its
    model did not come from epochs (the feature method, and auto when it tried fine-tuning and kept the
    features: that history is of a model the bundle does not hold)."""
    from tlearn.report.plots import MethodCurve

    m = run.metrics(part)
    epochs = run.history if run.result is None or run.result.method != "features" else ()
    return MethodCurve(
        label=run.label,
        rows=epochs,
        level=None if epochs else run.val_accuracy,
        score=m.accuracy if m is not None else None,
        note="failed" if not run.ok else "",
    )


def _out_dir(data: Path, out: str | Path | None, *, methods: Sequence[str], overwrite: bool) -> Path:
    """`out`, or a new folder runs/<data name>-compare (-2, -3... when taken), created.

    Raises OutputError, before any work, when `out` holds an earlier comparison or a bundle of one of
    `methods` (unless `overwrite`), is a training run's bundle, is a file, or is inside the dataset.
    """
    if out is not None:
        folder = Path(out).expanduser()
        check_place(folder, data=data)
        if is_run_folder(folder):
            raise OutputError(
                f"--out {folder} is the bundle of a training run, not a comparison folder.",
                hint="Pass another --out for the comparison.",
            )
        if (folder / COMPARE_JSON).exists() and not overwrite:
            raise OutputError(
                f"--out {folder} already holds a comparison ({COMPARE_JSON}).",
                hint="Pass --overwrite to replace it, or another --out.",
            )
        for method in methods:
            check_free(folder / method, overwrite=overwrite, name=str(folder / method), can_resume=False)
    else:
        base = Path("runs") / f"{_data_name(data)}-compare"
        check_place(base, data=data, name="The default comparison folder runs/")
        folder, n = base, 2
        while folder.exists():
            folder, n = base.with_name(f"{base.name}-{n}"), n + 1
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        known = FileSystemError.from_os_error(err)
        if known is None:
            raise
        raise OutputError(f"Cannot create the comparison folder {folder}: {err.strerror}.", hint=known.hint) from None
    return folder


def _data_name(data: Path) -> str:
    """What users call the dataset: the folder's name, or the CSV file's stem."""
    return (data.resolve().name if data.is_dir() else data.stem) or "data"


def _relative(path: Path, root: Path) -> str:
    """A path inside the comparison folder as seen from it (the folder can move); others as given."""
    path, root = Path(path), Path(root)
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
