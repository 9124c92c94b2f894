"""Is the model overfitting? A plain-words reading of the training curves, with what to try.

`diagnose(rows)` looks at the epoch history (history.csv) the way an experienced person would: the
gap between training and validation accuracy at the end and whether it grew, the epoch where the
validation loss stopped falling and turned up, and whether the model fits even its training images.
It is a pure function of the rows, so crafted histories test it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# HistoryRow and read_history are imported from here by callers not yet moved to tlearn.artifacts.history.
from tlearn.artifacts.history import HistoryRow, kept_epochs, read_history

__all__ = ["Diagnosis", "HistoryRow", "Verdict", "diagnose", "kept_epochs", "read_history"]

Verdict = Literal["overfitting", "slight overfitting", "healthy", "underfitting", "unknown"]

# The end of a phase is the mean of its last SMOOTH epochs: one epoch on a small validation set is noisy.
SMOOTH = 3
# Train accuracy this far above validation accuracy (fractions) is overfitting; half of it is slight.
OVERFIT_GAP = 0.10
SLIGHT_GAP = 0.05
# The gap "grows" when it widens by more than this between the start and the end of the last phase.
GAP_GROWTH = 0.03
# Validation loss has "turned" when it ends this much (relative) above its minimum, reached at least
# TURN_EPOCHS epochs before the end: less than that is noise around a plateau.
LOSS_RISE = 0.10
TURN_EPOCHS = 2
# A model below this training accuracy at the end does not fit its own training images.
UNDERFIT_ACC = 0.80
# Validation accuracy gaining more than this across the last SMOOTH epochs is "still rising".
STILL_RISING = 0.02


@dataclass(frozen=True)
class Diagnosis:
    verdict: Verdict
    headline: str  # one sentence a user reads first
    findings: tuple[str, ...]  # what the curves show, with numbers
    advice: tuple[str, ...]  # what to try, with the flags to pass
    gap: float | None = None  # train minus validation accuracy at the end (fraction)
    gap_start: float | None = None  # the same at the start of the last phase
    val_loss_turn: int | None = None  # epoch of the lowest validation loss, when it rose after it

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "headline": self.headline,
            "findings": list(self.findings),
            "advice": list(self.advice),
            "gap": self.gap,
            "gap_start": self.gap_start,
            "val_loss_turn": self.val_loss_turn,
        }


def diagnose(rows: Sequence[HistoryRow]) -> Diagnosis:
    """Read the history of a run: verdict, findings and advice, judged on the last phase's curves."""
    if not rows:
        return Diagnosis("unknown", "No training history: this method does not train in epochs.", (), ())
    phases = list(dict.fromkeys(r.phase for r in rows))
    last = [r for r in rows if r.phase == phases[-1]]
    end_train = _mean([r.train_acc for r in last[-SMOOTH:]])
    validated = [r for r in last if r.val_acc is not None and r.val_loss is not None]
    if not validated:
        return Diagnosis(
            "unknown",
            "There is no validation split, so overfitting cannot be measured.",
            (f"Training accuracy ended at {end_train:.0%}.",),
            ("Keep some images for validation: --val-frac 0.15.",),
        )

    train_acc = [r.train_acc for r in validated]
    val_acc = [r.val_acc for r in validated if r.val_acc is not None]
    end_train, end_val = _mean(train_acc[-SMOOTH:]), _mean(val_acc[-SMOOTH:])
    gap = end_train - end_val
    gap_start = _mean([t - v for t, v in zip(train_acc[:SMOOTH], val_acc[:SMOOTH], strict=True)])
    turns = {p: t for p in phases if (t := _loss_turn([r for r in rows if r.phase == p])) is not None}
    turn = turns.get(phases[-1])
    growing = len(validated) > SMOOTH and gap - gap_start > GAP_GROWTH
    kept = kept_epochs(rows)

    findings = [_gap_sentence(end_train, end_val, gap, gap_start, growing, validated)]
    for phase, epoch in turns.items():
        findings.append(_turn_sentence(rows, phase, epoch, kept.get(phase)))
    rising = len(val_acc) >= SMOOTH and val_acc[-1] - val_acc[-SMOOTH] > STILL_RISING
    if rising:
        findings.append("Validation accuracy was still rising at the end of training.")

    overfit = gap >= OVERFIT_GAP or (gap >= SLIGHT_GAP and (growing or turn is not None))
    drifting = gap >= SLIGHT_GAP or turn is not None
    verdict, headline, advice = _verdict(overfit, drifting, end_train, end_val, phases)
    if rising and verdict in ("healthy", "underfitting"):
        advice.insert(0, f"Train for more epochs ({_epochs_flag(phases)}): validation accuracy had not levelled off.")
    return Diagnosis(verdict, headline, tuple(findings), tuple(advice), gap, gap_start, turn)


def _verdict(
    overfit: bool, drifting: bool, end_train: float, end_val: float, phases: Sequence[str]
) -> tuple[Verdict, str, list[str]]:
    """The verdict, its headline and the advice, from what the curves showed."""
    if overfit:
        verdict: Verdict = "overfitting"
        headline = (
            f"The model overfits: it is right on about {end_train:.0%} of its training images but only "
            f"{end_val:.0%} of the validation images."
        )
        advice = _overfit_advice(phases)
    elif drifting:
        verdict = "slight overfitting"
        headline = "The model overfits slightly: validation results are close to training results, but drifting."
        advice = _overfit_advice(phases)[:3]
    elif end_train < UNDERFIT_ACC:
        verdict = "underfitting"
        headline = (
            f"The model underfits: it gets only about {end_train:.0%} of its own training images right, "
            "so it has not learned enough yet."
        )
        advice = _underfit_advice(phases)
    else:
        verdict = "healthy"
        headline = "Training looks healthy: validation accuracy follows training accuracy closely."
        advice = ["Nothing to fix."]
    return verdict, headline, advice


def _loss_turn(rows: Sequence[HistoryRow]) -> int | None:
    """The epoch of the lowest validation loss in a phase, if the loss rose clearly after it."""
    losses = [(r.val_loss, r.epoch) for r in rows if r.val_loss is not None]
    if len(losses) <= TURN_EPOCHS:
        return None
    low, epoch = min(losses)
    end = losses[-1][0]
    if epoch <= losses[-1][1] - TURN_EPOCHS and end > low * (1 + LOSS_RISE) and end - low > 1e-3:
        return epoch
    return None


def _gap_sentence(
    train: float, val: float, gap: float, start: float, growing: bool, validated: Sequence[HistoryRow]
) -> str:
    first, last = validated[0].epoch, validated[-1].epoch
    n = min(SMOOTH, len(validated))
    when = "At the last epoch" if n == 1 else f"Over the last {n} epochs"
    text = f"{when}, training accuracy averaged {train:.0%} and validation accuracy {val:.0%}: "
    if gap < 0.01:
        text += "no gap (augmented training images are often harder than the validation images)."
    else:
        text += f"a gap of {_points(gap)}."
    if growing:
        text += f" The gap grew from {start * 100:.0f} to {_points(gap)} between epochs {first} and {last}."
    elif len(validated) > SMOOTH and start - gap > GAP_GROWTH:
        text += f" The gap narrowed from {_points(start)} between epochs {first} and {last}."
    elif len(validated) > SMOOTH:
        text += f" It stayed about the same from epoch {first} to {last}."
    return text


def _turn_sentence(rows: Sequence[HistoryRow], phase: str, epoch: int, kept: int | None) -> str:
    in_phase = [r for r in rows if r.phase == phase and r.val_loss is not None]
    low = next(r for r in in_phase if r.epoch == epoch)
    end = in_phase[-1]
    text = (
        f"Validation loss turned at epoch {epoch} ({_phase_name(phase)}): it fell to {low.val_loss:.3f}, "
        f"then rose to {end.val_loss:.3f} by epoch {end.epoch} while training loss "
        + ("kept falling." if end.train_loss < low.train_loss else "did not fall either.")
    )
    if kept is not None:
        text += f" The saved model keeps the weights of epoch {kept}" + (", before the rise." if kept <= epoch else ".")
    return text


def _overfit_advice(phases: Sequence[str]) -> list[str]:
    advice = ["More augmentation: --preset strong, or add --mixup 0.2 (tlearn augment DATA shows what it does)."]
    if "finetune" in phases:
        advice.append("Unfreeze fewer stages: --unfreeze 1, or 0 to train only the head on the frozen backbone.")
    if "finetune" in phases or "scratch" in phases:
        advice.append(
            "Use features instead of fine-tuning: --method features keeps the pretrained network fixed and fits "
            "a regularised linear head, which overfits much less on small datasets."
        )
    advice.append("Regularise more: --weight-decay 1e-3, --dropout 0.3, --label-smoothing 0.1.")
    advice.append("More photos per class help most of all.")
    return advice


def _underfit_advice(phases: Sequence[str]) -> list[str]:
    advice = []
    if "finetune" in phases:
        advice.append("Unfreeze more stages (--unfreeze all) or raise the learning rate (--lr 3e-4).")
    elif "head" in phases:
        advice.append("Fine-tune the backbone: --method finetune lets it adapt to your images.")
    advice.append("Use less augmentation if the training views are hard to recognise: --preset light.")
    advice.append("Try a larger backbone (tlearn backbones lists them).")
    return advice


def _epochs_flag(phases: Sequence[str]) -> str:
    return "--head-epochs" if phases[-1] == "head" else "--epochs"


def _phase_name(phase: str) -> str:
    return {"head": "phase 1, head on the frozen backbone", "finetune": "phase 2, fine-tuning"}.get(phase, phase)


def _points(fraction: float) -> str:
    """A difference of accuracies in percentage points: 0.17 -> "17 points"."""
    n = round(fraction * 100)
    return f"{n} point" if abs(n) == 1 else f"{n} points"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
