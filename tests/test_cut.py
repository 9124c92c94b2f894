"""Cutting a backbone at a stage boundary: the frozen bottom and the trainable top compute the whole trunk."""

from __future__ import annotations

import logging

import pytest
import torch

from tlearn.models import cut as cut_module
from tlearn.models.backbones import BUILTIN_NAME, Backbone, create_backbone
from tlearn.models.classifier import FeatureTrunk
from tlearn.models.cut import cut_trunk

SIZE = (64, 64)


def tiny(name: str) -> Backbone:
    return create_backbone(name, weights="none", input_size=SIZE[0], warn_random=False)


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("name", "last_n", "boundary"),
    [
        ("test_efficientnet", 2, "blocks.3"),  # EfficientNet / MobileNet layout: conv_stem, bn1, blocks, conv_head
        ("test_resnet", 2, "layer3"),  # ResNet layout: conv1, bn1, layer1..layer4
        (BUILTIN_NAME, 3, "blocks.4"),  # the built-in MobileNetV2: real weights and TensorFlow's "same" padding
    ],
)
def test_bottom_then_top_is_the_whole_trunk(name: str, last_n: int, boundary: str) -> None:
    b = create_backbone(name, input_size=SIZE[0]) if name == BUILTIN_NAME else tiny(name)
    trunk = FeatureTrunk(b.model)
    trainable = b.stages[-last_n:]
    cut = cut_trunk(trunk, trainable, input_size=SIZE)
    assert cut is not None
    assert cut.boundary == boundary
    x = images()
    with torch.inference_mode():
        whole = trunk.eval()(x)
        middle = cut.bottom(x)
        split = cut.top(middle)
    assert middle.ndim == 4 and middle.shape[0] == 3  # a feature map, cached once per image
    assert split.shape == whole.shape == (3, b.num_features)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
    # The top holds every trainable parameter, the bottom none of them.
    trainable_params = {id(p) for n, p in b.model.named_parameters() if n in {q for s in trainable for q in s.params}}
    assert trainable_params <= {id(p) for p in cut.top.parameters()}
    assert not trainable_params & {id(p) for p in cut.bottom.parameters()}


def test_a_model_of_another_shape_is_not_cut() -> None:
    b = tiny("test_byobnet")  # stem / stages / final_conv: not one of the layouts cut knows
    assert cut_trunk(FeatureTrunk(b.model), b.stages[-2:], input_size=SIZE) is None


def test_nothing_to_cut_when_everything_or_nothing_trains() -> None:
    b = tiny("test_resnet")
    trunk = FeatureTrunk(b.model)
    assert cut_trunk(trunk, b.stages, input_size=SIZE) is None  # the stem trains too
    assert cut_trunk(trunk, (), input_size=SIZE) is None


def test_a_cut_that_disagrees_with_the_network_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    b = tiny("test_efficientnet")
    monkeypatch.setattr(cut_module, "_agrees", lambda *args: False)
    with caplog.at_level(logging.WARNING, logger="tlearn.models.cut"):
        assert cut_trunk(FeatureTrunk(b.model), b.stages[-2:], input_size=SIZE) is None
    assert "does not reproduce the network" in caplog.text
