"""auto costs little where it can: no fine-tuning timing when the decision cannot depend on it."""

from __future__ import annotations

from pathlib import Path

import pytest

import tlearn
from tlearn.training import costs
from tlearn.training.auto import Probe, fine_tuning_can_show, is_different


def probes(last: float, earlier: float) -> tuple[Probe, ...]:
    return (Probe("last", "output", 8, last), Probe("2", "level 2", 4, earlier))


def test_timing_is_skipped_when_too_few_validation_errors_are_expected_of_any_layer_auto_may_take() -> None:
    assert not fine_tuning_can_show(probes(0.995, 0.90), 800, 200, "small")  # 1 error expected
    assert fine_tuning_can_show(probes(0.95, 0.90), 800, 200, "small")  # 10
    # An earlier layer clearly better (small, different data): the fallback is that layer.
    assert not fine_tuning_can_show(probes(0.90, 0.999), 800, 200, "small")
    assert fine_tuning_can_show(probes(0.90, 0.999), 800, 200, "large")  # large: the last layer's features
    assert fine_tuning_can_show(probes(0.90, 0.95), 800, 200, "small")
    assert is_different(probes(0.90, 0.95), 800) and not is_different(probes(0.95, 0.95), 800)


def test_auto_on_separable_data_skips_timing_fine_tuning(
    shapes_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> dict[str, float]:
        raise AssertionError("fine-tuning was timed although the features already separate the classes")

    monkeypatch.setattr(costs, "finetune_estimates", never)
    result = tlearn.train(shapes_master, method="auto", backbone="mobilenetv2_100.tf_in1k", input_size=96, out=tmp_path)
    assert result.details.auto is not None
    assert result.details.auto.decision["method"] == "features"
    assert result.details.auto.evidence["finetune_estimates"] == {}
    assert result.metrics["test"].accuracy >= 0.9  # real pretrained features: the shapes are easy
