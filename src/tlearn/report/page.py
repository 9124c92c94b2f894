"""report.html: one self-contained page per run that shows how good the model is and why.

`write_report(run_dir)` reads what the run saved (tlearn.json, check.json, split.json,
predictions.csv, history.csv), draws the pictures into `run_dir/plots/` and writes `report.html`
with those PNGs embedded as base64, so the file can be mailed or archived alone. Every part is
optional except tlearn.json: a feature run has no curves, a run without a test part is reported on
validation, a run whose dataset has moved shows grey tiles for the mistakes.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlearn.artifacts.metrics import Metrics
from tlearn.artifacts.predictions import PredictionRow, read_predictions, worst_mistakes
from tlearn.core.errors import BundleError
from tlearn.core.files import read_json, read_json_object, write_text_atomic
from tlearn.report.diagnosis import Diagnosis, HistoryRow, diagnose, kept_epochs, read_history

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
MISTAKES_SHOWN = 12  # tiles in the mistakes grid; the table under it lists up to MISTAKES_LISTED
MISTAKES_LISTED = 100
DUPLICATES_LISTED = 50
FLAG = re.compile(r"--[a-z][a-z0-9-]*(?: (?!or\b|and\b)[\w.+-]*\w)?")  # "--preset strong" in advice, set as code
PINNED = ("tlearn", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow")  # keys of versions
PICTURE_FILES = frozenset(
    {"class_counts.png", "curves.png", "confusion.png", "confusion_normalised.png", "mistakes.jpg", "mistakes.png"}
)
SECTIONS = {
    "dataset": "Dataset",
    "split": "Split",
    "method": "Method",
    "curves": "Training curves",
    "diagnosis": "Diagnosis",
    "metrics": "Metrics",
    "confusion": "Confusion matrix",
    "mistakes": "Mistakes",
    "reproduce": "Reproduce",
}


@dataclass(frozen=True)
class Run:
    """What a run folder holds, read once. Only `config` (tlearn.json) is required."""

    folder: Path
    config: dict[str, Any]
    check: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    predictions: list[PredictionRow] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Metrics]:
        return {part: Metrics.from_dict(d) for part, d in self.config.get("metrics", {}).items()}

    @property
    def headline(self) -> str | None:
        """The part to quote: test when there is one, else validation."""
        return next((p for p in ("test", "val") if p in self.config.get("metrics", {})), None)

    @property
    def data(self) -> Path | None:
        return Path(self.config["data"]) if self.config.get("data") else None


def write_report(run_dir: str | Path) -> Path:
    """Draw the pictures into `run_dir/plots/` and write `run_dir/report.html`; returns its path.

    Raises BundleError when `run_dir` has no tlearn.json. Rebuilding is safe: files are replaced atomically.
    """
    run = read_run(run_dir)
    pictures = draw_pictures(run, run.folder / PLOTS_DIR)
    path = run.folder / REPORT_FILE
    write_text_atomic(path, render_html(run, pictures))
    return path


def read_run(run_dir: str | Path) -> Run:
    folder = Path(run_dir).expanduser()
    config_path = folder / "tlearn.json"
    if not config_path.is_file():
        raise BundleError(
            f"{folder} is not a run folder: it has no tlearn.json.",
            hint="Pass the folder that `tlearn train` wrote (--out).",
        )
    try:
        config = read_json(config_path)
    except (OSError, ValueError) as err:
        raise BundleError(f"Cannot read {config_path}: {err}.") from None
    return Run(
        folder=folder,
        config=config,
        check=read_json_object(folder / "check.json"),
        split=read_json_object(folder / "split.json"),
        predictions=read_predictions(folder / "predictions.csv"),
        history=read_history(folder / "history.csv"),
    )


def draw_pictures(run: Run, out: Path) -> dict[str, Path]:
    """The PNGs of the report, by name: counts, curves, confusion, confusion_normalised, mistakes."""
    from tlearn.report.plots import plot_class_counts, plot_confusion, plot_history, plot_mistakes

    pictures: dict[str, Path] = {}
    counts = (run.check or {}).get("counts") or {}
    if counts:
        split_counts = _split_counts(counts, run.predictions)
        pictures["counts"] = plot_class_counts(counts, out / "class_counts.png", split_counts=split_counts)
    if run.history:
        pictures["curves"] = plot_history(run.history, out / "curves.png")
    part = run.headline
    if part is not None:
        confusion, classes = run.metrics[part].confusion, run.config["classes"]
        title = f"Confusion matrix on {part}: image counts"
        pictures["confusion"] = plot_confusion(confusion, classes, out / "confusion.png", title=title)
        title = f"Confusion matrix on {part}: share of each true class"
        pictures["confusion_normalised"] = plot_confusion(
            confusion, classes, out / "confusion_normalised.png", normalise=True, title=title
        )
    mistakes = worst_mistakes(run.predictions, MISTAKES_SHOWN)
    if mistakes:
        # photos: JPEG is a fifth of the PNG's size and quicker to write
        pictures["mistakes"] = plot_mistakes(mistakes, out / "mistakes.jpg", root=run.data)
    for name in PICTURE_FILES - {p.name for p in pictures.values()}:  # from an earlier build, now stale
        (out / name).unlink(missing_ok=True)
    return pictures


def _split_counts(counts: Mapping[str, int], predictions: Sequence[PredictionRow]) -> dict[str, dict[str, int]] | None:
    """Images per class in each part of the run's split: val and test from the predictions, train the rest."""
    scored = Counter((p.split, p.true) for p in predictions)
    present = {p.split for p in predictions}
    parts: dict[str, dict[str, int]] = {
        part: {c: scored[part, c] for c in counts} for part in ("val", "test") if part in present
    }
    train = {c: n - sum(p[c] for p in parts.values()) for c, n in counts.items()}
    if not parts or min(train.values()) < 0:
        return None
    return {"train": train, **parts}


# ---------------------------------------------------------------------------------------------- HTML


def render_html(run: Run, pictures: Mapping[str, Path]) -> str:
    diagnosis = diagnose(run.history)
    body = "\n".join(
        [
            _header(run, diagnosis),
            _section("dataset", _dataset(run, pictures)),
            _section("split", _split(run)),
            _section("method", _method(run)),
            _section("curves", _curves(run, pictures)),
            _section("diagnosis", _diagnosis(run, diagnosis)),
            _section("metrics", _metrics(run)),
            _section("confusion", _confusion(run, pictures)),
            _section("mistakes", _mistakes(run, pictures)),
            _section("reproduce", _reproduce(run)),
        ]
    )
    title = f"tlearn report: {_e(_run_name(run))}"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _header(run: Run, diagnosis: Diagnosis) -> str:
    c = run.config
    part = run.headline
    cards = []
    if part is not None:
        m = run.metrics[part]
        cards += [
            _card(f"{m.accuracy:.1%}", f"{part} accuracy"),
            _card(f"{m.balanced_accuracy:.1%}", "balanced accuracy"),
            _card(f"{m.macro_f1:.3f}", "macro F1"),
            _card(str(m.n), f"{part} images"),
        ]
    cards.append(_card(str(len(c.get("classes", []))), "classes"))
    if diagnosis.verdict != "unknown":
        cards.append(_card(diagnosis.verdict, "diagnosis", css=_verdict_class(diagnosis.verdict)))
    nav = " ".join(f'<a href="#{key}">{name}</a>' for key, name in SECTIONS.items())
    method = c.get("method", "?")
    return (
        f"<header><h1>{_e(_run_name(run))}</h1>\n"
        f'<p class="sub">{_e(method)} method on <b>{_e(c.get("backbone", "?"))}</b>, '
        f"{len(c.get('classes', []))} classes · created {_e(c.get('created', '?'))} · "
        f"run folder <code>{_e(str(run.folder))}</code></p>\n"
        f'<div class="cards">{"".join(cards)}</div>\n<nav>{nav}</nav></header>'
    )


def _dataset(run: Run, pictures: Mapping[str, Path]) -> str:
    check = run.check
    if check is None:
        return '<p class="muted">The run folder holds no check.json, so there is no dataset summary.</p>'
    kinds = {"folders": "one folder per class", "splits": "split folders", "csv": "a CSV file"}
    (w0, w1), (h0, h1) = check.get("width_range", [0, 0]), check.get("height_range", [0, 0])
    kind = kinds.get(check.get("kind", ""), check.get("kind", "?"))
    parts = [
        f"<p><b>{check.get('total', 0):,}</b> readable images in <b>{len(check.get('classes', []))}</b> classes, "
        f"from {kind} at <code>{_e(check.get('root', '?'))}</code>. "
        f"Image sizes {w0} to {w1} px wide, {h0} to {h1} px high; imbalance {check.get('imbalance', 0):.2f} to 1 "
        "(largest class over smallest).</p>"
    ]
    parts += [f'<p class="problem">Problem: {_e(p)}</p>' for p in check.get("problems", [])]
    parts += [f'<p class="warning">Warning: {_e(w)}</p>' for w in check.get("warnings", [])]
    if not check.get("problems") and not check.get("warnings"):
        parts.append('<p class="good">The checks found nothing to warn about.</p>')
    root = check.get("root")
    unreadable = check.get("unreadable", [])
    if unreadable:
        rows = [[_short(u["path"], root), u.get("label", ""), u["reason"]] for u in unreadable]
        parts.append(f"<h3>Unreadable files ({len(unreadable)}), skipped</h3>")
        parts.append(_table(["file", "class", "reason"], rows))
    else:
        parts.append("<p>Every image file could be read.</p>")
    ignored = check.get("ignored", [])
    if ignored:
        rows = [[_short(i["path"], root), i["reason"]] for i in ignored]
        parts.append(_details(f"{len(ignored)} files ignored (not images)", _table(["file", "reason"], rows)))
    duplicates = check.get("duplicates", [])
    if duplicates:
        scopes = Counter(g.get("scope", "?") for g in duplicates)
        rows = [
            [g["kind"], g.get("scope", ""), ", ".join(_short(p, root) for p in g["paths"])]
            for g in duplicates[:DUPLICATES_LISTED]
        ]
        more = f" (first {DUPLICATES_LISTED})" if len(duplicates) > DUPLICATES_LISTED else ""
        summary = ", ".join(f"{n} {scope}" for scope, n in scopes.items())
        parts.append(
            _details(
                f"{len(duplicates)} groups of duplicate images: {summary}{more}",
                _table(["kind", "where", "files"], rows),
            )
        )
    if "counts" in pictures:
        parts.append(_figure(pictures["counts"], "Images per class, by split"))
    return "\n".join(parts)


def _split(run: Run) -> str:
    split = run.split
    if split is None:
        return '<p class="muted">The run folder holds no split.json.</p>'
    counts = split.get("counts") or {p: len(split.get(p, [])) for p in ("train", "val", "test")}
    total = sum(counts.values()) or 1
    origin = {
        "random": f"A random split, stratified by class, seed {split.get('seed')}: "
        f"{_share(split.get('val_frac'))} for validation, {_share(split.get('test_frac'))} for the test. "
        "Copies of one photo are kept in the same part.",
        "dataset": "The dataset's own split (its train/val/test folders or split column).",
        "file": "The split of an earlier run (--split-file).",
    }.get(str(split.get("origin")), f"Origin: {split.get('origin')}.")
    rows = [[part, f"{n:,}", f"{n / total:.0%}", _part_role(part)] for part, n in counts.items()]
    return f"<p>{_e(origin)}</p>\n" + _table(["part", "images", "share", "used for"], rows, numeric=(1, 2))


def _method(run: Run) -> str:
    c = run.config
    details = dict(c.get("details", {}))
    prep = c.get("preprocessing", {})
    size = prep.get("input_size", ["?", "?"])
    facts = {
        "method": c.get("method", "?"),
        "backbone": c.get("backbone", "?"),
        "weights": c.get("weights", "?"),
        "input": f"{size[0]} × {size[1]} px, {prep.get('interpolation', '?')} resize, crop {prep.get('crop_pct', '?')}",
        "normalisation": f"mean {prep.get('mean')}, std {prep.get('std')}",
        "mirror averaging at prediction": "yes" if c.get("flip_tta") else "no",
    }
    parts = [_kv_table(facts)]
    auto = details.pop("auto", None)
    if auto is not None:
        parts.append("<h3>Why this method (auto)</h3>")
        parts.append(_auto_evidence(auto) if isinstance(auto, Mapping) else f"<p>{_e(auto)}</p>")
    config = details.pop("config", None)
    timings = details.pop("timings", None)
    cv = details.pop("cv_scores", None)
    details.pop("method", None)
    if details:
        parts.append("<h3>Details</h3>")
        parts.append(_kv_table(details))
    if cv and all(isinstance(x, list | tuple) and len(x) == 2 for x in cv):
        chosen = details.get("C")
        rows = [[f"{strength:.3g}", f"{score:.1%}", "chosen" if strength == chosen else ""] for strength, score in cv]
        parts.append(_details("Cross-validation scores per C", _table(["C", "CV accuracy", ""], rows, numeric=(0, 1))))
    if isinstance(timings, Mapping):
        spent = [f"{_e(k)} {v:.1f} s" for k, v in timings.items() if isinstance(v, int | float)]
        parts.append("<p>Time: " + " · ".join(spent) + "</p>")
    if config:
        parts.append(_details("All options of the run", _json(config)))
    return "\n".join(parts)


def _curves(run: Run, pictures: Mapping[str, Path]) -> str:
    if "curves" not in pictures:
        if run.config.get("method") == "features":
            return (
                '<p class="muted">No curves: the feature method trains no epochs. It fits a linear head in one '
                "step on features computed once, with its regularisation chosen by cross-validation.</p>"
            )
        return '<p class="muted">No curves: the run folder holds no history.csv.</p>'
    kept = kept_epochs(run.history)
    kept_text = ", ".join(f"epoch {e} ({_e(p)})" for p, e in kept.items())
    return (
        _figure(pictures["curves"], "Accuracy and loss per epoch")
        + f"<p>Rings mark the weights each phase kept (lowest validation loss): {kept_text}.</p>"
    )


def _diagnosis(run: Run, d: Diagnosis) -> str:
    if not run.history:
        return (
            '<p class="muted">Overfitting is read from the training curves, and this run has none. '
            "Compare validation and test results under Metrics: close numbers mean the model generalises.</p>"
        )
    verdict = f"<b>{_e(d.verdict.capitalize())}.</b> {_e(d.headline)}"
    parts = [f'<p class="verdict {_verdict_class(d.verdict)}">{verdict}</p>']
    if d.findings:
        parts.append("<h3>What the curves show</h3>" + _list(d.findings))
    if d.advice:
        parts.append("<h3>What to try</h3>" + _list(d.advice))
    return "\n".join(parts)


def _metrics(run: Run) -> str:
    metrics = run.metrics
    if not metrics:
        return '<p class="muted">No metrics recorded: the run had no validation or test images.</p>'
    ks = sorted({k for m in metrics.values() for k in m.top_k})
    header = ["part", "images", "accuracy", "balanced accuracy", "macro F1", "weighted F1"]
    header += [f"top-{k} accuracy" for k in ks] + ["log loss", "calibration error (ECE)"]
    rows = [
        [part, str(m.n), f"{m.accuracy:.1%}", f"{m.balanced_accuracy:.1%}", f"{m.macro_f1:.3f}", f"{m.weighted_f1:.3f}"]
        + [f"{m.top_k[k]:.1%}" if k in m.top_k else "" for k in ks]
        + [f"{m.log_loss:.3f}", f"{m.ece:.3f}"]
        for part, m in metrics.items()
    ]
    parts = [
        _table(header, rows, numeric=tuple(range(1, len(header)))),
        '<p class="muted">Balanced accuracy and macro F1 weigh every class the same, so a weak small class '
        "shows. Log loss and the calibration error say whether the confidences can be trusted: lower is "
        "better, and an ECE of 0.05 means confidences are off by 5 points on average.</p>",
    ]
    part = "test" if "test" in metrics else next(iter(metrics))
    m = metrics[part]
    rows = []
    for c in sorted(m.per_class, key=lambda c: (c.recall, c.name)):
        cells = [c.name, f"{c.precision:.1%}", f"{c.recall:.1%}", f"{c.f1:.3f}", str(c.support)]
        rows.append(cells if c.recall >= m.accuracy - 0.1 else [f"!{cell}" for cell in cells])
    parts.append(f"<h3>Per class on {part}, lowest recall first</h3>")
    parts.append(
        '<p class="muted">Recall: the share of a class\'s images found. Precision: the share of predictions '
        "of a class that are right. Highlighted: recall 10 points or more below the overall accuracy.</p>"
    )
    header = ["class", "precision", "recall", "F1", "images"]
    parts.append(_table(header, rows, numeric=(1, 2, 3, 4), scroll=len(rows) > 25))
    return "\n".join(parts)


def _confusion(run: Run, pictures: Mapping[str, Path]) -> str:
    if "confusion" not in pictures:
        return '<p class="muted">No confusion matrix: the run had no validation or test images.</p>'
    wide = len(run.config.get("classes", [])) > 30  # too many labels to shrink: show full size, scrolling
    return (
        f"<p>On the {run.headline} part. Rows are the true class, columns the predicted class: everything off "
        "the diagonal is a mistake. The second matrix shows each row as shares, so small classes read as "
        "clearly as large ones.</p>"
        + _figure(pictures["confusion"], "Confusion matrix, counts", natural=wide)
        + _figure(pictures["confusion_normalised"], "Confusion matrix, share of each true class", natural=wide)
    )


def _mistakes(run: Run, pictures: Mapping[str, Path]) -> str:
    if not run.predictions:
        return '<p class="muted">The run folder holds no predictions.csv.</p>'
    wrong = worst_mistakes(run.predictions, MISTAKES_LISTED)
    n_wrong = sum(p.wrong for p in run.predictions)
    order = {"train": 0, "val": 1, "test": 2}
    parts_seen = sorted({p.split for p in run.predictions}, key=lambda part: (order.get(part, 3), part))
    if not wrong:
        return f'<p class="good">No mistakes on {" and ".join(parts_seen)} ({len(run.predictions)} images).</p>'
    which = "all of them" if n_wrong <= MISTAKES_SHOWN else f"the {MISTAKES_SHOWN} the model was most sure about"
    text = (
        f"<p>{n_wrong} of {len(run.predictions)} images of {' and '.join(parts_seen)} are predicted wrong; the "
        f"grid shows {which}, most confident first. Confident mistakes often point at mislabelled photos, "
        "look-alike classes, or a class shown in a way training never saw.</p>"
    )
    rows = [[p.split, p.path, p.true, p.predicted, f"{p.confidence:.1%}"] for p in wrong]
    more = f" (the {MISTAKES_LISTED} most confident)" if n_wrong > MISTAKES_LISTED else ""
    table = _details(
        f"All mistakes as a table{more}",
        _table(["part", "file", "true class", "predicted", "confidence"], rows, numeric=(4,)),
    )
    figure = _figure(pictures["mistakes"], "Most confident mistakes") if "mistakes" in pictures else ""
    return text + figure + table


def _reproduce(run: Run) -> str:
    c = run.config
    command = c.get("command") or "(not recorded)"
    facts = {"seed": c.get("seed"), "dataset": c.get("data"), "created": c.get("created")}
    versions = c.get("versions", {})
    pins = " ".join(f"{pkg}=={versions[pkg]}" for pkg in PINNED if pkg in versions)
    install = f"<p>The same versions:</p><pre>pip install {_e(pins)}</pre>\n" if pins else ""
    return (
        f"<p>The command that made this run:</p><pre>{_e(command)}</pre>\n{install}"
        f"{_kv_table(facts)}\n<h3>Versions</h3>\n{_kv_table(versions)}\n"
        f'<p class="muted">Rebuild this page with <code>tlearn report {_e(str(run.folder))}</code>.</p>'
    )


# ------------------------------------------------------------------------------------ HTML pieces


def _section(key: str, content: str) -> str:
    return f'<section id="{key}">\n<h2>{SECTIONS[key]}</h2>\n{content}\n</section>'


def _card(value: str, label: str, *, css: str = "") -> str:
    return f'<div class="card {css}"><div class="value">{_e(value)}</div><div class="label">{_e(label)}</div></div>'


def _figure(path: Path, alt: str, *, natural: bool = False) -> str:
    """A PNG embedded as base64; `natural` keeps its full size in a scrolling box (large matrices)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    css = ' class="natural"' if natural else ""
    return f'<figure{css}><img src="data:{mime};base64,{data}" alt="{_e(alt)}"></figure>'


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), scroll: bool = False
) -> str:
    """An HTML table; a cell starting with "!" is highlighted (the "!" is dropped)."""

    def cell(i: int, value: str, tag: str) -> str:
        classes = ["num"] if i in numeric else []
        if value.startswith("!"):
            value = value[1:]
            classes.append("low")
        css = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{css}>{_e(value)}</{tag}>"

    head = "".join(cell(i, h, "th") for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell(i, str(v), "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll else table


def _auto_evidence(auto: Mapping[str, Any]) -> str:
    """The auto method's paragraph, its linear probe per layer, and what it decided from them."""
    auto = dict(auto)
    evidence = dict(auto.pop("evidence", None) or {})
    decision = dict(auto.pop("decision", None) or {})
    text = auto.pop("explanation", None) or decision.pop("explanation", None)
    decision.pop("explanation", None)
    parts = [f'<p class="decision">{_e(text)}</p>'] if text else []
    probes = evidence.pop("probes", None) or []
    if probes:
        rows = "\n".join(
            f"<tr><td>{_e(p.get('description', p.get('layer')))}</td><td class=num>{_pct(p.get('accuracy'))}</td></tr>"
            for p in probes
        )
        parts.append(
            "<table><thead><tr><th>layer</th><th>linear probe (cross-validated accuracy)</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    facts: dict[str, Any] = {}
    if "size" in decision or "domain" in decision:
        facts["quadrant"] = f"{decision.pop('size', '?')} and {decision.pop('domain', '?')}"
    facts.update(decision)
    if "forward_ips" in evidence:
        facts["network speed"] = f"{float(evidence.pop('forward_ips')):.0f} images/s"
    estimates = evidence.pop("finetune_estimates", None)
    if estimates:
        facts["fine-tuning estimate"] = ", ".join(
            f"{k} stage{'s' if k != '1' else ''}: {float(v) / 60:.1f} min" for k, v in estimates.items()
        )
    if "budget_s" in evidence:
        facts["time budget"] = f"{float(evidence.pop('budget_s')) / 60:.1f} min"
    validation = auto.pop("validation", None)
    if isinstance(validation, Mapping):
        facts["validation accuracy"] = ", ".join(f"{k} {_pct(v)}" for k, v in validation.items())
    facts.update(evidence)
    facts.update(auto)
    parts.append(_kv_table(facts))
    return "\n".join(parts)


def _pct(value: Any) -> str:
    return f"{float(value):.1%}" if isinstance(value, int | float) else "?"


def _kv_table(values: Mapping[str, Any]) -> str:
    """Unknown keys shown generically: one row per key, nested values compact or folded away."""
    rows = "\n".join(f"<tr><th>{_e(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in values.items())
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _e(f"{v:.4g}")
    if v is None:
        return '<span class="muted">none</span>'
    if isinstance(v, Mapping):
        return _kv_table(v) if len(v) <= 12 else _details(f"{len(v)} entries", _json(v))
    if isinstance(v, list | tuple) and v and len(v) <= 20 and all(isinstance(x, Mapping) for x in v):
        keys = list(dict.fromkeys(k for x in v for k in x))
        return _table(keys, [[_text(x.get(k)) for k in keys] for x in v])
    if isinstance(v, list | tuple):
        if len(v) <= 8 and all(isinstance(x, str | int | float | bool) or x is None for x in v):
            return ", ".join(_value(x) for x in v) or '<span class="muted">none</span>'
        return _details(f"{len(v)} items", _json(v))
    return _e(str(v))


def _text(v: Any) -> str:
    """A table cell as plain text (it is escaped by `_table`)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


def _details(summary: str, content: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>\n{content}\n</details>"


def _list(items: Iterable[str]) -> str:
    """A bullet list; command-line flags in the text are set as code."""
    return "<ul>" + "".join(f"<li>{FLAG.sub(_code, _e(i))}</li>" for i in items) + "</ul>"


def _code(match: re.Match[str]) -> str:
    return f"<code>{match.group(0)}</code>"


def _json(v: Any) -> str:
    return f"<pre>{_e(json.dumps(v, indent=1, default=str))}</pre>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short(path: str, root: str | None) -> str:
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return path


def _share(frac: Any) -> str:
    return f"{float(frac):.0%}" if isinstance(frac, int | float) else "?"


def _part_role(part: str) -> str:
    return {
        "train": "fitting the model",
        "val": "choosing settings and the epoch to keep",
        "test": "the final, untouched score",
    }.get(part, "")


def _verdict_class(verdict: str) -> str:
    colours = {"overfitting": "bad", "slight overfitting": "meh", "underfitting": "meh", "healthy": "good"}
    return colours.get(verdict, "")


def _run_name(run: Run) -> str:
    data = run.data
    return f"{data.stem if data else run.folder.name}: {run.config.get('method', '?')} run {run.folder.name}"


CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d8dee4; --bg: #f6f8fa; --accent: #4c72b0;
        --good: #1a7f37; --meh: #9a6700; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 8px; }
section { margin-top: 36px; }
.sub, .muted { color: var(--muted); }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      white-space: pre-wrap; overflow-wrap: anywhere; }
nav { margin-top: 14px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 130px;
        background: var(--bg); }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { color: var(--muted); font-size: 13px; }
.card.good .value, .good { color: var(--good); }
.card.meh .value { color: var(--meh); }
.card.bad .value { color: var(--bad); }
.problem { color: var(--bad); font-weight: 600; }
.warning { color: var(--meh); }
.verdict { font-size: 16px; padding: 10px 14px; border-radius: 6px; background: var(--bg);
           border-left: 5px solid var(--line); }
.verdict.good { border-left-color: var(--good); color: var(--ink); }
.verdict.meh { border-left-color: var(--meh); }
.verdict.bad { border-left-color: var(--bad); }
.decision { padding: 8px 12px; border-left: 4px solid var(--accent); background: var(--bg); }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--bg); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.low { background: #fff1e5 !important; }
table.kv th { font-weight: 500; color: var(--muted); white-space: nowrap; }
.scroll { max-height: 520px; overflow: auto; display: inline-block; border: 1px solid var(--line); border-radius: 6px; }
.scroll table { margin: 0; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figure.natural { overflow: auto; max-height: 900px; border: 1px solid var(--line); border-radius: 6px; }
figure.natural img { max-width: none; border: 0; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
@media print { nav { display: none; } section { break-inside: avoid-page; } }
"""
