"""The sections of report.html, top to bottom: header, dataset, split, method, curves, diagnosis,
metrics, confusion matrix, mistakes, how to reproduce.

Each section is a function of the `Run` (and the pictures drawn for it) that returns an HTML fragment;
a run that lacks what a section shows gets a sentence saying why, never an empty heading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tlearn.artifacts.history import kept_epochs
from tlearn.artifacts.metrics import ranked_by_recall
from tlearn.artifacts.predictions import worst_mistakes
from tlearn.core.notebook import escape, percent
from tlearn.core.words import count, noun, verb
from tlearn.models.unknown import NO_UNKNOWN_WHY
from tlearn.report.details import AutoRecord, MethodDetails
from tlearn.report.diagnosis import Diagnosis, diagnose
from tlearn.report.html import bullets, card, figure, folded, json_block, kv_table, table
from tlearn.report.run_data import Run

SCORE_WORDS = {
    "knn": "knn: cosine distance of the image's features to the nearest training image",
    "knn_msp": "knn_msp: cosine distance to the nearest training image plus 1 - the top probability, each "
    "standardised on the validation images",
}
MISTAKES_SHOWN = 12  # tiles in the mistakes grid; the table under it lists up to MISTAKES_LISTED
MISTAKES_LISTED = 100
LABEL_ISSUES_SHOWN = 12  # tiles in the label check's grid; the table under it lists every flagged image
DUPLICATES_LISTED = 50
TRIED = "These are the epochs of the fine-tuning auto tried and did not keep"  # curves of a run that kept the features
PINNED = ("tlearn", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow")  # keys of versions
SECTIONS = {
    "dataset": "Dataset",
    "split": "Split",
    "method": "Method",
    "curves": "Training curves",
    "diagnosis": "Diagnosis",
    "metrics": "Metrics",
    "calibration": "Calibration",
    "unknown": "Unknown answer",
    "confusion": "Confusion matrix",
    "mistakes": "Mistakes",
    "attention": "Where it looks",
    "labels": "Label check",
    "reproduce": "Reproduce",
}


def render_body(run: Run, pictures: Mapping[str, Path], *, heatmaps_missing: str = "") -> str:
    """The header and every section of SECTIONS, in order. `heatmaps_missing`: why the tiles have no heatmaps."""
    diagnosis = diagnose(run.history)
    return "\n".join(
        [
            _header(run, diagnosis),
            _section("dataset", _dataset(run, pictures)),
            _section("split", _split(run)),
            _section("method", _method(run)),
            _section("curves", _curves(run, pictures)),
            _section("diagnosis", _diagnosis(run, diagnosis)),
            _section("metrics", _metrics(run)),
            _section("calibration", _calibration(run, pictures)),
            _section("unknown", _unknown(run)),
            _section("confusion", _confusion(run, pictures)),
            _section("mistakes", _mistakes(run, pictures, heatmaps_missing)),
            _section("attention", _attention(run, pictures, heatmaps_missing)),
            _section("labels", _labels(run, pictures)),
            _section("reproduce", _reproduce(run)),
        ]
    )


def _section(key: str, content: str) -> str:
    return f'<section id="{key}">\n<h2>{SECTIONS[key]}</h2>\n{content}\n</section>'


def _header(run: Run, diagnosis: Diagnosis) -> str:
    c = run.config
    part = run.headline
    cards = []
    if part is not None:
        m = run.metrics[part]
        cards += [
            card(f"{m.accuracy:.1%}", f"{part} accuracy"),
            card(f"{m.balanced_accuracy:.1%}", "balanced accuracy"),
            card(f"{m.macro_f1:.3f}", "macro F1"),
            card(str(m.n), f"{part} images"),
        ]
    cards.append(card(str(len(c.classes)), "classes"))
    if diagnosis.verdict != "unknown" and run.epochs_kept:  # not a card for curves of a model not kept
        cards.append(card(diagnosis.verdict, "diagnosis", css=_verdict_class(diagnosis.verdict)))
    nav = " ".join(f'<a href="#{key}">{name}</a>' for key, name in SECTIONS.items())
    return (
        f"<header><h1>{escape(run.name)}</h1>\n"
        f'<p class="sub">{escape(c.method or "?")} method on <b>{escape(c.backbone or "?")}</b>, '
        f"{len(c.classes)} classes · created {escape(c.created or '?')} · "
        f"run folder <code>{escape(str(run.folder))}</code></p>\n"
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
        f"from {kind} at <code>{escape(check.get('root', '?'))}</code>. "
        f"Image sizes {w0} to {w1} px wide, {h0} to {h1} px high; imbalance {check.get('imbalance', 0):.2f} to 1 "
        "(largest class over smallest).</p>"
    ]
    parts += [f'<p class="problem">Problem: {escape(p)}</p>' for p in check.get("problems", [])]
    parts += [f'<p class="warning">Warning: {escape(w)}</p>' for w in check.get("warnings", [])]
    if not check.get("problems") and not check.get("warnings"):
        parts.append('<p class="good">The checks found nothing to warn about.</p>')
    parts += _skipped_files(check)
    if "counts" in pictures:
        parts.append(figure(pictures["counts"], "Images per class, by split"))
    return "\n".join(parts)


def _skipped_files(check: Mapping[str, Any]) -> list[str]:
    """What the dataset check set aside: unreadable files, files that are not images, duplicate groups."""
    root = check.get("root")
    unreadable = check.get("unreadable", [])
    if unreadable:
        rows = [[_short(u["path"], root), u.get("label", ""), u["reason"]] for u in unreadable]
        parts = [f"<h3>Unreadable files ({len(unreadable)}), skipped</h3>", table(["file", "class", "reason"], rows)]
    else:
        parts = ["<p>Every image file could be read.</p>"]
    ignored = check.get("ignored", [])
    if ignored:
        rows = [[_short(i["path"], root), i["reason"]] for i in ignored]
        parts.append(folded(f"{count(len(ignored), 'file')} ignored (not images)", table(["file", "reason"], rows)))
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
            folded(
                f"{count(len(duplicates), 'group')} of duplicate images: {summary}{more}",
                table(["kind", "where", "files"], rows),
            )
        )
    return parts


def _split(run: Run) -> str:
    split = run.split
    if split is None:
        return '<p class="muted">The run folder holds no split.json.</p>'
    counts = split.get("counts") or {p: len(split.get(p, [])) for p in ("train", "val", "test")}
    total = sum(counts.values()) or 1
    asked = (split.get("val_frac"), split.get("test_frac"))
    shares = tuple(counts.get(p, 0) / total for p in ("val", "test"))
    rounded = any(isinstance(a, int | float) and abs(a - s) > 0.05 for a, s in zip(asked, shares, strict=True))
    origin = {
        "random": f"A random split, stratified by class, seed {split.get('seed')}: "
        + (
            f"{_share(asked[0])} for validation and {_share(asked[1])} for the test were asked, and so few images "
            "per class rounded them to the shares below"
            if rounded
            else f"{_share(asked[0])} for validation, {_share(asked[1])} for the test"
        )
        + ". Copies of one photo are kept in the same part.",
        "dataset": "The dataset's own split (its train/val/test folders or split column).",
        "file": "The split of an earlier run (--split-file).",
    }.get(str(split.get("origin")), f"Origin: {split.get('origin')}.")
    rows = [[part, f"{n:,}", f"{n / total:.0%}", _part_role(part)] for part, n in counts.items()]
    return f"<p>{escape(origin)}</p>\n" + table(["part", "images", "share", "used for"], rows, numeric=(1, 2))


def _method(run: Run) -> str:
    c, prep = run.config, run.config.preprocessing
    size = prep.input_size
    facts = {
        "method": c.method or "?",
        "backbone": c.backbone or "?",
        "weights": c.weights or "?",
        "input": f"{size[0]} × {size[1]} px, {prep.interpolation} resize, crop {prep.crop_pct}",
        "normalisation": f"mean {list(prep.mean)}, std {list(prep.std)}",
        "mirror averaging at prediction": "yes" if c.flip_tta else "no",
    }
    return "\n".join([kv_table(facts), *_method_details(run.details)])


def _method_details(d: MethodDetails) -> list[str]:
    """Why auto chose the method, the method's own facts, its cross-validation, timings and options."""
    parts = []
    if d.auto is not None or d.auto_text is not None:
        parts.append("<h3>Why this method (auto)</h3>")
        parts.append(_auto_evidence(d.auto) if d.auto is not None else f"<p>{escape(d.auto_text)}</p>")
    if d.other:
        parts.append("<h3>Details</h3>")
        parts.append(kv_table(d.other))
    if d.unlabelled is not None:
        parts.append("<h3>Photos without labels (--unlabelled)</h3>")
        parts.append(f"<p>{escape(d.unlabelled.summary)}</p>")
        counts = [[c, str(n)] for c, n in sorted(d.unlabelled.class_counts.items(), key=lambda kv: -kv[1])]
        if d.unlabelled.used:
            parts.append(folded("Predicted class of the photos used", table(["class", "photos"], counts, numeric=(1,))))
    if d.cv_scores:
        rows = [
            [f"{strength:.3g}", f"{score:.1%}", "chosen" if strength == d.chosen_c else ""]
            for strength, score in d.cv_scores
        ]
        parts.append(folded("Cross-validation scores per C", table(["C", "CV accuracy", ""], rows, numeric=(0, 1))))
    if d.timings is not None:
        spent = [f"{escape(k)} {v:.1f} s" for k, v in d.timings.items()]
        parts.append("<p>Time: " + " · ".join(spent) + "</p>")
    if d.run_options:
        parts.append(folded("All options of the run", json_block(d.run_options)))
    return parts


def _auto_evidence(auto: AutoRecord) -> str:
    """The auto method's paragraph, its linear probe per layer, and what it decided from them."""
    parts = [f'<p class="decision">{escape(auto.explanation)}</p>'] if auto.explanation else []
    if auto.probes:
        rows = "\n".join(
            f"<tr><td>{escape(p.layer)}</td><td class=num>{percent(p.accuracy)}</td></tr>" for p in auto.probes
        )
        parts.append(
            "<table><thead><tr><th>layer</th><th>linear probe (cross-validated accuracy)</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    facts: dict[str, Any] = {} if auto.quadrant is None else {"quadrant": auto.quadrant}
    facts.update(auto.decision)
    if auto.forward_ips is not None:
        facts["network speed"] = f"{auto.forward_ips:.0f} images/s"
    if auto.per_class is not None:
        facts["training images per class"] = f"{auto.per_class[0]:g} (median), {auto.per_class[1]} (fewest)"
    if auto.finetune_estimates:
        facts["fine-tuning estimate"] = _per_stages(auto.finetune_estimates, lambda v: f"{v / 60:.1f} min")
    if auto.epoch_seconds:
        facts["time per fine-tuning epoch"] = _per_stages(auto.epoch_seconds, lambda v: f"{v:.1f} s")
    if auto.view_seconds:
        facts["time per cached view"] = _per_stages(auto.view_seconds, lambda v: f"{v:.1f} s")
    if auto.budget_s is not None:
        facts["time left for fine-tuning"] = f"{auto.budget_s / 60:.1f} min"
    if auto.validation is not None:
        facts["validation accuracy"] = ", ".join(f"{k} {percent(v)}" for k, v in auto.validation.items())
    facts.update(auto.evidence)
    facts.update(auto.other)
    parts.append(kv_table(facts))
    return "\n".join(parts)


def _per_stages(values: Mapping[str, float], show: Callable[[float], str]) -> str:
    """A record keyed by the stages unfrozen as "1 stage: ..., 2 stages: ..., all stages: ..."."""
    return ", ".join(f"{k} stage{'s' if k != '1' else ''}: {show(v)}" for k, v in values.items())


def _curves(run: Run, pictures: Mapping[str, Path]) -> str:
    if "curves" not in pictures:
        if run.config.method == "features":
            return (
                '<p class="muted">No curves: the feature method trains no epochs. It fits a linear head in one '
                "step on features computed once, with its regularisation chosen by cross-validation.</p>"
            )
        return '<p class="muted">No curves: the run folder holds no history.csv.</p>'
    if not run.epochs_kept:
        return figure(pictures["curves"], "Accuracy and loss per epoch of the fine-tuning tried") + (
            f"<p>{TRIED}: {escape(_features_won(run))}, so the features were kept. Their linear head is fitted in "
            "one step, with no epochs to plot, and the bundle holds none of these epochs' weights: no ring.</p>"
        )
    kept = kept_epochs(run.history)
    kept_text = ", ".join(f"epoch {e} ({escape(p)})" for p, e in kept.items())
    return (
        figure(pictures["curves"], "Accuracy and loss per epoch")
        + f"<p>Rings mark the weights each phase kept (lowest validation loss): {kept_text}.</p>"
    )


def _features_won(run: Run) -> str:
    """How validation chose the features over fine-tuning: "on validation features 90.0%, fine-tuned 85.0%"."""
    scores = run.details.auto.validation if run.details.auto is not None else None
    if not scores or not {"features", "finetune"} <= set(scores):
        return "the features did better on validation"
    return f"on validation features {percent(scores['features'])}, fine-tuned {percent(scores['finetune'])}"


def _diagnosis(run: Run, d: Diagnosis) -> str:
    if not run.history:
        return (
            '<p class="muted">Overfitting is read from the training curves, and this run has none. '
            "Compare validation and test results under Metrics: close numbers mean the model generalises.</p>"
        )
    verdict = f"<b>{escape(d.verdict.capitalize())}.</b> {escape(d.headline)}"
    parts = [f'<p class="verdict {_verdict_class(d.verdict)}">{verdict}</p>']
    if not run.epochs_kept:
        parts.insert(
            0,
            f'<p class="muted">{TRIED}: the bundle holds the features, whose head trains no epochs. What follows is '
            "about that fine-tuning; for the kept model, compare validation and test under Metrics.</p>",
        )
    if d.findings:
        parts.append("<h3>What the curves show</h3>" + bullets(d.findings))
    if d.advice:
        parts.append("<h3>What to try</h3>" + bullets(d.advice))
    return "\n".join(parts)


def _metrics(run: Run) -> str:
    metrics = run.metrics
    if not metrics:
        return '<p class="muted">No metrics recorded: the run had no validation or test images.</p>'
    ks = sorted({k for m in metrics.values() for k in m.top_k})
    header = ["part", "images", "accuracy ± s.e.", "balanced accuracy", "macro F1", "weighted F1"]
    header += [f"top-{k} accuracy" for k in ks] + ["log loss", "calibration error (ECE)"]
    rows = [
        [part, str(m.n), m.accuracy_text(), f"{m.balanced_accuracy:.1%}", f"{m.macro_f1:.3f}", f"{m.weighted_f1:.3f}"]
        + [f"{m.top_k[k]:.1%}" if k in m.top_k else "" for k in ks]
        + [f"{m.log_loss:.3f}", f"{m.ece:.3f}"]
        for part, m in metrics.items()
    ]
    return "\n".join(
        [
            table(header, rows, numeric=tuple(range(1, len(header)))),
            '<p class="muted">The ± after the accuracy is one standard error, in points: two runs whose accuracies '
            "differ by less than about twice that may differ by chance. Balanced accuracy and macro F1 weigh every "
            "class the same, so a weak small class shows. Log loss and the calibration error say whether the "
            "confidences can be trusted: lower is better, and an ECE of 0.05 means confidences are off by 5 points "
            "on average.</p>",
            _per_class(run),
        ]
    )


def _calibration(run: Run, pictures: Mapping[str, Path]) -> str:
    """The temperature, the calibration error before and after it per part, and the reliability diagram."""
    cal = run.details.calibration
    if cal is None:
        return '<p class="muted">No calibration recorded: this bundle was made before tlearn calibrated.</p>'
    if cal.temperature == 1.0 and cal.ece_before is None:
        why = (
            f"only {cal.images} validation images (too few to choose a temperature)"
            if cal.images < 30
            else "every validation image right (nothing to calibrate against)"
        )
        head = f"<p>The probabilities are the network's own (temperature 1): {why}.</p>"
    else:
        head = (
            f"<p>The logits are divided by a temperature of <b>{cal.temperature:.3f}</b>, fitted on the "
            f"{cal.images} validation images to minimise their log loss; no prediction changes, only how sure "
            "each one says it is. " + ("Above 1: the network was overconfident." if cal.temperature > 1 else
            "Below 1: the network was underconfident.") + "</p>"
        )  # fmt: skip
    rows = [[r.part, str(r.images), f"{r.ece_before:.3f}", f"{r.ece_after:.3f}"] for r in cal.reliability]
    parts = [head]
    if rows:
        parts.append(
            table(["part", "images", "ECE before", "ECE after"], rows, numeric=(1, 2, 3))
            + '<p class="muted">ECE (expected calibration error): the mean gap between confidence and accuracy '
            "over 15 confidence bins, weighted by images. The test part was not used to fit the temperature, so "
            "its figures are the honest ones.</p>"
        )
    if "reliability" in pictures:
        parts.append(figure(pictures["reliability"], "Reliability diagram, before and after the temperature"))
    return "\n".join(parts)


def _unknown(run: Run) -> str:
    """How the bundle tells an image that is none of its classes, and what it keeps of the known ones."""
    rule = run.config.unknown
    if rule is None:
        return (
            f'<p class="muted">This bundle has no unknown answer ({NO_UNKNOWN_WHY}): every image gets one of '
            "its classes.</p>"
        )
    facts = {
        "score": SCORE_WORDS.get(rule.kind, rule.kind),
        "threshold": f"{rule.threshold:.4f} (above it: unknown)",
        "known validation images kept": f"{rule.recall:.1%} of {rule.val_images} (asked: the threshold's recall)",
        "known test images kept": "" if rule.test_recall is None else f"{rule.test_recall:.1%}",
        "feature bank": f"{rule.num_classes} class means + {rule.bank_rows} training images, {rule.feature_dim} "
        f"dimensions, float16: {rule.bank_bytes / 1e6:.2f} MB",
    }
    return (
        '<p>An image far from every training image is answered <b>unknown</b> ("not one of my classes") by '
        "<code>tlearn predict</code>, the Python API, the server and the ONNX export. The threshold keeps the "
        "share of known validation images asked for (<code>--unknown-recall</code>); the test share shows what "
        "to expect on new photos of the same classes.</p>" + kv_table({k: v for k, v in facts.items() if v})
    )


def _per_class(run: Run) -> str:
    """Precision, recall and F1 of each class on test (else validation), the weakest first and highlighted."""
    part = "test" if "test" in run.metrics else next(iter(run.metrics))
    m = run.metrics[part]
    rows = []
    for c in ranked_by_recall(m.per_class):
        cells = [c.name, c.precision_text(), c.recall_text(), c.f1_text(), str(c.support)]
        rows.append([f"!{cell}" for cell in cells] if c.is_weak(m.accuracy) else cells)
    header = ["class", "precision", "recall", "F1", "images"]
    return (
        f"<h3>Per class on {part}, lowest recall first</h3>\n"
        '<p class="muted">Recall: the share of a class\'s images found. Precision: the share of predictions '
        "of a class that are right. Highlighted: recall 10 points or more below the overall accuracy.</p>\n"
        + table(header, rows, numeric=(1, 2, 3, 4), scroll=len(rows) > 25)
    )


def _confusion(run: Run, pictures: Mapping[str, Path]) -> str:
    if "confusion" not in pictures:
        return '<p class="muted">No confusion matrix: the run had no validation or test images.</p>'
    wide = len(run.config.classes) > 30  # too many labels to shrink: show full size, scrolling
    return (
        f"<p>On the {run.headline} part. Rows are the true class, columns the predicted class: everything off "
        "the diagonal is a mistake. The second matrix shows each row as shares, so small classes read as "
        "clearly as large ones.</p>"
        + figure(pictures["confusion"], "Confusion matrix, counts", natural=wide)
        + figure(pictures["confusion_normalised"], "Confusion matrix, share of each true class", natural=wide)
    )


def _mistakes(run: Run, pictures: Mapping[str, Path], heatmaps_missing: str = "") -> str:
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
        + _heatmap_note(heatmaps_missing, "predicted class")
    )
    rows = [[p.split, p.path, p.true, p.predicted, f"{p.confidence:.1%}"] for p in wrong]
    more = f" (the {MISTAKES_LISTED} most confident)" if n_wrong > MISTAKES_LISTED else ""
    listing = folded(
        f"All mistakes as a table{more}",
        table(["part", "file", "true class", "predicted", "confidence"], rows, numeric=(4,)),
    )
    grid = figure(pictures["mistakes"], "Most confident mistakes") if "mistakes" in pictures else ""
    return text + grid + listing


def _labels(run: Run, pictures: Mapping[str, Path]) -> str:
    issues = run.label_issues
    if issues is None:
        return (
            '<p class="muted">Labels were not checked in this run (the scratch method has no pretrained features, '
            "or a class has a single image). <code>tlearn check DATA --labels</code> checks them.</p>"
        )
    total = (run.check or {}).get("total")
    checked = f"all {total:,} images" if isinstance(total, int) else "every image"
    how = (
        f"<p>A logistic regression cross-validated on the features of {checked} gives each one probabilities "
        "from a model that never saw its label. An image is listed when another class is about as sure as "
        "that class usually is of its own images while its given class is not; one far from every class "
        "(junk, or a photo of something else) is listed as such. Nothing was moved or deleted: "
        "<code>label_issues.csv</code> in the run folder lists them to fix in bulk.</p>"
    )
    if not issues:
        return how + '<p class="good">No image looks mislabelled or far from every class.</p>'
    wrong = [i for i in issues if i.issue == "label"]
    far = [i for i in issues if i.issue == "outlier"]
    counts = []
    if wrong:
        counts.append(f"<b>{len(wrong)}</b> {noun(len(wrong), 'image')} may be mislabelled")
    if far:
        counts.append(f"<b>{len(far)}</b> {verb(len(far), 'looks', 'look')} far from every class")
    shown = "all of them" if len(issues) <= LABEL_ISSUES_SHOWN else f"the first {LABEL_ISSUES_SHOWN}"
    text = f"<p>{' and '.join(counts)}; the grid shows {shown}, most likely first.</p>"
    grid = figure(pictures["label_issues"], "Images whose label may be wrong") if "label_issues" in pictures else ""
    rows = [
        [i.path, i.given, i.suggested or "(none: far from every class)",
         f"{i.confidence:.1%}" if i.issue == "label" else "", f"{i.score:.3f}"]
        for i in issues
    ]  # fmt: skip
    listing = folded(
        f"All {len(issues)} as a table",
        table(["file", "given label", "suggested label", "confidence", "score"], rows, numeric=(3, 4)),
    )
    return how + text + grid + listing


def _attention(run: Run, pictures: Mapping[str, Path], heatmaps_missing: str) -> str:
    if "correct" not in pictures:
        return f'<p class="muted">No right answers on {escape(run.headline or "validation or test")} to show.</p>'
    return (
        f"<p>A few images of each class the model got right on {escape(run.headline or '?')}. A model can be "
        "right for the wrong reason: with few photos it may learn the background, the lighting or a watermark "
        "that happens to go with a class, and then fail on new photos.</p>"
        + _heatmap_note(heatmaps_missing, "class")
        + figure(pictures["correct"], "Right answers with their heatmaps")
    )


def _heatmap_note(missing: str, what: str) -> str:
    if missing:
        return f'<p class="muted">No heatmaps: {escape(missing)}.</p>'
    return (
        f"<p>Each image is shown as the model saw it, with a heatmap (Grad-CAM) over it: red is where the "
        f"network found the most evidence for the {what}, the photo shows as it is where it found none. Red on "
        "the object is what you want; red on the background means the model decides by something else.</p>"
    )


def _reproduce(run: Run) -> str:
    c = run.config
    command = c.command or "(not recorded)"
    facts = {"seed": c.seed, "dataset": c.data or None, "created": c.created or None}
    pins = " ".join(f"{pkg}=={c.versions[pkg]}" for pkg in PINNED if pkg in c.versions)
    install = f"<p>The same versions:</p><pre>pip install {escape(pins)}</pre>\n" if pins else ""
    return (
        f"<p>The command that made this run:</p><pre>{escape(command)}</pre>\n{install}"
        f"{kv_table(facts)}\n<h3>Versions</h3>\n{kv_table(c.versions)}\n"
        f'<p class="muted">Rebuild this page with <code>tlearn report {escape(str(run.folder))}</code>.</p>'
    )


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
