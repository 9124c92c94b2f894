"""The Markdown sections of the model card a person reads, and the weights' licence."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlearn.artifacts.bundle import CHECK_FILE, CONFIG_FILE, SPLIT_FILE, WEIGHTS_FILE
from tlearn.artifacts.details import LinearHead, MethodDetails
from tlearn.artifacts.history import HISTORY_FILE
from tlearn.artifacts.metrics import Metrics
from tlearn.artifacts.predictions import PREDICTIONS_FILE
from tlearn.core.words import count
from tlearn.report.markdown import floats, md, pct, quote, table
from tlearn.report.run_data import Run

HEAD_NAMES = {"logistic": "logistic regression", "svm": "linear SVM", "softmax": "softmax layer"}
WHY = {
    "features": "The backbone stays frozen and only a linear head learns, on features computed once per image: "
    "with a few dozen images per class this is fast, and it has too few parameters to overfit much.",
    "finetune": "The head learns first on the frozen backbone, then the top stages are unfrozen with lower "
    "learning rates for earlier layers, so the pretrained features adapt to these images without being "
    "overwritten (BatchNorm statistics stay frozen).",
    "scratch": "A small CNN trained from random weights: a baseline that shows what pretrained features add.",
}


def weights_license(weights: str) -> str | None:
    """The licence id of the pretrained weights a bundle started from, as timm or their sidecar records it.

    `weights` is the bundle's record: "builtin:<name>", "hub:<name>", "file:<path>" or "none". None
    when it is not known: random weights, a weights file without a sidecar licence, an unknown hub tag.
    """
    kind, _, name = weights.partition(":")
    try:
        if kind == "builtin":
            from tlearn.models.builtin import builtin_sidecar

            return _text(builtin_sidecar().get("pretrained_cfg", {}).get("license"))
        if kind == "hub":
            import timm

            cfg = timm.models.get_pretrained_cfg(name)
            return _text(getattr(cfg, "license", None))
        if kind == "file":
            from tlearn.models.weights_file import read_sidecar

            sidecar = read_sidecar(Path(name))
            return _text((sidecar.get("pretrained_cfg") or {}).get("license")) or _text(sidecar.get("license"))
    except Exception:  # a moved file, a damaged sidecar, a name timm no longer knows: the licence is unknown
        return None
    return None


def _base_model(weights: str) -> str | None:
    """The Hub repository of the pretrained weights ("timm/resnet50.a1_in1k"), for hub weights only."""
    kind, _, name = weights.partition(":")
    if kind != "hub":
        return None
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    return hub_id.partition("@")[0] if isinstance(hub_id, str) and hub_id else None


# --- sections ------------------------------------------------------------------------------------


def _beyond_the_classes(run: Run) -> str:
    """What the model answers for a picture of none of its classes: 'unknown' when far enough, else a class."""
    c = run.config
    if c.unknown is None:
        return (
            f"**It answers one of its {len(c.classes)} classes for anything.** A picture of something else entirely "
            "still gets one of these classes, often with a high probability. Screen inputs upstream, or train with "
            "an extra class of such pictures."
        )
    return (
        "**It answers 'unknown' only for pictures far from its training images.** The threshold keeps "
        f"{pct(c.unknown.recall)} of its known validation images (the rest would be answered 'unknown' too). A "
        "picture of something else that looks like its photos (the same setting, colours or shapes) can still get "
        "one of its classes, with a high probability. Screen inputs upstream where that matters, or train with an "
        "extra class of such pictures."
    )


def _title(run: Run) -> str:
    c = run.config
    headline = run.headline
    score = ""
    if headline is not None:
        m = run.metrics[headline]
        score = f" On its {_part(headline)} images it is right {pct(m.accuracy)} of the time ({m.n} images)."
    return (
        f"# {md(run.folder.name)}\n\n"
        f"An image classifier of {len(c.classes)} classes, trained with tlearn "
        f"(the {md(c.method or '?')} method on the {md(c.backbone or '?')} backbone) on the "
        f"{md(_dataset_name(run))} dataset.{score}"
    )


def _classes(run: Run) -> str:
    classes = run.config.classes
    listed = "\n".join(f"{i}. {md(name)}" for i, name in enumerate(classes))
    return (
        "## Classes\n\n"
        f"The model answers one of these {len(classes)} classes; the number is its column in the probabilities "
        f"(the order of `classes` in {CONFIG_FILE}).\n\n{listed}"
    )


def _data(run: Run) -> str:
    check = run.check
    parts = ["## Data and its checks"]
    split_counts = _split_sizes(run.split)
    if split_counts:
        parts.append("Split: " + ", ".join(f"{n:,} images for {_part_role(p)}" for p, n in split_counts.items()) + ".")
    if check is None:
        parts.append(f"The bundle holds no {CHECK_FILE}, so there is no record of the dataset's checks.")
        return "\n\n".join(parts)
    kinds = {"folders": "one folder per class", "splits": "train/val/test folders", "csv": "a CSV file"}
    kind = kinds.get(str(check.get("kind", "")), str(check.get("kind", "?")))
    (w0, w1), (h0, h1) = check.get("width_range", [0, 0]), check.get("height_range", [0, 0])
    parts.insert(
        1,
        f"{int(check.get('total', 0)):,} readable images in {len(check.get('classes', []))} classes, from {kind} "
        f"(`{md(_dataset_name(run))}`). Image sizes {w0} to {w1} px wide, {h0} to {h1} px high; imbalance "
        f"{float(check.get('imbalance', 0) or 0):.2f} to 1 (largest class over smallest).",
    )
    parts.append(_count_table(check))
    parts.append(_check_findings(check))
    return "\n\n".join(p for p in parts if p)


def _count_table(check: Mapping[str, Any]) -> str:
    counts: Mapping[str, int] = check.get("counts") or {}
    per_split: Mapping[str, Mapping[str, int]] = check.get("split_counts") or {}
    if not counts:
        return ""
    splits = list(per_split)
    rows = [[md(c), f"{n:,}", *(f"{per_split[s].get(c, 0):,}" for s in splits)] for c, n in counts.items()]
    return table(["class", "images", *splits], rows, right=range(1, 2 + len(splits)))


def _check_findings(check: Mapping[str, Any]) -> str:
    """Unreadable, ignored and duplicate files, and the check's problems and warnings, one bullet each."""
    unreadable, ignored, duplicates = (check.get(k) or [] for k in ("unreadable", "ignored", "duplicates"))
    lines = [
        f"{count(len(unreadable), 'unreadable image file')}, skipped"
        + (": " + ", ".join(f"{n} {r}" for r, n in Counter(u.get("reason", "?") for u in unreadable).items()))
        if unreadable
        else "every image file could be read",
    ]
    if ignored:
        lines.append(f"{count(len(ignored), 'file')} ignored (not images)")
    if duplicates:
        scopes = Counter(str(g.get("scope", "?")) for g in duplicates)
        where = ", ".join(f"{n} {s}" for s, n in scopes.items())
        lines.append(
            f"{count(len(duplicates), 'group')} of duplicate images ({where}); "
            "copies of one photo are kept in the same part of the split"
        )
    else:
        lines.append("no duplicate images")
    lines += [f"problem: {p}" for p in check.get("problems") or []]
    lines += [f"warning: {w}" for w in check.get("warnings") or []]
    return "The dataset check found:\n\n" + "\n".join(f"- {md(line)}" for line in lines)


def _method(run: Run) -> str:
    c, prep = run.config, run.config.preprocessing
    details = MethodDetails.from_dict(dict(c.details or {}))
    summary = _summary(details.linear) if details.linear is not None else details.summary
    facts = [
        ("method", c.method or "?"),
        ("backbone", c.backbone or "?"),
        ("pretrained weights", _weights_text(c.weights)),
        ("input", f"{prep.input_size[0]} × {prep.input_size[1]} px"),
        ("mirror averaging at prediction", "yes" if c.flip_tta else "no"),
    ]
    if summary:
        facts.insert(1, ("what was trained", summary))
    if details.interrupted:
        facts.append(("interrupted", f"in the {details.interrupted} phase: the weights are its best epoch"))
    parts = ["## Method", table(["", ""], [[md(k), md(v)] for k, v in facts])]
    auto = run.details.auto.explanation if run.details.auto is not None else run.details.auto_text
    if auto:
        parts += ["Why this method (`--method auto` measured, then chose):", quote(auto)]
    elif (why := WHY.get(c.method)) is not None:
        parts.append(f"Why: {why}")
    return "\n\n".join(parts)


def _summary(linear: LinearHead) -> str:
    head = HEAD_NAMES.get(linear.head, linear.head)
    parts = [
        f"a {head} on features of the frozen backbone (layer {linear.feature_layer}, "
        f"{linear.feature_dim} numbers per image)"
    ]
    if linear.C is not None:
        chosen = f", chosen by {linear.cv_folds}-fold cross-validation" if linear.cv_folds and linear.cv_scores else ""
        parts.append(f"C = {linear.C:.3g}{chosen}")
    if linear.views:
        parts.append(f"{linear.views} augmented views per training image")
    if linear.mirror:
        parts.append("mirror images as extra training views")
    return ", ".join(parts)


def _metrics(run: Run) -> str:
    if not run.metrics:
        return "## Metrics\n\nThe run scored no validation or test images, so there are no metrics."
    rows = [
        [
            _part(part),
            f"{m.n:,}",
            pct(m.accuracy),
            pct(m.balanced_accuracy),
            pct(m.macro_f1),
            f"{m.log_loss:.3f}",
            f"{m.ece:.3f}",
        ]
        for part, m in run.metrics.items()
    ]
    header = ["part", "images", "accuracy", "balanced accuracy", "macro F1", "log loss", "calibration error"]
    unbiased = (
        "so the test part is the unbiased one"
        if "test" in run.metrics
        else "so with no test part these numbers are a little optimistic"
    )
    parts = [
        "## Metrics",
        f"On images the model did not train on; validation chose the epoch or C, {unbiased}. Balanced accuracy "
        "and macro F1 weigh every class the same, so a weak small class shows; the calibration error is the mean "
        "gap between confidence and accuracy.",
        table(header, rows, right=range(1, 7)),
    ]
    headline = run.headline
    if headline is not None:
        parts += [f"Per class, on {_part(headline)}:", _per_class(run.metrics[headline])]
    return "\n\n".join(parts)


def _per_class(m: Metrics) -> str:
    rows = [[md(c.name), c.precision_text(), c.recall_text(), c.f1_text(), str(c.support)] for c in m.per_class]
    return table(["class", "precision", "recall", "F1", "images"], rows, right=range(1, 5))


def _limits(run: Run) -> str:
    c, prep = run.config, run.config.preprocessing
    h, w = prep.input_size
    total = (run.check or {}).get("total")
    train = _split_sizes(run.split).get("train")
    learned = f"{train:,} training images" if train else (f"{int(total):,} images" if total else "its images")
    lines = [
        f"**It was trained on one dataset.** It learned from {learned} of {md(_dataset_name(run))}; photos that "
        "differ from those (camera, light, background, framing, subject) may score well below the numbers above.",
        _beyond_the_classes(run),
    ]
    headline = run.headline
    if headline is not None:
        m = run.metrics[headline]
        if m.n:
            se = m.accuracy_se
            lines.append(
                f"**Small data.** The {_part(headline)} part has {m.n} images: one image is {100 / m.n:.1f} points "
                f"of accuracy, and the accuracy is known to about ±{100 * se:.1f} points (one standard error)."
            )
    lines.append(
        f"**Preprocessing.** It expects RGB photos. `tlearn.load` and `tlearn predict` do the rest: resize the "
        f"shorter side to {prep.resize_short_side} px ({md(prep.interpolation)}), crop the {prep.crop_mode} "
        f"{h} × {w} px, normalise with mean {floats(prep.mean)} and std {floats(prep.std)} (inside the network). "
        f"The exported ONNX model takes float RGB in [0, 1] at {h} × {w} px with the normalisation inside: resize "
        "and crop before it, as `model.onnx.json` says."
    )
    license = weights_license(c.weights)
    if license:
        lines.append(
            f"**Licence.** `{md(license)}` is the licence of the pretrained weights it started from; the images it "
            "learned from may carry terms of their own."
        )
    elif c.weights == "none" or not c.weights:
        lines.append(
            "**Licence.** It started from random weights, so no pretrained weights' terms apply: set `license` in "
            "the front matter (and mind the terms of the images it learned from) before sharing the model."
        )
    else:
        lines.append(
            "**Licence.** tlearn does not know the terms of the weights it started from "
            f"({md(_weights_text(c.weights))}): set `license` in the front matter before sharing the model."
        )
    return "## Limits\n\n" + "\n".join(f"- {line}" for line in lines)


def _usage(run: Run) -> str:
    folder = shlex.quote(run.folder.name)
    return f"""## How to use it

This folder is the whole model ({WEIGHTS_FILE} and {CONFIG_FILE}). In Python:

```python
import tlearn

clf = tlearn.load({json.dumps(run.folder.name)})  # this folder
clf.predict(["photo.jpg"])  # class names
clf.predict_proba(["photo.jpg"])  # (N, {len(run.config.classes)}) probabilities, columns in the order of the classes
```

On the command line:

```bash
tlearn predict {folder} photo.jpg more_photos/   # top-3 classes with probabilities
tlearn evaluate {folder} labelled_photos/        # metrics on new labelled images
tlearn export {folder}                           # model.onnx (+ model.onnx.json), checked against PyTorch
tlearn serve {folder}                            # a web page and an HTTP API
```

From the Hugging Face Hub: `tlearn.load(huggingface_hub.snapshot_download("USER/REPO"))`."""


def _provenance(run: Run) -> str:
    c = run.config
    present = [
        (name, role)
        for name, role in (
            (WEIGHTS_FILE, "the weights (safetensors)"),
            (CONFIG_FILE, "classes, backbone, preprocessing, method, metrics, versions"),
            (SPLIT_FILE, "which images trained, validated and tested it"),
            (CHECK_FILE, "the dataset check"),
            (PREDICTIONS_FILE, "its prediction for every validation and test image"),
            (HISTORY_FILE, "one row per epoch"),
            ("report.html", "the run's report: data, curves, metrics, mistakes"),
        )
        if (run.folder / name).is_file() or name == "report.html"
    ]
    parts = ["## Files", table(["file", "holds"], [[f"`{n}`", role] for n, role in present])]
    versions = ", ".join(f"{k} {v}" for k, v in c.versions.items() if k in ("tlearn", "torch", "timm", "python"))
    made = (
        f"Made {c.created or 'at an unrecorded time'}" + (f" with {versions}" if versions else "") + f", seed {c.seed}."
    )
    parts.append(md(made))
    if c.command:
        parts.append(f"```bash\n{c.command}\n```")
    return "\n\n".join(parts)


# --- Markdown pieces -----------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _part(part: str) -> str:
    return {"val": "validation", "test": "test", "train": "training"}.get(part, part)


def _part_role(part: str) -> str:
    return {
        "train": "training",
        "val": "validation (choosing the epoch or C)",
        "test": "the test (untouched until the end)",
    }.get(part, part)


def _split_sizes(split: Mapping[str, Any] | None) -> dict[str, int]:
    if not split:
        return {}
    counts = split.get("counts")
    if isinstance(counts, Mapping):
        return {str(p): int(n) for p, n in counts.items() if n}
    return {p: len(split.get(p) or []) for p in ("train", "val", "test") if split.get(p)}


def _weights_text(weights: str) -> str:
    kind, _, name = weights.partition(":")
    if kind == "none" or not weights:
        return "none (random initial weights)"
    if kind == "builtin":
        return f"{name} (built into tlearn)"
    if kind == "hub":
        return f"{name} (timm, from the Hugging Face Hub)"
    if kind == "file":
        return f"a local file, {Path(name).name}"
    return weights


def _dataset_name(run: Run) -> str:
    """The dataset's folder name ("flowers17"); for a CSV file, the folder that holds it."""
    data = run.data
    if data is None:
        return run.folder.name
    if data.suffix.lower() in (".csv", ".tsv", ".txt") and data.parent.name:
        return data.parent.name
    return data.name or run.folder.name
