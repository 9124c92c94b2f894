"""What a method records about how it trained: typed values in, the `details` object of tlearn.json out.

Each method returns a `MethodDetails`; the run adds its timings and options when it writes the bundle.
`to_dict` gives the JSON record (the same keys bundles have always had, so old bundles and new ones
read alike); `from_dict` reads one back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class LinearHead:
    """The feature method's head: which kind, its regularisation and how it was chosen, on what features."""

    head: str  # "logistic", "svm" or "softmax"
    C: float | None  # None for the softmax layer (no C: weight decay and early stopping instead)
    cv_folds: int
    cv_scores: tuple[tuple[float, float], ...]  # (C, mean cross-validated accuracy) per C tried
    views: int  # augmented views per training image
    mirror: bool  # the mirror image is a second view and the test-time augmentation
    feature_layer: str
    feature_dim: int
    train_rows: int  # feature rows the head learned from (images x views)


@dataclass(frozen=True)
class Epochs:
    """What a method that trains in epochs ran: phases, stages, where it stopped."""

    summary: str
    head_epochs_run: int | None = None  # fine-tuning phase 1
    unfrozen: tuple[str, ...] = ()  # the stages phase 2 trained
    cached_below: str | None = None  # the cut: everything below ran once per image and view
    finetune_epochs_run: int | None = None
    epochs_run: int | None = None  # from scratch
    best_epoch: int | None = None
    stopped_early: bool | None = None
    trained_parameters: int | None = None
    planned_epochs: int | None = None  # the epochs asked for, when the time budget cut them short
    gave_up: str | None = None  # why fine-tuning stopped before catching up with the features


@dataclass(frozen=True)
class AutoRecord:
    """What `--method auto` measured and decided, and which candidate it kept."""

    evidence: dict[str, Any]
    decision: dict[str, Any]
    explanation: str
    validation: dict[str, float] | None = None  # candidate -> validation accuracy, when both ran
    chosen: str | None = None


@dataclass(frozen=True)
class Calibration:
    """The temperature and what it did on the validation images (ECE: expected calibration error)."""

    temperature: float
    images: int
    ece_before: float | None = None
    ece_after: float | None = None
    log_loss_before: float | None = None
    log_loss_after: float | None = None


@dataclass(frozen=True)
class MethodDetails:
    method: str  # what ran: "features", "finetune" or "scratch"
    linear: LinearHead | None = None
    epochs: Epochs | None = None
    auto: AutoRecord | None = None
    interrupted: str | None = None  # the phase Ctrl-C stopped: the bundle holds that phase's best epoch
    calibration: Calibration | None = None  # the temperature the logits are divided by, fitted on validation
    extra: dict[str, Any] = field(default_factory=dict)  # keys of records this tlearn does not know

    @property
    def summary(self) -> str | None:
        return self.epochs.summary if self.epochs is not None else None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method}
        for part in (self.linear, self.epochs):
            if part is not None:
                doc.update({f.name: _json(getattr(part, f.name)) for f in fields(part)})
        if self.auto is not None:
            doc["auto"] = {f.name: _json(getattr(self.auto, f.name)) for f in fields(self.auto)}
        if self.interrupted:
            doc["interrupted"] = self.interrupted
        if self.calibration is not None:
            doc["calibration"] = {f.name: getattr(self.calibration, f.name) for f in fields(self.calibration)}
        return {**self.extra, **doc}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodDetails:
        rest = dict(d)
        method = str(rest.pop("method", ""))
        linear = _take(LinearHead, rest) if "head" in rest and "feature_dim" in rest else None
        epochs = _take(Epochs, rest) if "summary" in rest else None
        auto = rest.pop("auto", None)
        cal = rest.pop("calibration", None)
        return cls(
            method=method,
            linear=linear,
            epochs=epochs,
            auto=_take(AutoRecord, dict(auto)) if isinstance(auto, dict) and "decision" in auto else None,
            interrupted=rest.pop("interrupted", None),
            calibration=_take(Calibration, dict(cal)) if isinstance(cal, dict) and "temperature" in cal else None,
            extra=rest,
        )


def _take(kind: Any, rest: dict[str, Any]) -> Any:
    """An instance of dataclass `kind` from the keys of `rest` it has (removed from `rest`)."""
    values = {f.name: rest.pop(f.name) for f in fields(kind) if f.name in rest}
    for name in ("cv_scores", "unfrozen"):
        if isinstance(values.get(name), list):
            values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in values[name])
    return kind(**values)


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value
