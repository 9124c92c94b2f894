"""Heatmaps (models/explain.py): a trained model's map lights up the object that decides the class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tlearn.artifacts.bundle import load_bundle
from tlearn.core.errors import ConfigError
from tlearn.data.augment import build_eval_transform
from tlearn.data.synthetic import CLASSES, draw_located, make_located_dataset
from tlearn.models.backbones import create_backbone
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec, build_head
from tlearn.models.explain import class_activation_maps, overlay, target_layer

TEST_IMAGES = 24


@pytest.fixture(scope="module")
def located(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Classifier, np.ndarray, list[tuple[float, ...]], list[int]]:
    """A feature-method bundle on the built-in MobileNetV2, trained where only a small coloured shape among
    grey clutter decides the class; and new test images framed by its eval transform, with the shape's box
    in input pixels and the true class index."""
    import tlearn

    root = tmp_path_factory.mktemp("located")
    make_located_dataset(root / "data", classes=3, per_class=20, radius=0.14, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEARN_CACHE_DIR", str(root / "cache"))
        tlearn.train(root / "data", method="features", backbone="mobilenetv2_100.tf_in1k", out=root / "bundle")
    classifier, config = load_bundle(root / "bundle")
    prep = config.preprocessing
    transform = build_eval_transform(prep)
    (h, w), side = prep.input_size, prep.resize_short_side
    scale, dx, dy = side / 160, (side - w) / 2, (side - h) / 2
    rng = np.random.default_rng(123)
    xs, boxes, labels = [], [], []
    for i in range(TEST_IMAGES):
        cls = CLASSES[i % 3]
        img, (left, top, right, bottom) = draw_located(cls, 160, rng, radius=0.14)
        xs.append(transform(np.array(img)).numpy())
        boxes.append((left * scale - dx, top * scale - dy, right * scale - dx, bottom * scale - dy))
        labels.append(config.classes.index(cls.name))
    return classifier, np.stack(xs), boxes, labels


def _peaks_in_box(maps: np.ndarray, boxes: list[tuple[float, ...]]) -> float:
    hits = []
    for m, (left, top, right, bottom) in zip(maps, boxes, strict=True):
        y, x = np.unravel_index(int(m.argmax()), m.shape)
        hits.append(left <= x <= right and top <= y <= bottom)
    return float(np.mean(hits))


def _mass_in_box(maps: np.ndarray, boxes: list[tuple[float, ...]]) -> float:
    shares = []
    for m, (left, top, right, bottom) in zip(maps, boxes, strict=True):
        inside = m[max(int(top), 0) : int(bottom) + 1, max(int(left), 0) : int(right) + 1].sum()
        shares.append(inside / max(float(m.sum()), 1e-9))
    return float(np.mean(shares))


@pytest.mark.slow
def test_the_heatmap_of_a_trained_model_peaks_on_the_shape_that_decides_the_class(located) -> None:  # type: ignore[no-untyped-def]
    classifier, x, boxes, labels = located
    heat = class_activation_maps(classifier, x)
    assert heat.maps.shape == (len(x), *x.shape[-2:])
    assert np.mean(heat.targets == np.array(labels)) >= 0.8  # the predicted class, by default
    # The box covers about a tenth of the image: a map that ignored the shape would peak in it about
    # one time in ten, and put about a tenth of its mass there.
    box_share = np.mean([(r - left) * (b - t) for left, t, r, b in boxes]) / (x.shape[-1] * x.shape[-2])
    assert _peaks_in_box(heat.maps, boxes) >= 0.5
    assert _mass_in_box(heat.maps, boxes) >= 2 * box_share


@pytest.mark.slow
def test_a_model_with_random_weights_gives_clearly_different_maps(located) -> None:  # type: ignore[no-untyped-def]
    """The sanity check of Adebayo et al. (2018): maps that survive randomising the weights explain nothing."""
    classifier, x, boxes, labels = located
    trained = class_activation_maps(classifier, x, targets=labels).maps
    randomised = create_backbone("mobilenetv2_100.tf_in1k", weights="none", warn_random=False).model
    head = build_head(HeadSpec(num_classes=3, in_features=randomised.num_features))
    torch.manual_seed(0)
    shuffled = Classifier(
        FeatureTrunk(randomised), head, mean=classifier.mean.flatten().tolist(), std=classifier.std.flatten().tolist()
    )
    random_maps = class_activation_maps(shuffled, x, targets=labels).maps
    corr = [
        np.corrcoef(a.ravel(), b.ravel())[0, 1] if b.std() > 0 else 0.0
        for a, b in zip(trained, random_maps, strict=True)
    ]
    assert np.mean(corr) < 0.3
    assert _peaks_in_box(random_maps, boxes) < _peaks_in_box(trained, boxes) - 0.2


def test_maps_are_computed_in_inference_mode_and_leave_the_network_as_it_was(located) -> None:  # type: ignore[no-untyped-def]
    classifier, x, _, _ = located
    state = {k: v.clone() for k, v in classifier.state_dict().items()}
    with torch.no_grad():
        before = classifier(torch.from_numpy(x[:4]))
    classifier.train()
    class_activation_maps(classifier, x[:4])
    assert classifier.training  # the mode it was in is given back
    classifier.eval()
    with torch.no_grad():
        after = classifier(torch.from_numpy(x[:4]))
    assert torch.equal(before, after)
    assert all(torch.equal(v, state[k]) for k, v in classifier.state_dict().items())  # BatchNorm statistics too


@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet", "test_resnet"])
def test_maps_of_vit_and_cnn_backbones_have_the_input_size_and_follow_the_target(name: str) -> None:
    backbone = create_backbone(name, weights="none", warn_random=False, input_size=64)
    trunk = FeatureTrunk(backbone.model)
    head = build_head(HeadSpec(num_classes=2, in_features=backbone.num_features))
    classifier = Classifier(trunk, head, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    heat = class_activation_maps(classifier, x, targets=[0, 1, 0])
    assert heat.maps.shape == (3, 64, 64)
    assert heat.maps.min() >= 0 and heat.maps.max() <= 1
    assert heat.targets.tolist() == [0, 1, 0]
    assert heat.maps.reshape(3, -1).std(axis=1).min() > 0  # a map, not a constant
    if name == "test_vit":  # the tokens before the last block's attention, prefix tokens skipped
        assert type(target_layer(classifier)[0]).__name__ == "LayerNorm"
        assert target_layer(classifier)[1] == backbone.model.num_prefix_tokens


def test_targets_must_give_one_class_per_image(located) -> None:  # type: ignore[no-untyped-def]
    classifier, x, _, _ = located
    with pytest.raises(ConfigError, match="one class per image: got 1 for 2"):
        class_activation_maps(classifier, x[:2], targets=[0])


def test_overlay_shows_the_photo_where_the_map_is_cold_and_colour_where_it_is_hot() -> None:
    image = np.full((3, 8, 8), 0.5, dtype=np.float32)
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:4] = 1.0
    out = overlay(image, heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[4:] == 128).all()  # cold: the photo as it is
    assert int(out[0, 0, 0]) - int(out[0, 0, 2]) > 60  # hot: red, the colour map's top


def test_overlay_refuses_a_map_of_another_size() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5), np.float32))


def test_located_dataset_writes_each_image_with_its_box(tmp_path: Path) -> None:
    boxes = make_located_dataset(tmp_path, classes=2, per_class=3, size=100, seed=1)
    assert len(boxes) == 6 and all((tmp_path / name).is_file() for name in boxes)
    for left, top, right, bottom in boxes.values():
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 100


def test_maps_of_many_images_take_one_network_pass_per_batch() -> None:
    """The report's 36 tiles cost five passes of the network, not 36."""
    backbone = create_backbone("test_resnet", weights="none", warn_random=False, input_size=64)
    classifier = Classifier(
        FeatureTrunk(backbone.model), build_head(HeadSpec(2, backbone.num_features)), mean=(0.5,) * 3, std=(0.5,) * 3
    )
    passes: list[int] = []
    classifier.trunk.register_forward_hook(lambda _m, args, _out: passes.append(len(args[0])))
    x = np.random.default_rng(0).random((20, 3, 64, 64), dtype=np.float32)
    heat = class_activation_maps(classifier, x, targets=[0, 1] * 10)
    assert passes == [8, 8, 4]
    assert heat.maps.shape == (20, 64, 64)
