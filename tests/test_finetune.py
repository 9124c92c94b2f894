"""Two-phase fine-tuning: what trains, what must not move, the rates, early stopping, resume."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_pre_hook

import tlearn
from conftest import assert_predicts_as_its_run
from tlearn.artifacts.bundle import load_bundle
from tlearn.artifacts.history import HISTORY_FILE
from tlearn.core.errors import DataError
from tlearn.data.augment import preset
from tlearn.data.eval_pixels import eval_pixels, to_model_input
from tlearn.models.backbones import create_backbone
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec, build_head
from tlearn.training.calibrate import rescale
from tlearn.training.config import FinetuneConfig, TrainConfig
from tlearn.training.loop import read_history, run_epochs
from tlearn.training.optim import param_groups
from tlearn.training.run import run

TINY = {"backbone": "test_efficientnet", "weights": "none", "input_size": 64}
FAST = {"head_lr": 0.05, "lr": 0.01, "head_epochs": 3, "epochs": 2, "patience": 0}


def tiny_backbone():  # type: ignore[no-untyped-def]
    return create_backbone("test_efficientnet", weights="none", input_size=64)


def initial_state() -> dict[str, torch.Tensor]:
    """The backbone a run starts from: random weights are seeded, so every run starts here."""
    return {k: v.clone() for k, v in tiny_backbone().model.state_dict().items()}


def finetuned(shapes: Path, out: Path, **ft: object) -> tuple[dict[str, torch.Tensor], tlearn.TrainResult]:
    result = run(
        TrainConfig(data=shapes, out=out, method="finetune", views=1, finetune=FinetuneConfig(**{**FAST, **ft}), **TINY)
    )  # type: ignore[arg-type]
    classifier, _ = load_bundle(out)
    return {
        k.removeprefix("trunk.backbone."): v
        for k, v in classifier.state_dict().items()
        if k.startswith("trunk.backbone.")
    }, result


def test_phase_one_leaves_every_base_parameter_bit_identical(shapes: Path, tmp_path: Path) -> None:
    after, result = finetuned(shapes, tmp_path / "run", epochs=0)
    before = initial_state()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert result.details.epochs.head_epochs_run == 3 and not result.details.epochs.unfrozen


def test_unfreeze_one_changes_only_the_last_stage_and_batchnorm_statistics_stay(shapes: Path, tmp_path: Path) -> None:
    after, result = finetuned(shapes, tmp_path / "run", unfreeze=1)
    before = initial_state()
    stages = tiny_backbone().stages
    last = set(stages[-1].params)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "phase 2 trained nothing"
    assert {k for k in changed if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))} <= last
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert result.details.epochs.unfrozen == (stages[-1].name,)


def test_history_has_one_row_per_epoch_of_both_phases(shapes: Path, tmp_path: Path) -> None:
    finetuned(shapes, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["head"] * 3 + ["finetune"] * 2
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["val_loss"] and r["lr"] for r in rows)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # a finished run keeps only its bundle


def test_a_time_budget_the_run_has_used_up_stops_fine_tuning_after_one_epoch_and_says_so(
    shapes: Path, tmp_path: Path
) -> None:
    # One second in all: what the run needs after training (costs.FINISH_FIXED_S) is already more,
    # so no second epoch fits; the bundle still comes out, with the best (only) epoch.
    result = run(
        TrainConfig(
            data=shapes, out=tmp_path / "run", method="finetune", views=1, time_budget=1.0,
            finetune=FinetuneConfig(**{**FAST, "epochs": 4}), **TINY,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [r["phase"] for r in rows].count("finetune") == 1
    epochs = result.details.epochs
    assert epochs is not None and (epochs.finetune_epochs_run, epochs.planned_epochs) == (1, 4)
    assert "the time budget left room for 1 of 4 epochs" in epochs.summary
    assert load_bundle(tmp_path / "run")[0] is not None


def test_without_a_budget_a_fixed_method_runs_every_epoch(shapes: Path, tmp_path: Path) -> None:
    _, result = finetuned(shapes, tmp_path / "run", epochs=3)
    assert result.details.epochs is not None and result.details.epochs.finetune_epochs_run == 3
    assert result.details.epochs.planned_epochs is None


def test_learning_rates_follow_the_options() -> None:
    b = tiny_backbone()
    trunk = FeatureTrunk(b.model)
    clf = Classifier(trunk, build_head(HeadSpec(3, b.num_features)), mean=(0.5,) * 3, std=(0.5,) * 3)
    groups = param_groups(clf, b.stages[-3:], lr=1e-3, decay=0.5, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name[b.stages[-1].name]["lr"] == pytest.approx(1e-3)
    assert by_name[b.stages[-2].name]["lr"] == pytest.approx(5e-4)
    assert by_name[b.stages[-3].name]["lr"] == pytest.approx(2.5e-4)
    assert by_name["head"]["lr"] == pytest.approx(1e-3)
    assert all(g["weight_decay"] == 0 for g in groups if "no decay" in g["name"])
    trainable = {id(p) for g in groups for p in g["params"]}
    frozen = [n for n, p in clf.named_parameters() if id(p) not in trainable]
    assert frozen and all(not p.requires_grad for n, p in clf.named_parameters() if id(p) not in trainable)


def test_early_stopping_stops_and_restores_the_best_epoch() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    val_losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.4])
    weights_at: dict[int, torch.Tensor] = {}

    def train_epoch(e: int) -> tuple[float, float]:
        with torch.no_grad():
            model.weight += 1.0
        weights_at[e + 1] = model.weight.detach().clone()
        return 1.0, 0.5

    result = run_epochs(
        phase="t", model=model, optimizer=opt, scheduler=sched, epochs=6, patience=2,
        train_epoch=train_epoch, validate=lambda: (next(val_losses), 0.5), seed=0,
    )  # fmt: skip
    assert result.stopped_early and len(result.rows) == 4 and result.best_epoch == 2
    assert torch.equal(model.weight, weights_at[2])


class Crash(Exception):
    """Stands for the process dying (a kill, a power cut): nothing gets to clean up."""


def test_resume_ends_where_an_uninterrupted_run_ends(shapes: Path, tmp_path: Path) -> None:
    ft = FinetuneConfig(**{**FAST, "epochs": 3})  # type: ignore[arg-type]
    whole = tmp_path / "whole"
    run(TrainConfig(data=shapes, out=whole, method="finetune", views=1, finetune=ft, **TINY))  # type: ignore[arg-type]

    broken = tmp_path / "broken"

    def die_after_epoch_5(row: dict[str, object]) -> None:
        if row["epoch"] == 5:
            raise Crash

    with pytest.raises(Crash):
        run(
            TrainConfig(data=shapes, out=broken, method="finetune", views=1, finetune=ft, **TINY),
            on_epoch_end=die_after_epoch_5,
        )  # type: ignore[arg-type]
    assert (broken / "checkpoint.pt").exists()
    seen: list[int] = []
    run(
        TrainConfig(data=shapes, out=broken, method="finetune", views=1, finetune=ft, resume=True, **TINY),  # type: ignore[arg-type]
        on_epoch_end=lambda row: seen.append(int(row["epoch"])),  # type: ignore[call-overload]
    )
    assert seen == [6]  # only the epoch that was missing
    a, _ = load_bundle(whole)
    b, _ = load_bundle(broken)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    assert len(list(csv.DictReader((broken / "history.csv").open()))) == 6


def test_resume_after_the_dataset_changed_is_refused_and_keeps_the_checkpoint(shapes: Path, tmp_path: Path) -> None:
    ft = FinetuneConfig(**{**FAST, "epochs": 3})  # type: ignore[arg-type]
    out = tmp_path / "broken"

    def die_after_epoch_2(row: dict[str, object]) -> None:
        if row["epoch"] == 2:
            raise Crash

    cfg = TrainConfig(data=shapes, out=out, method="finetune", views=1, finetune=ft, **TINY)  # type: ignore[arg-type]
    with pytest.raises(Crash):
        run(cfg, on_epoch_end=die_after_epoch_2)
    began = (out / "split.json").read_text()
    extra = sorted((shapes / "red_circle").iterdir())[0]
    shutil.copy(extra, shapes / "red_circle" / "added.jpg")  # a photo added while the run was stopped
    with pytest.raises(DataError, match=r"Cannot resume: the split file .* does not fit the dataset: it leaves out 1 "):
        run(replace(cfg, resume=True))
    assert (out / "checkpoint.pt").is_file() and (out / "split.json").read_text() == began  # nothing lost
    (shapes / "red_circle" / "added.jpg").unlink()
    run(replace(cfg, resume=True))  # as it was: the run goes on
    assert json.loads((out / "split.json").read_text())["origin"] == "random"


def val_log_loss(bundle: Path, data: Path) -> float:
    """Mean validation log loss of a reloaded bundle, over the val images of its predictions.csv, before the
    bundle's calibration (the history's losses are those of the network as it trained)."""
    rows = [r for r in csv.DictReader((bundle / "predictions.csv").open()) if r["split"] == "val"]
    clf = tlearn.load(bundle)
    proba = rescale(clf.predict_proba([data / r["path"] for r in rows]), 1 / clf.config.temperature)
    true = [clf.classes.index(r["true"]) for r in rows]
    return float(-np.mean(np.log(proba[np.arange(len(rows)), true])))


@pytest.mark.parametrize("mixup", [0.0, 0.2], ids=["cached-activations", "images"])
def test_ctrl_c_keeps_a_usable_bundle_from_the_best_epoch(
    shapes: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, mixup: float
) -> None:
    """Phase 2 runs epochs 4 to 7: epoch 6 is wrecked (noise on every trained weight), Ctrl-C comes in epoch 7.

    The bundle must hold the best epoch (4 or 5), not the last one (6) nor the half-trained 7. The hooks
    are torch's, on every optimizer: the test does not depend on how the phases are written.
    """
    ended: list[tuple[str, int]] = [("", 0)]
    wrecked: list[int] = []
    pressed: list[int] = []

    def before_each_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        # Once: the run goes on to the label check and the report, whose solvers step optimizers too.
        if ended[-1] == ("finetune", 6) and not pressed:
            pressed.append(1)
            raise KeyboardInterrupt  # the user presses Ctrl-C during epoch 7
        if ended[-1] == ("finetune", 5) and not wrecked:
            wrecked.append(1)
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.add_(torch.randn_like(p) * 0.5)

    out = tmp_path / "run"
    hook = register_optimizer_step_pre_hook(before_each_step)
    try:
        result = run(
            TrainConfig(
                data=shapes, out=out, method="finetune", views=1, augment=preset("standard", mixup=mixup),
                finetune=FinetuneConfig(**{**FAST, "epochs": 4}), **TINY,  # type: ignore[arg-type]
            ),
            on_epoch_end=lambda row: ended.append((str(row["phase"]), int(row["epoch"]))),
        )  # fmt: skip
    finally:
        hook.remove()

    # The run says it was interrupted, in the result, the bundle and the log.
    assert result.details.interrupted == "finetune"
    assert load_bundle(out)[1].details["interrupted"] == "finetune"
    assert "Interrupted during finetune epoch 7: keeping the best epoch so far." in caplog.text
    assert (out / "checkpoint.pt").exists()  # --resume can continue it

    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [(r["phase"], int(r["epoch"])) for r in rows] == [("head", 1), ("head", 2), ("head", 3)] + [
        ("finetune", e) for e in (4, 5, 6)
    ]  # the interrupted epoch 7 is not in the history
    tuned = [r for r in rows if r["phase"] == "finetune"]
    best = [r for r in tuned if r["best"] == "1"][-1]
    last = tuned[-1]
    assert int(best["epoch"]) in (4, 5) and last["best"] == "0"
    assert float(last["val_loss"]) > float(best["val_loss"]) + 1.0  # the wrecked epoch is far worse
    assert result.details.epochs.best_epoch == int(best["epoch"])

    # The reloaded bundle scores the validation images as the best epoch did, not as the last one.
    loss = val_log_loss(out, shapes)
    assert loss == pytest.approx(float(best["val_loss"]), abs=2e-3)

    # Exactly the best epoch's weights: the ones the checkpoint keeps as best (format read by --resume).
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["best_epoch"] == int(best["epoch"])
    saved = {k: v for k, v in load_bundle(out)[0].state_dict().items() if not k.startswith("unknown.")}  # + its bank
    assert saved.keys() == checkpoint["best_state"].keys()
    assert all(torch.equal(saved[k], checkpoint["best_state"][k]) for k in saved)
    assert not all(torch.equal(saved[k], checkpoint["model"][k]) for k in saved)  # epoch 6's weights differ


def test_the_kept_epoch_scores_validation_as_the_saved_network_does(shapes: Path, tmp_path: Path) -> None:
    # Phase 2 trains and validates the top on the frozen bottom's cached output; the bundle runs the whole
    # network in float32. A bottom run in bf16 (what --precision auto chose on CPUs with native bf16, and
    # what bf16 asks for) gave the top activations the bundle never computes: on eurosat the saved network
    # then scored 1 to 6 points below the epoch it was kept for.
    out = tmp_path / "run"
    ft = FinetuneConfig(**{**FAST, "lr": 3e-4, "unfreeze": 1})
    network = {"backbone": "mobilenetv2_100.tf_in1k"}  # a random network's logits are too small to show it
    run(TrainConfig(data=shapes, out=out, method="finetune", views=1, precision="bf16", finetune=ft, **network))  # type: ignore[arg-type]
    kept = [r for r in read_history(out / HISTORY_FILE) if r["phase"] == "finetune" and r["best"]][-1]
    classifier, config = load_bundle(out)
    classifier.temperature = 1.0  # the loss the epoch loop saw: before calibration
    paths = json.loads((out / "split.json").read_text())["val"]
    crops = [eval_pixels(Image.open(shapes / p).convert("RGB"), config.preprocessing) for p in paths]
    x = torch.from_numpy(np.stack([to_model_input(c) for c in crops]))
    y = torch.tensor([config.classes.index(Path(p).parent.name) for p in paths])
    with torch.inference_mode():
        loss = float(torch.nn.functional.cross_entropy(classifier.eval()(x), y))
    assert loss == pytest.approx(kept["val_loss"], rel=1e-3, abs=1e-5)


def test_finetune_learns_the_synthetic_shapes(shapes: Path, tmp_path: Path) -> None:
    _, result = finetuned(shapes, tmp_path / "run", head_epochs=15, epochs=4)
    assert result.metrics["test"].accuracy >= 0.75
    assert np.isfinite(result.metrics["test"].log_loss)


@pytest.mark.parametrize("network", [TINY, {"backbone": "mobilenetv2_100.tf_in1k"}], ids=["tiny", "builtin"])
def test_a_features_run_after_fine_tuning_on_the_same_images_predicts_what_its_report_says(
    shapes: Path, tmp_path: Path, network: dict[str, object]
) -> None:
    # Both runs share the feature cache, whose entries name the pretrained weights. Fine-tuning must
    # train a copy: the network it left behind computes the label check's features (cached), which
    # the features run then reads back as the pretrained network's.
    ft = FinetuneConfig(**FAST)
    run(TrainConfig(data=shapes, out=tmp_path / "tuned", method="finetune", views=1, finetune=ft, **network))  # type: ignore[arg-type]
    features = run(TrainConfig(data=shapes, out=tmp_path / "features", method="features", views=1, C=1.0, **network))  # type: ignore[arg-type]
    assert_predicts_as_its_run(features.out, shapes)


def test_balanced_class_weights_are_the_inverse_class_frequencies_of_the_training_part() -> None:
    from types import SimpleNamespace

    from tlearn.training.head_phase import class_weights

    labels = np.array([0] * 30 + [1] * 10 + [3] * 20 + [1] * 50)  # the last 50 are not training images
    data = SimpleNamespace(labels=labels, classes=("a", "b", "c", "d"), split=SimpleNamespace(train=np.arange(60)))
    weights = class_weights(data, "balanced")  # type: ignore[arg-type]
    assert weights is not None and weights.dtype == torch.float32
    # n / (K * n_class): a class with a third of the images of another weighs three times as much
    np.testing.assert_allclose(weights.numpy(), [60 / (4 * 30), 60 / (4 * 10), 0.0, 60 / (4 * 20)], rtol=1e-6)
    assert class_weights(data, "none") is None  # type: ignore[arg-type]


MINORITY, KEPT = "red_circle", 6


def imbalanced(shapes_master: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A copy of the shapes with only KEPT red circles (24 of each other class); the removed circles are
    images of the minority class that no run has seen."""
    import shutil

    data = Path(shutil.copytree(shapes_master, tmp_path / "imbalanced"))
    removed = sorted((data / MINORITY).iterdir())[KEPT:]
    for f in removed:
        f.unlink()
    return data, [shapes_master / MINORITY / f.name for f in removed]


def test_balanced_class_weight_makes_fine_tuning_find_the_minority_class(shapes_master: Path, tmp_path: Path) -> None:
    data, unseen = imbalanced(shapes_master, tmp_path)
    recall, mean_p = {}, {}
    for weighting in ("none", "balanced"):
        run(
            TrainConfig(
                data=data, out=tmp_path / weighting, method="finetune", views=1, class_weight=weighting,
                min_per_class=1, finetune=FinetuneConfig(**{**FAST, "head_epochs": 10}), **TINY,  # type: ignore[arg-type]
            )
        )  # fmt: skip
        clf = tlearn.load(tmp_path / weighting)
        proba = clf.predict_proba(unseen)[:, clf.classes.index(MINORITY)]
        recall[weighting] = float((clf.predict(unseen) == np.array([MINORITY] * len(unseen))).mean())
        mean_p[weighting] = float(proba.mean())
    # Weighting the rare class up moves probability towards it, and it is found more often.
    assert mean_p["balanced"] > 1.5 * mean_p["none"], mean_p
    assert recall["balanced"] > recall["none"], recall
