"""The plain-words diagnosis of training curves, on crafted histories whose answer is known."""

from __future__ import annotations

from tlearn.artifacts.history import HistoryRow
from tlearn.report.diagnosis import diagnose


def history(
    phase: str,
    train_acc: list[float],
    val_acc: list[float | None],
    val_loss: list[float | None],
    *,
    train_loss: list[float] | None = None,
    first: int = 1,
    best: list[int] | None = None,
) -> list[HistoryRow]:
    """Rows of one phase; epochs numbered from `first`, `best` lists the epochs marked best."""
    n = len(train_acc)
    train_loss = train_loss or [1.5 - 1.4 * i / max(n - 1, 1) for i in range(n)]
    best = best or []
    return [
        HistoryRow(phase, first + i, train_loss[i], train_acc[i], val_loss[i], val_acc[i], 1e-3, 1.0, first + i in best)
        for i in range(n)
    ]


def clear_overfit() -> list[HistoryRow]:
    """Phase 1 healthy; phase 2 drives training accuracy to 100% while validation falls and its loss rises."""
    head = history(
        "head", [0.5, 0.7, 0.8, 0.85, 0.86], [0.52, 0.71, 0.8, 0.84, 0.85], [1.2, 0.8, 0.6, 0.5, 0.48],
        best=[1, 2, 3, 4, 5],
    )  # fmt: skip
    tune = history(
        "finetune",
        [0.88, 0.92, 0.95, 0.97, 0.99, 1.0, 1.0, 1.0],
        [0.88, 0.89, 0.88, 0.86, 0.85, 0.84, 0.83, 0.82],
        [0.40, 0.38, 0.41, 0.47, 0.55, 0.62, 0.70, 0.78],
        train_loss=[0.4, 0.3, 0.2, 0.12, 0.07, 0.04, 0.03, 0.02],
        first=6,
        best=[6, 7],
    )
    return head + tune


def test_clear_overfitting_names_the_gap_the_turn_and_what_to_try() -> None:
    d = diagnose(clear_overfit())
    assert d.verdict == "overfitting"
    assert "100%" in d.headline and "83%" in d.headline
    assert d.val_loss_turn == 7
    assert d.gap is not None and d.gap > 0.15
    text = " ".join(d.findings)
    assert "Over the last 3 epochs, training accuracy averaged 100% and validation accuracy 83%" in text
    assert "a gap of 17 points" in text and "grew from 3 to 17 points between epochs 6 and 13" in text
    assert "Validation loss turned at epoch 7 (phase 2, fine-tuning)" in text
    assert "keeps the weights of epoch 7, before the rise" in text
    advice = " ".join(d.advice)
    for hint in ("--preset strong", "--unfreeze 1", "--method features"):
        assert hint in advice


def test_healthy_training_needs_nothing() -> None:
    rows = history(
        "head",
        [0.6, 0.75, 0.85, 0.9, 0.92, 0.93, 0.93],
        [0.62, 0.76, 0.85, 0.89, 0.91, 0.92, 0.92],
        [1.0, 0.7, 0.5, 0.4, 0.35, 0.33, 0.32],
        best=[1, 2, 3, 4, 5, 6, 7],
    )
    d = diagnose(rows)
    assert d.verdict == "healthy"
    assert d.val_loss_turn is None
    assert d.advice == ("Nothing to fix.",)
    assert "a gap of 1 point." in d.findings[0] and "stayed about the same" in d.findings[0]


def test_underfitting_when_even_training_images_are_missed() -> None:
    rows = history(
        "finetune",
        [0.30, 0.36, 0.42, 0.47, 0.51, 0.55],
        [0.31, 0.37, 0.42, 0.46, 0.50, 0.54],
        [2.0, 1.9, 1.8, 1.7, 1.6, 1.5],
        best=[1, 2, 3, 4, 5, 6],
    )
    d = diagnose(rows)
    assert d.verdict == "underfitting"
    assert "about 51%" in d.headline
    assert "still rising" in " ".join(d.findings)
    assert d.advice[0].startswith("Train for more epochs (--epochs)")
    assert any("--unfreeze all" in a for a in d.advice)


def test_slight_overfitting_when_only_the_loss_turns() -> None:
    rows = history(
        "head",
        [0.80, 0.88, 0.91, 0.92, 0.93, 0.93, 0.94],
        [0.82, 0.88, 0.90, 0.90, 0.91, 0.90, 0.91],
        [0.60, 0.45, 0.40, 0.42, 0.46, 0.49, 0.52],
        best=[1, 2, 3],
    )
    d = diagnose(rows)
    assert d.verdict == "slight overfitting"
    assert d.val_loss_turn == 3


def test_a_from_scratch_run_that_overfits_is_told_to_use_a_pretrained_backbone() -> None:
    rows = history("scratch", [0.5, 0.7, 0.9, 0.98], [0.45, 0.5, 0.52, 0.5], [1.5, 1.4, 1.45, 1.6])
    d = diagnose(rows)
    assert d.verdict == "overfitting"
    assert any("--method features" in a for a in d.advice)
    assert not any("--unfreeze" in a for a in d.advice)


def test_without_validation_or_history_it_says_so() -> None:
    rows = history("head", [0.5, 0.8, 0.9], [None] * 3, [None] * 3)
    d = diagnose(rows)
    assert d.verdict == "unknown"
    assert "no validation split" in d.headline and "--val-frac" in d.advice[0]
    empty = diagnose([])
    assert empty.verdict == "unknown" and "No training history" in empty.headline
