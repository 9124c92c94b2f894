"""Whether prediction runs the int8 model: the one rule, applied to what `int8.py` measured.

`tlearn export BUNDLE --int8 auto` uses int8 only where it keeps the accuracy and buys speed on this
machine: the validation accuracy within MAX_DROP_POINTS of the float model's, with one standard error
of that measured drop (measured on the bundle's own images, not assumed), and the engine at least
MIN_SPEEDUP times as fast (int8 kernels are fast with AVX-512 VNNI, and can be slower than float on a
CPU with AVX2 only). `--int8 on` uses it whatever was measured; `--int8 off` makes no int8 model. The
choice and its reason go into the JSON beside the exported model, where the ONNX engine reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tlearn.infer.int8 import Int8Report

MODES = ("off", "on", "auto")
MAX_DROP_POINTS = 0.5  # validation accuracy int8 may lose, in percentage points
MIN_SPEEDUP = 1.1  # a smaller gain is within the noise of timing a few batches


@dataclass(frozen=True)
class Int8Choice:
    """Whether prediction uses the int8 model, and why, in one sentence a user can read."""

    mode: str  # "on" or "auto"
    use: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "used": self.use, "reason": self.reason}


def choose_int8(report: Int8Report, mode: str) -> Int8Choice:
    """The choice for `report` under `mode` ("on" or "auto")."""
    measured = _measured(report)
    if mode == "on":
        return Int8Choice(mode, True, f"asked for with --int8 on ({measured})")
    if report.accuracy_float is None or report.accuracy_int8 is None:
        return Int8Choice(mode, False, f"float kept: int8's accuracy could not be checked ({report.skipped})")
    drop = (report.accuracy_float - report.accuracy_int8) * 100
    if drop > MAX_DROP_POINTS + 1e-9:
        return Int8Choice(
            mode, False, f"float kept: int8 loses {drop:.1f} points on {_part(report)}, more than {MAX_DROP_POINTS}"
            f" ({measured})"
        )  # fmt: skip
    changed, unknown, bound = _drop_bound(report, drop)
    if bound > MAX_DROP_POINTS + 1e-9:
        of_them = f" (whether it is unknown, for {unknown})" if unknown else ""
        return Int8Choice(
            mode, False, f"float kept: int8 loses {drop:.1f} points on {_part(report)} but changes {changed} of "
            f"{report.n} answers{of_them}, so it may lose {bound:.1f} (one standard error), more than "
            f"{MAX_DROP_POINTS} ({measured})"
        )  # fmt: skip
    speedup = report.speedup
    if speedup is None or speedup < MIN_SPEEDUP:
        return Int8Choice(
            mode, False, f"float kept: int8 is not faster on this machine ({measured}; it needs {MIN_SPEEDUP}x)"
        )
    return Int8Choice(mode, True, f"int8 keeps the accuracy within {MAX_DROP_POINTS} point and is faster ({measured})")


def _drop_bound(report: Int8Report, drop: float) -> tuple[int, int, float]:
    """The answers int8 changes (those whose unknown answer changes among them), and the accuracy it may
    lose: the measured drop plus one standard error.

    On a few hundred validation images one answer is 0.3 to 0.7 point, so the measured drop alone lets
    int8 through where it is lucky on validation (a fine-tuned flowers17 bundle: no net loss on 137
    validation images, 1.7 points on 299 test images). The drop is the difference of two paired
    counts, the images only float gets right and those only int8 gets right; its standard error is
    about sqrt(their sum) / n, and the changed answers bound their sum. An image that int8 calls
    "unknown" where float named its class (or the other way round) is a changed answer too: the
    unknown score moves with the features, and the threshold was placed on float's scores. Counting
    the two kinds apart may count an image twice, which errs on float's side.
    """
    if report.agreement is None or not report.n:
        return 0, 0, drop
    unknown = 0 if report.unknown_agreement is None else round((1 - report.unknown_agreement) * report.n)
    changed = round((1 - report.agreement) * report.n) + unknown
    return changed, unknown, drop + 100 * math.sqrt(changed) / report.n


def _part(report: Int8Report) -> str:
    return {"val": "validation", "test": "the test split"}.get(report.part or "", "validation")


def _measured(report: Int8Report) -> str:
    """What was measured, in a few words: accuracies on the split, and the speed ratio."""
    parts = []
    if report.accuracy_float is not None and report.accuracy_int8 is not None:
        parts.append(
            f"{_part(report)} {report.accuracy_int8:.1%} int8 vs {report.accuracy_float:.1%} float, {report.n} images"
        )
    if report.speedup is not None:
        parts.append(f"{report.speedup:.2f}x the float model's speed")
    if report.weight_bits == 7:
        parts.append("7-bit weights, as this CPU has no VNNI")
    return "; ".join(parts) or "not measured"
