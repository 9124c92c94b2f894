"""The epoch loop: best weights kept, Ctrl-C, no validation, the history and checkpoint, resuming."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tlearn.core.timing import Deadline
from tlearn.training.loop import PhaseResult, load_checkpoint, run_epochs
from tlearn.training.schedules import FLOOR, make_scheduler


class Scripted:
    """A one-weight model whose training moves its weight by a random step and whose validation
    losses are given in advance: which epoch is best is known."""

    def __init__(self, val_losses: list[float | None], *, interrupt_at: int | None = None) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.zero_()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 0.5**step)
        self.losses: Iterator[float | None] = iter(val_losses)
        self.interrupt_at = interrupt_at
        self.weights: dict[int, float] = {}  # epoch (0-based) -> weight at its end

    def train_epoch(self, e: int) -> tuple[float, float]:
        if e == self.interrupt_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            self.model.weight += torch.randn(1, 1)  # from the epoch's seed
        self.optimizer.step()
        self.scheduler.step()
        self.weights[e] = float(self.model.weight.detach())
        return 1.0 / (e + 1), 0.5

    def validate(self) -> tuple[float, float] | None:
        loss = next(self.losses)
        return None if loss is None else (loss, 1 - loss)

    def run(self, epochs: int, *, patience: int = 0, **kwargs: Any) -> PhaseResult:
        return run_epochs(
            phase="p", model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, epochs=epochs,
            patience=patience, train_epoch=self.train_epoch, validate=self.validate, seed=0, **kwargs,
        )  # fmt: skip

    @property
    def weight(self) -> float:
        return float(self.model.weight.detach())


def test_the_best_epoch_is_restored_at_the_end() -> None:
    s = Scripted([0.9, 0.3, 0.5, 0.6])
    result = s.run(4)
    assert result.best_epoch == 2 and not result.stopped_early and not result.interrupted
    assert [r["best"] for r in result.rows] == [1, 1, 0, 0]
    assert s.weight == s.weights[1]


def test_patience_stops_after_that_many_epochs_without_improvement() -> None:
    s = Scripted([0.9, 0.3, 0.5, 0.6, 0.1, 0.1])
    result = s.run(6, patience=2)
    assert result.stopped_early and len(result.rows) == 4 and result.best_epoch == 2
    assert s.weight == s.weights[1]


def test_an_improvement_must_be_more_than_a_rounding_error() -> None:
    s = Scripted([0.5, 0.5 - 1e-9, 0.5 - 1e-9])
    result = s.run(3, patience=2)
    assert result.best_epoch == 1 and result.stopped_early


def test_ctrl_c_stops_with_the_best_weights_and_only_the_finished_epochs() -> None:
    s = Scripted([0.4, 0.2, 0.7], interrupt_at=3)
    result = s.run(6)
    assert result.interrupted and not result.stopped_early
    assert [r["epoch"] for r in result.rows] == [1, 2, 3] and result.best_epoch == 2
    assert s.weight == s.weights[1]


def test_ctrl_c_in_the_first_epoch_keeps_the_starting_weights() -> None:
    s = Scripted([], interrupt_at=0)
    result = s.run(3)
    assert result.interrupted and result.rows == [] and result.best_epoch is None
    assert s.weight == 0.0


def test_without_validation_every_epoch_counts_and_the_last_weights_stay() -> None:
    s = Scripted([None] * 4)
    result = s.run(4, patience=1)
    assert not result.stopped_early and len(result.rows) == 4 and result.best_epoch == 4
    assert all(r["val_loss"] is None and r["val_acc"] is None and r["best"] == 1 for r in result.rows)
    assert s.weight == s.weights[3]


def test_rows_number_the_epochs_after_earlier_phases_and_record_the_rate_they_started_with() -> None:
    s = Scripted([0.5, 0.4, 0.3])
    result = s.run(3, first_epoch=11)
    assert [r["epoch"] for r in result.rows] == [11, 12, 13] and result.best_epoch == 13
    assert [r["lr"] for r in result.rows] == pytest.approx([0.1, 0.05, 0.025])
    assert [r["phase"] for r in result.rows] == ["p"] * 3
    assert [r["train_loss"] for r in result.rows] == pytest.approx([1, 1 / 2, 1 / 3])
    assert all(r["seconds"] >= 0 for r in result.rows)


def test_each_epoch_is_seeded_by_the_seed_the_phase_and_the_epoch() -> None:
    a, b = Scripted([0.5] * 3), Scripted([0.5] * 3)
    a.run(3)
    torch.manual_seed(12345)  # what ran before must not matter
    b.run(3)
    assert a.weights == b.weights and len(set(a.weights.values())) == 3


def test_history_and_checkpoint_are_written_after_every_epoch(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    earlier = [{"phase": "head", "epoch": 1, "train_loss": 2.0, "val_loss": 1.5, "lr": 0.1, "best": 1}]
    seen: list[tuple[int, int]] = []

    def on_epoch_end(row: dict[str, Any]) -> None:
        with (tmp_path / "history.csv").open() as fh:
            seen.append((int(row["epoch"]), len(list(csv.DictReader(fh)))))
        assert load_checkpoint(checkpoint)["rows"][-1]["epoch"] == row["epoch"]  # type: ignore[index]

    s = Scripted([0.5, 0.4])
    s.run(2, first_epoch=2, history=earlier, checkpoint=checkpoint, on_epoch_end=on_epoch_end)
    assert seen == [(2, 2), (3, 3)]  # the earlier phase's row, then this phase's so far
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["head", "p", "p"] and rows[0]["val_loss"] == "1.5"
    saved = load_checkpoint(checkpoint)
    assert saved is not None and saved["phase"] == "p" and saved["best_epoch"] == 3


def test_a_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_ends(tmp_path: Path) -> None:
    losses = [0.9, 0.3, 0.5, 0.2, 0.6]
    whole = Scripted(losses)
    whole_result = whole.run(5)

    class Crash(Exception):
        pass

    def crash_after(epoch: int) -> Callable[[dict[str, Any]], None]:
        def check(row: dict[str, Any]) -> None:
            if row["epoch"] == epoch:
                raise Crash

        return check

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Crash):
        Scripted(losses).run(5, checkpoint=checkpoint, on_epoch_end=crash_after(3))
    resumed = Scripted(losses[3:])
    result = resumed.run(5, checkpoint=checkpoint, resume=load_checkpoint(checkpoint))
    assert [r["epoch"] for r in result.rows] == [1, 2, 3, 4, 5]
    assert result.best_epoch == whole_result.best_epoch == 4
    assert resumed.weight == whole.weight
    assert [r["lr"] for r in result.rows] == [r["lr"] for r in whole_result.rows]  # the schedule went on too
    assert list(resumed.weights) == [3, 4]  # only the missing epochs ran


class Clock:
    """A fake monotonic clock: each training epoch takes `per_epoch` seconds of it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, per_epoch: float) -> None:
        self.now, self.per_epoch = 0.0, per_epoch
        monkeypatch.setattr(time, "perf_counter", lambda: self.now)

    def tick(self) -> None:
        self.now += self.per_epoch


def test_the_time_budget_shortens_the_phase_and_its_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch, per_epoch=10.0)
    s = Scripted([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    s.scheduler = make_scheduler(s.optimizer, "cosine", epochs=6, steps_per_epoch=1)
    train = s.train_epoch
    s.train_epoch = lambda e: (clock.tick(), train(e))[1]  # type: ignore[method-assign]
    # 35 s in all, 5 of them kept for after the phase: 3 epochs of 10 s fit, not 6.
    result = s.run(6, deadline=Deadline.after(35.0), reserve=5.0)
    assert len(result.rows) == 3 and result.planned_epochs == 6
    assert s.scheduler.get_last_lr()[0] == pytest.approx(0.1 * FLOOR)  # the shortened cosine reached its end


def test_without_a_budget_every_planned_epoch_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch, per_epoch=1000.0)
    s = Scripted([0.9, 0.8, 0.7, 0.6])
    train = s.train_epoch
    s.train_epoch = lambda e: (clock.tick(), train(e))[1]  # type: ignore[method-assign]
    result = s.run(4, deadline=Deadline.after(None))
    assert len(result.rows) == 4 and result.planned_epochs is None


def test_give_up_stops_the_phase_with_its_reason_and_the_best_weights() -> None:
    s = Scripted([0.9, 0.3, 0.5, 0.6, 0.7])
    result = s.run(5, give_up=lambda rows: "behind the features" if len(rows) >= 3 else None)
    assert len(result.rows) == 3 and result.gave_up == "behind the features"
    assert s.weight == s.weights[1]
