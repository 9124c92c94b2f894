"""`--schedule`: the learning-rate curve of each schedule, and the rates a fine-tuning run records."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tlearn.data.augment import preset
from tlearn.training.config import SCHEDULES, FinetuneConfig, TrainConfig
from tlearn.training.run import run
from tlearn.training.schedules import FLOOR, lr_factor, make_scheduler

TINY = {"backbone": "test_efficientnet", "weights": "none", "input_size": 64}


def curve(schedule: str, *, epochs: int = 10, steps_per_epoch: int = 10, **kwargs: int) -> np.ndarray:
    """The factor at every optimizer step of a run."""
    total = epochs * steps_per_epoch
    return np.array(
        [
            lr_factor(schedule, s, total_steps=total, steps_per_epoch=steps_per_epoch, **kwargs)  # type: ignore[arg-type]
            for s in range(total)
        ]
    )


def per_epoch(factors: np.ndarray, steps_per_epoch: int = 10) -> np.ndarray:
    """The factor at the first step of each epoch (what history.csv shows)."""
    return factors[::steps_per_epoch]


def test_constant_keeps_the_rate() -> None:
    assert (curve("constant") == 1.0).all()


def test_cosine_warms_up_linearly_then_falls_to_one_percent() -> None:
    f = curve("cosine", warmup_epochs=1)
    warm = f[:10]
    assert np.allclose(np.diff(warm), 1 / 11) and warm[0] == pytest.approx(1 / 11)  # rises in equal steps
    assert f[10] == 1.0  # the full rate right after the warm-up
    assert (np.diff(f[10:]) < 0).all()  # then only falls
    assert f[-1] == pytest.approx(FLOOR) and FLOOR == 0.01  # and ends at 1%, not 0
    assert f[10 + 45] == pytest.approx(0.5 * (1 + FLOOR), abs=0.02)  # halfway down at half the decay


def test_cosine_without_warm_up_starts_at_the_rate() -> None:
    f = curve("cosine", warmup_epochs=0)
    assert f[0] == 1.0 and (np.diff(f) < 0).all() and f[-1] == pytest.approx(FLOOR)


def test_cosine_warm_up_takes_at_most_half_the_run() -> None:
    f = curve("cosine", epochs=4, warmup_epochs=10)  # asks for more warm-up than the run has
    assert (np.diff(f[:20]) > 0).all() and f[20] == 1.0 and f[-1] == pytest.approx(FLOOR)


def test_onecycle_rises_from_4_percent_to_the_peak_at_30_percent_then_falls_to_almost_0() -> None:
    f = curve("onecycle", epochs=10, steps_per_epoch=10)  # t = step / 99: the peak is step 29.7
    assert f[0] == pytest.approx(0.04)
    peak = int(np.argmax(f))
    assert peak in (29, 30) and f.max() == pytest.approx(1.0, abs=0.01)
    assert (np.diff(f[: peak + 1]) > 0).all() and (np.diff(f[peak:]) < 0).all()
    assert f[-1] == pytest.approx(1e-4)


@pytest.mark.parametrize("epochs", [4, 8, 20])
def test_step_drops_tenfold_at_half_and_hundredfold_at_three_quarters(epochs: int) -> None:
    f = per_epoch(curve("step", epochs=epochs))
    half, three_quarters = epochs // 2, epochs * 3 // 4
    expected = [1.0] * half + [0.1] * (three_quarters - half) + [0.01] * (epochs - three_quarters)
    np.testing.assert_allclose(f, expected)


def test_step_changes_only_at_the_two_drops() -> None:
    f = curve("step", epochs=10, steps_per_epoch=10)
    assert sorted(set(f.round(6))) == [0.01, 0.1, 1.0]
    assert np.count_nonzero(np.diff(f)) == 2


@pytest.mark.parametrize("decay_after", [0, 1, 3, 5])
def test_exponential_is_constant_for_decay_after_epochs_then_ninety_percent_per_epoch(decay_after: int) -> None:
    f = curve("exponential", epochs=10, decay_after=decay_after)
    expected = [0.9 ** max(0, e - decay_after + 1) for e in range(10)]
    np.testing.assert_allclose(per_epoch(f), expected)
    assert (per_epoch(f)[:decay_after] == 1.0).all()
    assert all((f[e * 10 : (e + 1) * 10] == f[e * 10]).all() for e in range(10))  # flat within an epoch


def test_the_default_exponential_decays_from_the_fourth_epoch() -> None:
    f = per_epoch(curve("exponential", epochs=6))
    np.testing.assert_allclose(f, [1, 1, 1, 0.9, 0.81, 0.729])


def test_steps_past_the_end_keep_the_last_rate() -> None:
    for schedule in ("cosine", "onecycle", "step"):
        last = lr_factor(schedule, 99, total_steps=100, steps_per_epoch=10)
        assert lr_factor(schedule, 150, total_steps=100, steps_per_epoch=10) == last, schedule


def test_an_unknown_schedule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_factor("linear", 0, total_steps=10, steps_per_epoch=1)


def test_every_schedule_of_the_config_has_a_curve() -> None:
    for schedule in SCHEDULES:
        f = curve(schedule)
        assert np.isfinite(f).all() and (f > 0).all() and f.max() <= 1.0, schedule


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_scheduler_applies_the_factor_to_every_group_once_per_step(schedule: str) -> None:
    w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.02}])
    sched = make_scheduler(opt, schedule, epochs=5, steps_per_epoch=3, warmup_epochs=1, decay_after=2)
    seen = []
    for _ in range(15):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    factors = curve(schedule, epochs=5, steps_per_epoch=3, warmup_epochs=1, decay_after=2)
    np.testing.assert_allclose(np.array(seen), np.outer(factors, [0.1, 0.02]), rtol=1e-12)


# --- the rates a run records ----------------------------------------------------------------------

HEAD_LR, LR, EPOCHS = 0.05, 0.01, 4
HEAD_BATCH = 64  # phase 1 steps over batches of 64 cached feature rows (not --batch-size)
BATCH = 24  # does not divide the training images: phase 2 has a short last batch


def history_lrs(shapes: Path, out: Path, schedule: str, *, mixup: float = 0.0) -> tuple[dict[str, list[float]], int]:
    """lr of each history row by phase, and the number of training images."""
    result = run(
        TrainConfig(
            data=shapes, out=out, method="finetune", views=1, batch_size=BATCH, augment=preset("standard", mixup=mixup),
            finetune=FinetuneConfig(
                head_lr=HEAD_LR, lr=LR, head_epochs=EPOCHS, epochs=EPOCHS, patience=0, schedule=schedule,
                warmup_epochs=1, decay_after=2,
            ),
            **TINY,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    rows = list(csv.DictReader((out / "history.csv").open()))
    lrs: dict[str, list[float]] = {"head": [], "finetune": []}
    for r in rows:
        lrs[r["phase"]].append(float(r["lr"]))
    return lrs, result.split_counts["train"]


# The rate at the start of each of 4 epochs, whatever the steps per epoch (step, exponential with
# decay_after=2, constant): what a user reading history.csv expects to see.
EXPECTED_BY_EPOCH = {
    "step": [1.0, 1.0, 0.1, 0.01],
    "exponential": [1.0, 1.0, 0.9, 0.81],
    "constant": [1.0, 1.0, 1.0, 1.0],
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_schedule_sets_the_rates_history_csv_records(shapes: Path, tmp_path: Path, schedule: str) -> None:
    lrs, n_train = history_lrs(shapes, tmp_path / "run", schedule)
    assert len(lrs["head"]) == len(lrs["finetune"]) == EPOCHS
    # Phase 1 steps over the clean, mirror and 1 augmented view of each training image; phase 2 over the images.
    head_steps, tune_steps = math.ceil(3 * n_train / HEAD_BATCH), math.ceil(n_train / BATCH)
    assert n_train % BATCH

    def expected(base: float, steps: int) -> list[float]:
        total = EPOCHS * steps
        return [
            base
            * lr_factor(schedule, e * steps, total_steps=total, steps_per_epoch=steps, warmup_epochs=1, decay_after=2)
            for e in range(EPOCHS)
        ]

    np.testing.assert_allclose(lrs["head"], expected(HEAD_LR, head_steps), rtol=1e-5)
    np.testing.assert_allclose(lrs["finetune"], expected(LR, tune_steps), rtol=1e-5)
    if schedule in EXPECTED_BY_EPOCH:
        np.testing.assert_allclose(lrs["head"], np.multiply(EXPECTED_BY_EPOCH[schedule], HEAD_LR), rtol=1e-5)
        np.testing.assert_allclose(lrs["finetune"], np.multiply(EXPECTED_BY_EPOCH[schedule], LR), rtol=1e-5)
    for phase, base in (("head", HEAD_LR), ("finetune", LR)):
        got = lrs[phase]
        if schedule == "cosine":  # warm-up in the first epoch, the full rate at the second, falling after
            assert got[0] < base and got[1] == pytest.approx(base) and got[1] > got[2] > got[3], phase
        if schedule == "onecycle":
            assert got[0] == pytest.approx(0.04 * base) and max(got) > got[-1], phase


def test_the_schedule_also_drives_end_to_end_training(shapes: Path, tmp_path: Path) -> None:
    """With mixup the network trains on images (no cached activations): the same rates."""
    lrs, _ = history_lrs(shapes, tmp_path / "run", "step", mixup=0.2)
    np.testing.assert_allclose(lrs["finetune"], np.multiply(EXPECTED_BY_EPOCH["step"], LR), rtol=1e-5)
