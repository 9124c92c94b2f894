"""auto costs little where it can: no fine-tuning timing when the decision cannot depend on it."""

from __future__ import annotations

from pathlib import Path

import pytest

import tlearn
from tlearn.training import costs
from tlearn.training.auto import Probe, is_different, is_saturated


def probes(last: float, earlier: float) -> tuple[Probe, ...]:
    return (Probe("last", "output", 8, last), Probe("2", "level 2", 4, earlier))


def test_saturated_means_similar_and_a_last_layer_probe_of_99_percent() -> None:
    assert is_saturated(probes(0.995, 0.90))
    assert not is_saturated(probes(0.98, 0.90))  # not separable enough yet
    assert not is_saturated(probes(0.995, 0.999))  # an earlier layer is better: different data
    assert is_different(probes(0.90, 0.95)) and not is_different(probes(0.95, 0.95))


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
