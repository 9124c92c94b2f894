"""`--method auto`: the decision as a pure function of the measurements, and the run end to end."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import assert_predicts_as_its_run
from tlearn.artifacts.history import kept_epochs, read_history
from tlearn.models.backbones import create_backbone
from tlearn.training import auto
from tlearn.training.auto import (
    FINETUNE_EPOCHS,
    LARGE_PER_CLASS,
    MIN_EPOCHS,
    Evidence,
    Probe,
    decide,
    fine_tuning_can_show,
)
from tlearn.training.auto_validation import MIN_VAL_ERRORS, _better_on_validation, _layer_on_validation, behind_features

STAGES = 8
COSTS = {"1": 60.0, "2": 120.0, "3": 240.0, "all": 900.0}  # seconds for FINETUNE_EPOCHS epochs


def evidence(
    *,
    per_class: float,
    last: float,
    earlier: float,
    budget: float = 600.0,
    cost: dict[str, float] | None = None,
    val_images: int = 200,
    per_epoch: dict[str, float] | None = None,
    per_view: dict[str, float] | None = None,
) -> Evidence:
    return Evidence(
        train_images=int(per_class * 10),
        classes=10,
        per_class_median=per_class,
        per_class_min=int(per_class),
        probes=(
            Probe("3", "level 3", 96, earlier),
            Probe("2", "level 2", 32, earlier - 0.1),
            Probe("last", "output", 1280, last),
        ),
        forward_ips=100.0,
        finetune_estimates=cost or COSTS,
        budget_s=budget,
        val_images=val_images,
        epoch_seconds=per_epoch or {k: v / (2 * FINETUNE_EPOCHS) for k, v in (cost or COSTS).items()},
        view_seconds=per_view or {},
        views=6,
    )


def test_small_and_similar_fine_tunes_the_top_lightly_when_it_fits() -> None:
    d = decide(evidence(per_class=40, last=0.9, earlier=0.7), num_stages=STAGES)
    assert (d.size, d.domain, d.method, d.feature_layer, d.unfreeze) == ("small", "similar", "finetune", "last", 2)
    assert d.epochs == FINETUNE_EPOCHS
    assert "40 per class" in d.explanation and "fallback" in d.explanation


def test_small_and_similar_without_time_keeps_features() -> None:
    d = decide(evidence(per_class=40, last=0.9, earlier=0.7, budget=30), num_stages=STAGES)
    assert (d.method, d.feature_layer, d.unfreeze) == ("features", "last", 0)
    assert "would not fit the time left" in d.explanation


def test_features_too_good_for_validation_to_show_a_gain_are_not_fine_tuned() -> None:
    # 200 validation images: at 99% the features should get 2 wrong, too few to show a gain.
    d = decide(evidence(per_class=LARGE_PER_CLASS, last=0.99, earlier=0.7), num_stages=STAGES)
    assert (d.method, d.feature_layer, d.unfreeze) == ("features", "last", 0)
    assert "about 2.0 of the 200 validation images wrong" in d.explanation
    assert decide(evidence(per_class=LARGE_PER_CLASS, last=0.97, earlier=0.7), num_stages=STAGES).unfreeze
    # The same 99% with 1,000 validation images leaves 10 errors to fix: worth fine-tuning.
    assert decide(
        evidence(per_class=LARGE_PER_CLASS, last=0.99, earlier=0.7, val_images=1000), num_stages=STAGES
    ).unfreeze


def test_features_that_get_every_probe_image_right_are_said_to_get_none_wrong() -> None:
    # The demo's message read "about 0.0 of the 20 validation images wrong".
    d = decide(evidence(per_class=2, last=1.0, earlier=1.0, val_images=20), num_stages=STAGES)
    assert d.method == "features"
    assert "should get none of the 20 validation images wrong" in d.explanation
    assert "about 0.0" not in d.explanation


def test_probes_that_could_not_be_measured_keep_the_features_and_say_why() -> None:
    # Every class had a single training image: nothing to hold out, no probe accuracy ("nan%" before).
    nan = float("nan")
    e = evidence(per_class=1, last=nan, earlier=nan, val_images=20)
    d = decide(e, num_stages=STAGES)
    assert d.method == "features" and d.feature_layer == "last"
    assert "nan" not in d.explanation.lower()
    assert "Linear probe: not measured" in d.explanation
    assert not fine_tuning_can_show(e.probes, e.train_images, e.val_images, "small")


def test_the_error_count_rule_sits_at_its_threshold() -> None:
    at = 1 - (MIN_VAL_ERRORS + 0.01) / 200
    below = 1 - (MIN_VAL_ERRORS - 0.01) / 200
    assert decide(evidence(per_class=40, last=at, earlier=0.5), num_stages=STAGES).method == "finetune"
    assert decide(evidence(per_class=40, last=below, earlier=0.5), num_stages=STAGES).method == "features"


def test_without_validation_images_auto_keeps_the_features() -> None:
    d = decide(evidence(per_class=40, last=0.6, earlier=0.5, val_images=0), num_stages=STAGES)
    assert d.method == "features" and "No validation images" in d.explanation


def test_large_and_similar_fine_tunes_more_stages() -> None:
    d = decide(evidence(per_class=LARGE_PER_CLASS, last=0.9, earlier=0.7), num_stages=STAGES)
    assert (d.size, d.method, d.unfreeze) == ("large", "finetune", 3)


def test_budget_caps_the_number_of_stages() -> None:
    d = decide(evidence(per_class=500, last=0.9, earlier=0.7, budget=150), num_stages=STAGES)
    assert d.unfreeze == 2


def test_a_tight_budget_takes_fewer_epochs_before_fewer_stages() -> None:
    # 3 stages: 120 s once plus 10 s per epoch. 200 s leave room for 8 epochs of 3 stages.
    per_epoch = {"1": 2.0, "2": 5.0, "3": 10.0, "all": 40.0}
    cost = {k: 120.0 + FINETUNE_EPOCHS * v for k, v in per_epoch.items()}
    d = decide(evidence(per_class=500, last=0.9, earlier=0.7, budget=200, cost=cost, per_epoch=per_epoch), num_stages=8)
    assert (d.unfreeze, d.epochs) == (3, 8)
    assert "for 8 epochs" in d.explanation
    # Below MIN_EPOCHS of 3 stages, fewer stages: 2 stages at 5 s per epoch fit 12 epochs in 180 s.
    tight = 120.0 + (MIN_EPOCHS - 1) * 10.0
    d = decide(
        evidence(per_class=500, last=0.9, earlier=0.7, budget=tight, cost=cost, per_epoch=per_epoch), num_stages=8
    )
    assert d.unfreeze == 2 and d.epochs == min(FINETUNE_EPOCHS, int((tight - 120.0) // 5.0))


def test_a_tight_budget_takes_fewer_cached_views_before_fewer_epochs() -> None:
    # 3 stages: 60 s once, 10 s per cached view, 10 s per epoch; at 6 views and 12 epochs: 240 s.
    per_epoch = {"1": 2.0, "2": 5.0, "3": 10.0, "all": 40.0}
    per_view = {"1": 10.0, "2": 10.0, "3": 10.0, "all": 20.0}
    cost = {k: 60.0 + 6 * per_view[k] + FINETUNE_EPOCHS * v for k, v in per_epoch.items()}
    roomy = evidence(per_class=40, last=0.6, earlier=0.8, budget=240, cost=cost, per_epoch=per_epoch, per_view=per_view)
    d = decide(roomy, num_stages=8)
    assert (d.unfreeze, d.epochs, d.views) == (3, 12, 6)
    assert "augmented views" not in d.explanation
    # 210 s: 12 epochs still fit with 3 views (210 s), not with 6 (240 s); epochs stay, views go.
    tight = replace(roomy, budget_s=210.0)
    d = decide(tight, num_stages=8)
    assert (d.unfreeze, d.epochs, d.views) == (3, 12, 3)
    assert "3 augmented views per image, not 6" in d.explanation
    # Below MIN_VIEWS the epochs go instead: 200 s fit 3 views and 11 epochs.
    d = decide(replace(roomy, budget_s=200.0), num_stages=8)
    assert (d.unfreeze, d.epochs, d.views) == (3, 11, 6 // 2)


def test_small_and_different_falls_back_on_the_earlier_layer_and_fine_tunes_deeper() -> None:
    d = decide(evidence(per_class=40, last=0.6, earlier=0.8), num_stages=STAGES)
    assert (d.domain, d.method, d.feature_layer, d.unfreeze) == ("different", "finetune", "3", 3)
    assert "features of level 3 first as the fallback" in d.explanation


def test_small_and_different_without_time_takes_features_from_the_earlier_layer() -> None:
    d = decide(evidence(per_class=40, last=0.6, earlier=0.8, budget=30), num_stages=STAGES)
    assert (d.domain, d.method, d.feature_layer, d.unfreeze) == ("different", "features", "3", 0)
    assert "features of level 3" in d.explanation


def test_large_and_different_fine_tunes_everything_when_it_fits() -> None:
    d = decide(evidence(per_class=500, last=0.6, earlier=0.8, budget=1000), num_stages=STAGES)
    assert (d.domain, d.method, d.unfreeze, d.feature_layer) == ("different", "finetune", "all", "last")


def test_large_and_different_without_time_for_all_takes_what_fits() -> None:
    d = decide(evidence(per_class=500, last=0.6, earlier=0.8, budget=300), num_stages=STAGES)
    assert d.unfreeze == 3


def test_an_earlier_layer_must_beat_the_last_by_more_than_the_probes_noise() -> None:
    # 400 training images at about 80%: the difference of two probes has a noise of about 2.8 points.
    tie = decide(evidence(per_class=40, last=0.8, earlier=0.82), num_stages=STAGES)
    assert tie.domain == "similar" and tie.feature_layer == "last"
    beaten = decide(evidence(per_class=40, last=0.8, earlier=0.84), num_stages=STAGES)
    assert beaten.domain == "different"
    # With 10x the images the same 2 points are beyond the noise.
    assert decide(evidence(per_class=400, last=0.8, earlier=0.82), num_stages=STAGES).domain == "different"


def test_without_earlier_probes_the_data_counts_as_similar() -> None:
    e = evidence(per_class=40, last=0.6, earlier=0.8)
    only_last = Evidence(**{**asdict(e), "probes": (e.last,)})
    d = decide(only_last, num_stages=STAGES)
    assert (d.domain, d.method, d.feature_layer, d.unfreeze) == ("similar", "finetune", "last", 2)


def test_fine_tuning_gets_its_epochs_and_features_none() -> None:
    tuned = decide(evidence(per_class=40, last=0.9, earlier=0.7), num_stages=STAGES)
    kept = decide(evidence(per_class=40, last=0.9, earlier=0.7, budget=30), num_stages=STAGES)
    assert (tuned.method, tuned.epochs) == ("finetune", FINETUNE_EPOCHS) and (kept.method, kept.epochs) == (
        "features",
        0,
    )
    assert decide(evidence(per_class=40, last=0.9, earlier=0.7), num_stages=STAGES) == tuned  # pure


def test_fine_tuning_is_timed_only_where_validation_could_show_a_gain() -> None:
    e = evidence(per_class=40, last=0.99, earlier=0.7)
    assert not fine_tuning_can_show(e.probes, 400, 200, "small")
    assert fine_tuning_can_show(e.probes, 400, 1000, "small")
    assert not fine_tuning_can_show(evidence(per_class=40, last=0.5, earlier=0.4).probes, 400, 0, "small")


def rows(*val_acc: float) -> list[dict]:  # type: ignore[type-arg]
    return [{"val_acc": a} for a in val_acc]


def test_fine_tuning_gives_up_only_when_behind_the_features_beyond_the_noise() -> None:
    # Features at 90% on 200 validation images: 20 wrong, noise sqrt(0.6 * 20) = 3.5 images.
    give_up = behind_features(0.90, 200, planned_epochs=12)
    assert give_up(rows(0.80, 0.80, 0.80, 0.80, 0.80)) is None  # before half the epochs: too early
    assert "behind the features" in (give_up(rows(0.80, 0.82, 0.85, 0.86, 0.87, 0.87)) or "")
    assert give_up(rows(0.80, 0.85, 0.89, 0.88, 0.88, 0.88)) is None  # 2 images behind: within the noise


TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--input-size", "64"]
FAST = ["--head-lr", "0.05", "--lr", "0.01", "--head-epochs", "3", "--epochs", "2"]


def recorded(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "tlearn.json").read_text())["details"]["auto"]


def decided_again(auto: dict) -> dict:  # type: ignore[type-arg]
    """What `decide` makes of the evidence the run recorded: the run must have done just that."""
    ev = dict(auto["evidence"])
    ev["probes"] = tuple(Probe(**p) for p in ev["probes"])
    stages = len(create_backbone("test_efficientnet", weights="none", input_size=64, warn_random=False).stages)
    return asdict(decide(Evidence(**ev), num_stages=stages))


def mislabel(root: Path, per_class: int = 2) -> None:
    """Move `per_class` images of each class into the next class's folder: labels a probe cannot learn."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    for here, there in zip(folders, folders[1:] + folders[:1], strict=True):
        for f in sorted(here.iterdir())[:per_class]:
            f.rename(there / f.name)


def test_auto_fine_tunes_when_the_features_leave_room_and_time_allows(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # 8 of 96 labels wrong: the features get enough validation images wrong for fine-tuning to show,
    # so with an hour to spend auto must fine-tune (2 stages for similar data, 3 for different), with
    # the features as the fallback.
    mislabel(shapes)
    out = tmp_path / "run"
    # A large validation part, so that validation can show a gain (see MIN_VAL_ERRORS).
    res = run_cli("train", shapes, *TINY, *FAST, "--val-frac", "0.4", "--time-budget", "1h", "--out", out)
    assert res.code == 0, res.err
    auto = recorded(out)
    assert auto["decision"] == decided_again(auto)
    assert auto["evidence"]["finetune_estimates"], auto["explanation"]  # timed: the decision depended on it
    assert {p["layer"] for p in auto["evidence"]["probes"]} >= {"last"}
    decision = auto["decision"]
    assert (decision["size"], decision["method"]) == ("small", "finetune")
    assert decision["unfreeze"] == (2 if decision["domain"] == "similar" else 3)
    assert "Auto:" in res.out and "Fine-tuning the last" in res.out

    # Both ran; the fine-tuned model is kept unless the features are right on more validation images.
    scores = auto["validation"]
    assert auto["chosen"] == ("finetune" if scores["finetune"] >= scores["features"] else "features")
    doc = json.loads((out / "tlearn.json").read_text())
    assert doc["method"] == auto["chosen"]
    assert f"{auto['chosen']} kept." in auto["explanation"]
    with (out / "history.csv").open() as fh:
        phases = [r["phase"] for r in csv.DictReader(fh)]
    assert phases == ["head"] * 3 + ["finetune"] * 2
    # history.csv's best column and tlearn.json agree on which epoch made the kept model, if any.
    kept = kept_epochs(read_history(out / "history.csv"))
    assert kept.get("finetune") == (doc["details"]["best_epoch"] if auto["chosen"] == "finetune" else None)


def test_features_kept_over_fine_tuning_come_with_the_network_they_were_fitted_on(
    run_cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # auto fits the features first and fine-tunes after: fine-tuning must train a copy of the network,
    # or the features' head is saved on top of the fine-tuned network.
    mislabel(shapes)
    monkeypatch.setattr(auto, "_better_on_validation", lambda *a: ("features", {"features": 1.0, "finetune": 0.0}))
    out = tmp_path / "run"
    res = run_cli("train", shapes, *TINY, *FAST, "--val-frac", "0.4", "--time-budget", "1h", "--out", out)
    assert res.code == 0, res.err
    assert (recorded(out)["decision"]["method"], recorded(out)["chosen"]) == ("finetune", "features")
    assert_predicts_as_its_run(out, shapes)
    # The fine-tuning tried is in history.csv, none of its epochs marked as the kept model's, and the
    # report's curves say so: no ring, and the features kept.
    rows = read_history(out / "history.csv")
    assert [r.phase for r in rows] == ["head"] * 3 + ["finetune"] * 2 and not any(r.best for r in rows)
    assert "best_epoch" not in json.loads((out / "tlearn.json").read_text())["details"]
    html = (out / "report.html").read_text(encoding="utf-8")
    curves = html[html.index('<section id="curves">') : html.index('<section id="diagnosis">')]
    assert "Rings mark" not in curves and "the features were kept" in curves


def test_auto_keeps_the_features_when_fine_tuning_cannot_fit_the_budget(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    res = run_cli("train", shapes, *TINY, *FAST, "--time-budget", "0.001", "--out", out)
    assert res.code == 0, res.err
    auto = recorded(out)
    assert auto["decision"] == decided_again(auto)
    assert auto["evidence"]["budget_s"] == 0.0  # nothing left of the run's budget when auto decides
    assert all(seconds > 0.001 for seconds in auto["evidence"]["finetune_estimates"].values())
    assert (auto["decision"]["method"], auto["decision"]["unfreeze"], auto["decision"]["epochs"]) == ("features", 0, 0)
    assert "Fine-tuning the last" not in auto["explanation"] and "On validation" not in auto["explanation"]
    assert auto.get("validation") is None and auto.get("chosen") is None  # no fine-tuning to compare with
    assert json.loads((out / "tlearn.json").read_text())["method"] == "features"
    assert not (out / "history.csv").exists() and not (out / "checkpoint.pt").exists()  # nothing trained in epochs
    assert res.out.count("Auto:") == 1


@pytest.mark.parametrize("layer", ["last", "3"])
def test_probe_features_are_the_ones_the_feature_method_would_compute(
    shapes: Path, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlearn.data.checks import check_dataset
    from tlearn.data.scan import scan_images
    from tlearn.data.sources import load_dataset
    from tlearn.training import features
    from tlearn.training.auto import measure, probe_pass
    from tlearn.training.config import TrainConfig
    from tlearn.training.feature_method import compute_features, feature_trunk
    from tlearn.training.run import _backbone, _labelled, _split

    cfg = TrainConfig(data=shapes, backbone="test_efficientnet", weights="none", input_size=64)
    backbone = _backbone(cfg)
    ds = load_dataset(shapes)
    scanned = scan_images(ds.samples, short_side=backbone.preprocessing.working_short_side)
    report = check_dataset(ds, scanned)
    data = _labelled(scanned, report, _split(cfg, ds, scanned, report))
    evidence = measure(backbone, data, cfg, probe_pass(backbone, data, cfg))
    assert {p.layer for p in evidence.probes} >= {"last", layer}

    computed: list[int] = []
    real = features.run_embed
    monkeypatch.setattr(features, "run_embed", lambda m, x: computed.append(len(x)) or real(m, x))
    from_probe = compute_features(feature_trunk(backbone, layer), backbone, data, views=0, mirror=True, cfg=cfg)
    assert not computed  # the probe's single pass already holds these features
    shell = feature_trunk(backbone, layer)
    from tlearn.data.augment import build_eval_transform

    x = torch.stack([build_eval_transform(backbone.preprocessing)(p) for p in data.pixels[:8]])
    with torch.no_grad():
        direct = shell.features(x).numpy()
    np.testing.assert_allclose(from_probe.clean[:8], direct, rtol=1e-4, atol=1e-5)


def _val_proba(labels: np.ndarray, right: int, confidence: float) -> np.ndarray:
    """Probabilities over 2 classes that get the first `right` labels right, with `confidence`."""
    proba = np.full((len(labels), 2), 1 - confidence)
    for i, y in enumerate(labels):
        proba[i, y if i < right else 1 - y] = confidence
    return proba


@pytest.mark.parametrize(
    ("features_right", "tuned_right", "kept"),
    [(9, 9, "finetune"), (10, 9, "features"), (8, 9, "finetune")],
)
def test_the_fallback_wins_only_when_more_validation_images_are_right(
    features_right: int, tuned_right: int, kept: str
) -> None:
    labels = np.array([0, 1] * 5)
    data = SimpleNamespace(split=SimpleNamespace(val=np.arange(10)), labels=labels, classes=("a", "b"))
    # the features are the more confident: a log-loss tie-break would always pick them
    features = SimpleNamespace(proba={"val": _val_proba(labels, features_right, 0.9)})
    tuned = SimpleNamespace(proba={"val": _val_proba(labels, tuned_right, 0.7)})
    choice, scores = _better_on_validation(features, tuned, data)  # type: ignore[arg-type]
    assert choice == kept
    assert scores == {"features": features_right / 10, "finetune": tuned_right / 10}


@pytest.mark.parametrize(("earlier_right", "last_right", "kept"), [(9, 9, "last"), (10, 9, "3"), (8, 9, "last")])
def test_an_earlier_layer_is_kept_only_when_more_validation_images_are_right(
    earlier_right: int, last_right: int, kept: str
) -> None:
    labels = np.array([0, 1] * 5)
    data = SimpleNamespace(split=SimpleNamespace(val=np.arange(10)), labels=labels, classes=("a", "b"))
    earlier = SimpleNamespace(proba={"val": _val_proba(labels, earlier_right, 0.9)}, name="3")
    last = SimpleNamespace(proba={"val": _val_proba(labels, last_right, 0.9)}, name="last")
    winner, said = _layer_on_validation(earlier, last, "3", data)  # type: ignore[arg-type]
    assert winner.name == kept
    assert f"level 3 {earlier_right / 10:.1%}, last layer {last_right / 10:.1%}" in said
