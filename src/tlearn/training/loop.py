"""The epoch loop every trained phase shares: early stopping, best weights, history, checkpoints, Ctrl-C.

`run_epochs` calls `train_epoch(epoch)` and `validate()` in turn, keeps the weights of the epoch with
the lowest validation loss (restored at the end), stops after `patience` epochs without improvement,
writes the history and a checkpoint atomically after every epoch, and on Ctrl-C stops cleanly with
the best weights restored. Randomness is re-seeded from (seed, phase, epoch) at every epoch, so a run
resumed from its checkpoint ends exactly where an uninterrupted one would.

Under torchrun every rank runs the same loop on the same seeds (so the ranks shuffle alike and take
their shares of the same batches); validation results are summed over the ranks, so every rank makes
the same early-stopping decision. Only rank 0 writes the history and checkpoints and reports epochs.
Ctrl-C there stops every rank with an error instead of finishing: the ranks would not stop at the
same step. The last checkpoint stays for --resume.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlearn.artifacts import history
from tlearn.artifacts.history import HISTORY_FILE, HistoryRow
from tlearn.core import distributed
from tlearn.core.files import atomic_path
from tlearn.core.timing import NO_DEADLINE, Deadline
from tlearn.training.schedules import retarget

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"

# Given this phase's rows so far, a reason to stop now (validation says it will not catch up), or None.
GiveUp = Callable[[list[dict[str, Any]]], str | None]


@dataclass
class PhaseResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False
    planned_epochs: int | None = None  # the epochs asked for, when the time budget cut them short
    gave_up: str | None = None  # why validation said this phase would not catch up (`give_up`)


@dataclass(frozen=True)
class EpochPlan:
    """How an end-to-end phase's epochs run: `run_epochs`' own options, passed through the phase unchanged."""

    phase: str  # its name in history.csv: "finetune", "scratch"
    epochs: int
    seed: int
    first_epoch: int = 1  # epochs are numbered on from the earlier phases'
    history: list[dict[str, Any]] | None = None  # the earlier phases' rows, written with this one's
    checkpoint: Path | None = None
    resume: dict[str, Any] | None = None  # a checkpoint of this phase to go on from
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    deadline: Deadline = NO_DEADLINE  # the run's time budget: epochs that would overrun it are not started
    reserve: float = 0.0  # seconds the run needs after this phase (final predictions, bundle, report)
    give_up: GiveUp | None = None

    def options(self) -> dict[str, Any]:
        """As keywords of `run_epochs` (not `dataclasses.asdict`, which would deep-copy the checkpoint)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Best:
    """The early-stopping state: the lowest validation loss, its epoch and weights, epochs since."""

    loss: float = math.inf
    epoch: int | None = None
    state: dict[str, torch.Tensor] | None = None
    bad: int = 0

    def update(self, val: tuple[float, float] | None, epoch: int, model: nn.Module) -> None:
        """Keep this epoch's weights when it improved (or when there is no validation to judge by)."""
        if val is None or val[0] < self.loss - 1e-6:
            self.loss = val[0] if val is not None else self.loss
            self.state, self.epoch, self.bad = _copy_state(model), epoch, 0
        else:
            self.bad += 1


def epoch_seed(seed: int, phase: str, epoch: int) -> int:
    """A seed for one epoch of one phase, independent of what ran before."""
    return (seed * 1_000_003 + zlib.crc32(phase.encode()) * 997 + epoch) % (2**31 - 1)


def run_epochs(
    *,
    phase: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    patience: int,
    train_epoch: Callable[[int], tuple[float, float]],
    validate: Callable[[], tuple[float, float] | None],
    seed: int,
    first_epoch: int = 1,
    history: list[dict[str, Any]] | None = None,
    checkpoint: Path | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    deadline: Deadline = NO_DEADLINE,
    reserve: float = 0.0,
    give_up: GiveUp | None = None,
) -> PhaseResult:
    """Train `epochs` epochs (numbered from `first_epoch` in the history); returns this phase's rows.

    `history` holds the rows of earlier phases (written to history.csv with these); `resume` is the
    state a checkpoint of this phase saved. With a `deadline`, the measured epochs so far say how many
    more fit before it (less `reserve`): when fewer than planned, the phase is shortened and its
    schedule compressed to end there, so the rate still comes down (see `schedules.retarget`).
    """
    rows, best = _resumed(resume, model, optimizer, scheduler, phase)
    result = PhaseResult(rows=rows, best_epoch=best.epoch)
    e = len(rows)  # this phase's epoch index, from 0
    while e < epochs:  # `epochs` may shrink as the time budget runs
        epoch = first_epoch + e
        seed_everything(epoch_seed(seed, phase, e))
        t0 = time.perf_counter()
        lr = optimizer.param_groups[-1]["lr"]
        try:
            train_loss, train_acc = train_epoch(e)
            val = validate()
        except KeyboardInterrupt:
            if distributed.world().size > 1:
                raise
            result.interrupted = True
            log.warning("Interrupted during %s epoch %d: keeping the best epoch so far.", phase, epoch)
            break
        best.update(val, epoch, model)
        row = _row(phase, epoch, train_loss, train_acc, val, lr, time.perf_counter() - t0, best.epoch == epoch)
        rows.append(row)
        if checkpoint is not None and distributed.is_main():
            write_history(checkpoint.parent / HISTORY_FILE, [*(history or []), *rows])
            save_checkpoint(checkpoint, _checkpoint_state(phase, model, optimizer, scheduler, rows, best))
        if on_epoch_end is not None and distributed.is_main():
            on_epoch_end(row)
        if val is not None and patience and best.bad >= patience:
            result.stopped_early = True
            break
        if give_up is not None and (reason := distributed.from_main(lambda: give_up(rows))):
            result.gave_up = reason
            log.info("%s stopped after epoch %d: %s", phase, epoch, reason)
            break
        fit = _epochs_that_fit(rows, epochs, e, deadline, reserve)
        if fit < epochs:
            result.planned_epochs = result.planned_epochs or epochs
            epochs = fit
            retarget(scheduler, epochs)
            log.info("The time budget leaves room for %d %s epochs in all.", epochs, phase)
        e += 1
    if best.state is not None:
        model.load_state_dict(best.state)
    result.rows, result.best_epoch = rows, best.epoch
    return result


def _epochs_that_fit(rows: list[dict[str, Any]], epochs: int, e: int, deadline: Deadline, reserve: float) -> int:
    """How many epochs in all this phase can run before the deadline, judged by its recent epochs
    (at least the `e + 1` done; at most `epochs`). Rank 0's clock decides for every rank."""
    if deadline.seconds is None or e + 1 >= epochs:
        return epochs
    per_epoch = float(np.mean([r["seconds"] for r in rows[-3:]]))
    more = distributed.from_main(lambda: int(max(deadline.left() - reserve, 0.0) // max(per_epoch, 1e-9)))
    return min(epochs, e + 1 + more)


def _resumed(
    resume: dict[str, Any] | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    phase: str,
) -> tuple[list[dict[str, Any]], _Best]:
    """The rows and early-stopping state to go on from: a checkpoint's, loaded into the model and
    optimizer, or a fresh start."""
    if resume is None:
        return [], _Best()
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["scheduler"])
    rows = list(resume["rows"])
    log.info("Resuming %s at epoch %d.", phase, len(rows) + 1)
    return rows, _Best(resume["best_loss"], resume["best_epoch"], resume["best_state"], resume["bad"])


def _row(
    phase: str,
    epoch: int,
    train_loss: float,
    train_acc: float,
    val: tuple[float, float] | None,
    lr: float,
    seconds: float,
    best: bool,
) -> dict[str, Any]:
    return {
        "phase": phase,
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": None if val is None else val[0],
        "val_acc": None if val is None else val[1],
        "lr": lr,
        "seconds": seconds,
        "best": int(best),
    }


def _checkpoint_state(
    phase: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rows: list[dict[str, Any]],
    best: _Best,
) -> dict[str, Any]:
    return {
        "phase": phase,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rows": rows,
        "best_loss": best.loss,
        "best_epoch": best.epoch,
        "bad": best.bad,
        "best_state": best.state,
    }


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """The loop's row dicts as history.csv (the one format: `tlearn.artifacts.history`)."""
    history.write_history(path, [HistoryRow.from_dict(r) for r in rows])


def read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv as the loop's row dicts; [] when there is none."""
    return [r.to_dict() for r in history.read_history(path)]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint rank 0 reads, on every rank (the run folder need only exist on rank 0's machine)."""

    def read() -> dict[str, Any] | None:
        if not path.is_file():
            return None
        return dict(torch.load(path, map_location="cpu", weights_only=True))

    return distributed.from_main(read)
