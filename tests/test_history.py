"""history.csv: what is written reads back the same, and the files of earlier runs still read."""

from __future__ import annotations

from pathlib import Path

from tlearn.artifacts.history import HISTORY_COLUMNS, HistoryRow, kept_epochs, read_history, write_history
from tlearn.training import loop

ROWS = [
    HistoryRow("head", 1, 1.2345678, 0.5, 1.1, 0.55, 1e-3, 2.5, best=True),
    HistoryRow("head", 2, 0.9, 0.7, 1.3, 0.52, 1e-3, 2.4),
    HistoryRow("finetune", 3, 0.6, 0.8, None, None, 3e-5, 9.0, best=True),  # no validation split
]


def test_history_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    write_history(path, ROWS)
    rows = read_history(path)
    assert [r.epoch for r in rows] == [1, 2, 3]
    assert rows[0].train_loss == 1.23457  # six significant digits, as the training loop has always written
    assert rows[1:] == ROWS[1:]
    assert rows[2].val_loss is None and rows[2].val_acc is None
    assert kept_epochs(rows) == {"head": 1, "finetune": 3}
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


def test_history_of_an_earlier_run_reads_the_same(tmp_path: Path) -> None:
    """A file the training loop's own writer made (runs on disk today) reads back as the same rows."""
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    loop.write_history(old, [r.to_dict() for r in ROWS])
    write_history(new, ROWS)
    assert new.read_text(encoding="utf-8") == old.read_text(encoding="utf-8")  # same bytes, same columns
    assert old.read_text(encoding="utf-8").splitlines()[0] == ",".join(HISTORY_COLUMNS)
    assert read_history(old) == read_history(new)
    assert [HistoryRow.from_dict(r) for r in loop.read_history(old)] == read_history(old)


def test_a_run_without_epochs_has_no_history(tmp_path: Path) -> None:
    assert read_history(tmp_path / "history.csv") == []


def test_rows_of_the_training_loop_convert_both_ways() -> None:
    row = {"phase": "head", "epoch": 3, "train_loss": 0.5, "train_acc": 0.8, "val_loss": None, "val_acc": None,
           "lr": 1e-3, "seconds": 1.2, "best": 1}  # fmt: skip
    r = HistoryRow.from_dict(row)
    assert r.epoch == 3 and r.best and r.val_loss is None
    assert r.to_dict() == row
