"""What a method records about how it trained: typed values in, the `details` object of tlearn.json out.

Each method returns a `MethodDetails`; the run adds its timings and options when it writes the bundle.
`to_dict` gives the JSON record (the same keys bundles have always had, so old bundles and new ones
read alike); `from_dict` reads one back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from tlearn.core.words import count


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
class Reliability:
    """Confidence against accuracy on one part, before and after the temperature: the reliability diagram.

    Per equal-width confidence bin (`CALIBRATION_BINS` of them): images, mean confidence, accuracy
    (the last two None for an empty bin)."""

    part: str  # "val" or "test"
    images: int
    ece_before: float
    ece_after: float
    count_before: tuple[int, ...]
    confidence_before: tuple[float | None, ...]
    accuracy_before: tuple[float | None, ...]
    count_after: tuple[int, ...]
    confidence_after: tuple[float | None, ...]
    accuracy_after: tuple[float | None, ...]


@dataclass(frozen=True)
class Calibration:
    """The temperature and what it did on the validation images (ECE: expected calibration error),
    and the reliability of validation and test before and after it."""

    temperature: float
    images: int
    ece_before: float | None = None
    ece_after: float | None = None
    log_loss_before: float | None = None
    log_loss_after: float | None = None
    reliability: tuple[Reliability, ...] = ()

    def part(self, name: str) -> Reliability | None:
        return next((r for r in self.reliability if r.part == name), None)


@dataclass(frozen=True)
class PseudoLabels:
    """What `--unlabelled` did: photos found, left out, used with the labels the model gave them."""

    folder: str
    found: int  # image files in the folder
    unreadable: int
    excluded: int  # copies of labelled (train, validation or test) images, or repeats within the folder
    used: int  # pseudo-labelled photos the final head learned from
    threshold: float | None  # the lowest confidence taken (None when none were used)
    rounds: int  # rounds that improved validation and were kept
    class_counts: dict[str, int]  # predicted class of the photos used
    val_before: float  # validation accuracy without them
    val_after: float  # and with them
    kept: bool = True  # False when auto kept fine-tuning, which does not use them
    checked: int = 0  # labelled images the guesses were judged on: held-out training images + validation
    right_before: int = 0  # of them, right without the guesses
    right_after: int = 0  # right with the guesses used

    @property
    def summary(self) -> str:
        """One line for the run's summary and report."""
        skipped = f"; left out {self.excluded} copies of labelled images" if self.excluded else ""
        skipped += f", {self.unreadable} unreadable" if self.unreadable else ""
        if not self.kept:
            return (
                f"Unlabelled: {self.found} photos, not used (auto kept fine-tuning, which learns from labels "
                f"only){skipped}."
            )
        judged = f"{self.checked} held-out labelled images" if self.checked else "validation images"
        if not self.used:
            right = f" ({self.right_before} of {self.checked} right without them)" if self.checked else ""
            return (
                f"Unlabelled: {self.found} photos, none used: no confident share of them got more of the "
                f"{judged} right{right}{skipped}."
            )
        counts = ", ".join(f"{c} {n}" for c, n in sorted(self.class_counts.items(), key=lambda kv: -kv[1]) if n)
        return (
            f"Unlabelled: {self.used} of {self.found} photos used with predicted labels (confidence >= "
            f"{self.threshold:.0%}, {count(self.rounds, 'round')}; "
            + (
                f"held-out labelled images {self.right_before} -> {self.right_after} of {self.checked} right, "
                if self.checked
                else ""
            )
            + f"validation {self.val_before:.1%} -> {self.val_after:.1%}){skipped}. Predicted: {counts}."
        )


@dataclass(frozen=True)
class MethodDetails:
    method: str  # what ran: "features", "finetune" or "scratch"
    linear: LinearHead | None = None
    epochs: Epochs | None = None
    auto: AutoRecord | None = None
    interrupted: str | None = None  # the phase Ctrl-C stopped: the bundle holds that phase's best epoch
    calibration: Calibration | None = None  # the temperature the logits are divided by, fitted on validation
    unlabelled: PseudoLabels | None = None  # what --unlabelled did
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
            cal = self.calibration
            doc["calibration"] = {f.name: _json(getattr(cal, f.name)) for f in fields(cal) if f.name != "reliability"}
            doc["calibration"]["reliability"] = [
                {f.name: _json(getattr(r, f.name)) for f in fields(r)} for r in cal.reliability
            ]
        if self.unlabelled is not None:
            doc["unlabelled"] = {f.name: getattr(self.unlabelled, f.name) for f in fields(self.unlabelled)}
        return {**self.extra, **doc}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodDetails:
        rest = dict(d)
        method = str(rest.pop("method", ""))
        linear = _take(LinearHead, rest) if "head" in rest and "feature_dim" in rest else None
        epochs = _take(Epochs, rest) if "summary" in rest else None
        auto = rest.pop("auto", None)
        cal = rest.pop("calibration", None)
        pseudo = rest.pop("unlabelled", None)
        return cls(
            method=method,
            linear=linear,
            epochs=epochs,
            auto=_take(AutoRecord, dict(auto)) if isinstance(auto, dict) and "decision" in auto else None,
            interrupted=rest.pop("interrupted", None),
            calibration=calibration_from_dict(cal) if isinstance(cal, dict) and "temperature" in cal else None,
            unlabelled=_take(PseudoLabels, dict(pseudo)) if isinstance(pseudo, dict) and "used" in pseudo else None,
            extra=rest,
        )


def calibration_from_dict(d: dict[str, Any]) -> Calibration:
    """The calibration record of tlearn.json's details (older ones have no reliability)."""
    rest = dict(d)
    parts = rest.pop("reliability", None) or []
    reliability = tuple(Reliability(**_tuples(p)) for p in parts if isinstance(p, dict))
    return replace(_take(Calibration, rest), reliability=reliability)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


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
