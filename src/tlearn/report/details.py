"""The method's own record in tlearn.json (`details`), read into values the report's Method section shows.

`details` is a free-form dict that each method fills in its own way: the feature method's C and its
cross-validation scores, the auto method's evidence and decision, the run's timings and options.
This module is the one place in the report that knows those keys; every key it does not know stays in
`MethodDetails.other`, shown as it is, so a new detail appears in the report without a change here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tlearn.artifacts.details import Calibration, PseudoLabels, calibration_from_dict


@dataclass(frozen=True)
class Probe:
    """A linear probe of the auto method: one layer of the backbone and its cross-validated accuracy."""

    layer: str
    accuracy: float | None


@dataclass(frozen=True)
class AutoRecord:
    """What the auto method measured and decided, with the keys that have their own row taken out."""

    explanation: str | None = None  # its paragraph: why this method, layer and stages
    probes: tuple[Probe, ...] = ()
    quadrant: str | None = None  # "small and different": dataset size and distance from the pretraining data
    decision: dict[str, Any] = field(default_factory=dict)  # the rest of the decision: method, layer, epochs
    forward_ips: float | None = None  # images per second through the network
    finetune_estimates: dict[str, float] = field(default_factory=dict)  # stages unfrozen -> seconds
    budget_s: float | None = None
    per_class: tuple[float, int] | None = None  # training images per class: the median and the fewest
    epoch_seconds: dict[str, float] = field(default_factory=dict)  # stages unfrozen -> seconds each epoch adds
    view_seconds: dict[str, float] = field(default_factory=dict)  # stages unfrozen -> seconds each cached view adds
    validation: dict[str, Any] | None = None  # candidate method -> validation accuracy
    evidence: dict[str, Any] = field(default_factory=dict)  # the rest of the measurements
    other: dict[str, Any] = field(default_factory=dict)  # the rest of the record


@dataclass(frozen=True)
class MethodDetails:
    other: dict[str, Any] = field(default_factory=dict)  # keys without a place of their own: C, unfreeze, ...
    auto: AutoRecord | None = None
    auto_text: str | None = None  # an auto record that is plain text, not a mapping
    cv_scores: tuple[tuple[float, float], ...] = ()  # (C, cross-validated accuracy) per strength tried
    chosen_c: Any = None
    timings: dict[str, float] | None = None  # step -> seconds; None when not recorded
    run_options: Any = None  # every option of the run (its TrainConfig as a dict)
    unlabelled: PseudoLabels | None = None  # what --unlabelled did
    calibration: Calibration | None = None  # the temperature, ECE before and after, reliability per part


def read_details(details: Mapping[str, Any]) -> MethodDetails:
    """The keys of `details` the report shows in places of their own, and the rest as they are."""
    rest = dict(details)
    auto = rest.pop("auto", None)
    options = rest.pop("config", None)
    timings = rest.pop("timings", None)
    cv = rest.pop("cv_scores", None)
    pseudo = _read_pseudo(rest.pop("unlabelled", None))
    cal = rest.pop("calibration", None)
    rest.pop("method", None)  # the method is a field of its own in tlearn.json
    pairs = bool(cv) and all(isinstance(x, list | tuple) and len(x) == 2 for x in cv)
    return MethodDetails(
        other=rest,
        auto=_read_auto(auto) if isinstance(auto, Mapping) else None,
        auto_text=None if auto is None or isinstance(auto, Mapping) else str(auto),
        cv_scores=tuple((float(c), float(score)) for c, score in cv) if pairs else (),
        chosen_c=rest.get("C"),
        timings={k: float(v) for k, v in timings.items() if isinstance(v, int | float)}
        if isinstance(timings, Mapping)
        else None,
        run_options=options or None,
        unlabelled=pseudo,
        calibration=calibration_from_dict(dict(cal)) if isinstance(cal, Mapping) and "temperature" in cal else None,
    )


def _read_pseudo(record: Any) -> PseudoLabels | None:
    """The --unlabelled record, or None when there is none (or it is not one this tlearn can read)."""
    if not isinstance(record, Mapping):
        return None
    try:
        return PseudoLabels(**{f.name: record[f.name] for f in fields(PseudoLabels) if f.name in record})
    except TypeError:
        return None


def _read_auto(record: Mapping[str, Any]) -> AutoRecord:
    auto = dict(record)
    evidence = dict(auto.pop("evidence", None) or {})
    decision = dict(auto.pop("decision", None) or {})
    explanation = auto.pop("explanation", None) or decision.pop("explanation", None)
    decision.pop("explanation", None)
    quadrant = None
    if "size" in decision or "domain" in decision:
        quadrant = f"{decision.pop('size', '?')} and {decision.pop('domain', '?')}"
    probes = tuple(
        Probe(str(p.get("description", p.get("layer"))), _fraction(p.get("accuracy")))
        for p in evidence.pop("probes", None) or []
    )
    forward_ips = float(evidence.pop("forward_ips")) if "forward_ips" in evidence else None
    estimates = evidence.pop("finetune_estimates", None) or {}
    budget_s = float(evidence.pop("budget_s")) if "budget_s" in evidence else None
    median, fewest = evidence.pop("per_class_median", None), evidence.pop("per_class_min", None)
    per_class = (float(median), int(fewest)) if _numbers(median, fewest) else None
    epoch_seconds, view_seconds = (
        _per_stage(evidence.pop("epoch_seconds", None)),
        _per_stage(evidence.pop("view_seconds", None)),
    )
    views = evidence.pop("views", None)  # the views the estimates count; the decision's, what fine-tuning ran with
    if estimates and views is not None:
        evidence["views in the fine-tuning estimate"] = views
    if not decision.get("views"):  # no fine-tuning, no cached views to speak of
        decision.pop("views", None)
    validation = auto.pop("validation", None)
    return AutoRecord(
        explanation=str(explanation) if explanation else None,
        probes=probes,
        quadrant=quadrant,
        decision=_plain(decision),
        forward_ips=forward_ips,
        finetune_estimates={str(k): float(v) for k, v in estimates.items()},
        budget_s=budget_s,
        per_class=per_class,
        epoch_seconds=epoch_seconds,
        view_seconds=view_seconds,
        validation=dict(validation) if isinstance(validation, Mapping) else None,
        evidence=_plain(evidence),
        other=_plain(auto),
    )


# Plain labels for the auto record's keys the report shows as they are; a key not named here keeps its own.
_AUTO_LABELS = {
    "feature_layer": "feature layer",
    "unfreeze": "stages to fine-tune",
    "epochs": "fine-tuning epochs",
    "train_images": "training images",
    "val_images": "validation images",
    "chosen": "kept",
    "views": "cached views per image",
}


def _per_stage(values: Any) -> dict[str, float]:
    """A record keyed by the stages unfrozen ("1", ..., "all") -> seconds; {} when it is not one."""
    return {str(k): float(v) for k, v in values.items()} if isinstance(values, Mapping) else {}


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` under plain labels, without the empty ones (nothing measured, nothing to show)."""
    return {_AUTO_LABELS.get(k, k): v for k, v in values.items() if v is not None and v != {} and v != []}


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _fraction(value: Any) -> float | None:
    """A number read back, None where there is none (a probe that could not be measured wrote NaN)."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
