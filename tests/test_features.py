"""Feature extraction: computed once per image and view, reused from the disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tlearn.training import features
from tlearn.training.features import FeatureCache, extract_features


class Counting(nn.Module):
    """Mean colour of each image, counting how many images it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return x.mean(dim=(2, 3))


def inputs(n: int) -> list:  # type: ignore[type-arg]
    return [lambda i=i: torch.full((3, 8, 8), i / n) for i in range(n)]


def test_second_extraction_reads_the_cache_and_computes_nothing(tmp_path: Path) -> None:
    keys = [f"img{i}" for i in range(10)]
    first_model, second_model = Counting(), Counting()
    first = extract_features(first_model, inputs(10), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    second = extract_features(second_model, inputs(10), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    assert first_model.seen == 10 and second_model.seen == 0
    np.testing.assert_array_equal(first, second)
    assert first.shape == (10, 3) and np.isclose(first[3, 0], 0.3)


def test_only_new_keys_are_computed(tmp_path: Path) -> None:
    extract_features(Counting(), inputs(6), keys=[f"k{i}" for i in range(6)], cache=FeatureCache({"m": 1}, tmp_path))
    model = Counting()
    extract_features(model, inputs(8), keys=[f"k{i}" for i in range(8)], cache=FeatureCache({"m": 1}, tmp_path))
    assert model.seen == 2


def test_another_network_does_not_read_these_features(tmp_path: Path) -> None:
    keys = ["a", "b"]
    extract_features(Counting(), inputs(2), keys=keys, cache=FeatureCache({"weights": "one"}, tmp_path))
    model = Counting()
    extract_features(model, inputs(2), keys=keys, cache=FeatureCache({"weights": "two"}, tmp_path))
    assert model.seen == 2


def test_interrupted_extraction_keeps_what_it_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "FLUSH_EVERY", 4)

    class CtrlC(Counting):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.seen >= 8:
                raise KeyboardInterrupt  # the user presses Ctrl-C during the third batch
            return super().forward(x)

    keys = [f"k{i}" for i in range(12)]
    with pytest.raises(KeyboardInterrupt):
        extract_features(CtrlC(), inputs(12), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    model = Counting()
    extract_features(model, inputs(12), keys=keys, cache=FeatureCache({"m": 1}, tmp_path), batch_size=4)
    assert model.seen == 4  # the first two batches were saved; only the third is computed again
