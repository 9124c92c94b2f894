"""history.csv: what is written reads back the same, and the files of earlier runs still read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tlearn.artifacts.history import (
    HISTORY_COLUMNS,
    HistoryRow,
    kept_epochs,
    not_kept,
    read_history,
    write_history,
)
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


# history.csv of a finetune run as `tlearn train` wrote it before artifacts/history.py existed (training/loop.py).
EARLIER_RUN = """\
phase,epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,best
head,1,1.38629,0.302083,1.2716,0.4375,0.05,0.412387,1
head,2,1.10517,0.552083,1.05236,0.625,0.0353553,0.398021,1
finetune,3,0.912345,0.6875,1.1,0.59375,0.01,1.20931,0
finetune,4,0.701,0.75,,,0.005,1.1874,1
"""


def test_history_file_of_an_earlier_run_reads_with_its_kept_epochs(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text(EARLIER_RUN, encoding="utf-8")
    rows = read_history(path)
    assert [(r.phase, r.epoch) for r in rows] == [("head", 1), ("head", 2), ("finetune", 3), ("finetune", 4)]
    assert rows[0] == HistoryRow("head", 1, 1.38629, 0.302083, 1.2716, 0.4375, 0.05, 0.412387, best=True)
    assert rows[3].val_loss is None and rows[3].val_acc is None
    assert kept_epochs(rows) == {"head": 2, "finetune": 4}
    write_history(tmp_path / "again.csv", rows)
    assert (tmp_path / "again.csv").read_text(encoding="utf-8") == EARLIER_RUN  # rewritten byte for byte


def test_a_run_without_epochs_has_no_history(tmp_path: Path) -> None:
    assert read_history(tmp_path / "history.csv") == []


def test_history_csv_is_read_with_empty_cells_and_kept_epochs(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text(
        "phase,epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,best\n"
        "head,1,1.2,0.5,1.1,0.55,0.001,2.5,1\n"
        "head,2,0.9,0.7,0.8,0.72,0.001,2.4,1\n"
        "head,3,0.8,0.75,0.85,0.7,0.001,2.4,0\n"
        "finetune,4,0.6,0.8,,,0.0001,9.0,1\n"
    )
    rows = read_history(path)
    assert [r.epoch for r in rows] == [1, 2, 3, 4]
    assert rows[3].val_acc is None and rows[3].phase == "finetune" and rows[0].seconds == 2.5
    assert kept_epochs(rows) == {"head": 2, "finetune": 4}
    assert read_history(tmp_path / "absent.csv") == []


def test_a_phase_with_no_epoch_marked_best_kept_none_of_its_epochs() -> None:
    # Fine-tuning that auto tried and did not keep (it kept the features): no row made the kept model.
    tried = [replace(r, best=False) for r in ROWS]
    assert kept_epochs(tried) == {}
    assert kept_epochs([*tried[:2], ROWS[2]]) == {"finetune": 3}
    assert not_kept(ROWS) == tried


def test_rows_of_the_training_loop_convert_both_ways() -> None:
    row = {"phase": "head", "epoch": 3, "train_loss": 0.5, "train_acc": 0.8, "val_loss": None, "val_acc": None,
           "lr": 1e-3, "seconds": 1.2, "best": 1}  # fmt: skip
    r = HistoryRow.from_dict(row)
    assert r.epoch == 3 and r.best and r.val_loss is None
    assert r.to_dict() == row
