"""README.md in every bundle: a Hugging Face model card, so the folder explains itself wherever it goes.

The card has the YAML front matter the Hub reads (library, task, licence, tags, dataset, and a
`model-index` with accuracy, balanced accuracy and macro F1 per part of the split, the very numbers
of tlearn.json), then sections a person reads: the classes, the data and what its checks found, the
method and why, the metrics, the limits, and how to load and run the model.

`write_model_card(run)` writes `README.md` beside tlearn.json; `write_report` calls it, so every run
and every `tlearn report` has one. Every file but tlearn.json is optional, as for the report. The
front matter is built by huggingface_hub's own `ModelCardData`, so the Hub parses what it wrote.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from tlearn.core.files import write_text_atomic
from tlearn.report.card_sections import (
    _base_model,
    _classes,
    _data,
    _dataset_name,
    _limits,
    _method,
    _metrics,
    _provenance,
    _title,
    _usage,
    weights_license,
)
from tlearn.report.run_data import Run, read_run

__all__ = ["MODEL_CARD_FILE", "card_data", "render_model_card", "weights_license", "write_model_card"]

MODEL_CARD_FILE = "README.md"
UNKNOWN_LICENSE = "unknown"  # a licence id the Hub accepts: the weights' terms are not known to tlearn
# model-index metrics: (key in Metrics.to_dict(), Hub metric type, its name, its arguments)
CARD_METRICS = (
    ("accuracy", "accuracy", "Accuracy", None),
    ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy", None),
    ("macro_f1", "f1", "Macro F1", {"average": "macro"}),
)
SPLIT_NAMES = {"val": "validation"}  # the Hub's name for a part, where it differs from tlearn's


def write_model_card(run: Run | str | Path) -> Path:
    """Write `README.md` in the run folder (atomically) and return its path. Raises BundleError without tlearn.json."""
    run = run if isinstance(run, Run) else read_run(run)
    path = run.folder / MODEL_CARD_FILE
    write_text_atomic(path, render_model_card(run))
    return path


def render_model_card(run: Run) -> str:
    """The whole card: YAML front matter, then Markdown."""
    sections = [
        _title(run),
        _classes(run),
        _data(run),
        _method(run),
        _metrics(run),
        _limits(run),
        _usage(run),
        _provenance(run),
    ]
    return f"---\n{card_data(run).to_yaml()}\n---\n\n" + "\n\n".join(s.strip() for s in sections if s) + "\n"


def card_data(run: Run) -> ModelCardData:
    """The front matter: what the Hub indexes, with the metrics of tlearn.json as its model-index."""
    c = run.config
    dataset = _dataset_name(run)
    kind = "csv" if (run.check or {}).get("kind") == "csv" else "imagefolder"
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image classification",
            dataset_type=kind,
            dataset_name=dataset,
            dataset_split=SPLIT_NAMES.get(part, part),
            metric_type=metric_type,
            metric_name=name,
            metric_args=args,
            metric_value=float(c.metrics[part][key]),
        )
        for part in run.metrics
        for key, metric_type, name, args in CARD_METRICS
    ]
    pretrained = c.weights != "none" and c.method != "scratch"
    tags = ["tlearn", "image-classification", "timm", *(["transfer-learning"] if pretrained else []), c.architecture]
    return ModelCardData(
        library_name="tlearn",
        pipeline_tag="image-classification",
        license=weights_license(c.weights) or UNKNOWN_LICENSE,
        tags=list(dict.fromkeys(tags)),
        datasets=[dataset],
        base_model=_base_model(c.weights),
        model_name=run.folder.name,
        eval_results=results or None,
    )
