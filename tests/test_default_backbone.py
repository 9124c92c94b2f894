"""The backbone that works anywhere: the built-in MobileNetV2 by name, and the default's offline fallback."""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression

from tlearn.core.errors import OfflineError
from tlearn.models import backbones as bb
from tlearn.models import hub
from tlearn.models.backbones import BUILTIN_NAME, DEFAULT_BACKBONE, FALLBACK_MESSAGE, create_backbone, rebuild_model
from tlearn.models.builtin import builtin_weights_id

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / f"{BUILTIN_NAME}.safetensors"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub cannot be reached, and nothing may even try: a connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was asked")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.HUB_TIMEOUT_S: False)
    bb._warn_fallback_once.cache_clear()


@pytest.fixture(scope="module")
def builtin() -> bb.Backbone:
    return create_backbone(BUILTIN_NAME)


def synthetic_image(size: int = 224) -> torch.Tensor:
    """A fixed image in [0, 1] (N, C, H, W): smooth gradients plus seeded noise."""
    ramp = torch.linspace(0.0, 1.0, size)
    image = torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size), ramp.outer(ramp)])
    noise = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    return (0.7 * image + 0.3 * noise).unsqueeze(0)


def test_builtin_name_needs_no_network(no_network: None) -> None:
    b = create_backbone(BUILTIN_NAME)
    assert (b.name, b.architecture, b.create_kwargs) == (BUILTIN_NAME, "mobilenetv2_100", {"pad_type": "same"})
    assert b.weights == f"builtin:{BUILTIN_NAME}" and b.weights_id == builtin_weights_id()
    assert b.fallback is None
    p = b.preprocessing
    assert (p.mean, p.std, p.input_size) == ((0.5,) * 3, (0.5,) * 3, (224, 224))
    assert (p.interpolation, p.crop_pct) == ("bilinear", 0.875)
    assert b.num_features == 1280 and b.any_input_size


def test_builtin_name_ignores_case_and_spaces(builtin: bb.Backbone, no_network: None) -> None:
    assert create_backbone(" MobileNetV2_100.TF_in1k ").name == BUILTIN_NAME


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason=f"the original float weights are not at {SHARED_WEIGHTS}")
def test_builtin_features_equal_timm_with_the_original_file(builtin: bb.Backbone) -> None:
    model = timm.create_model("mobilenetv2_100", pretrained=False, pad_type="same", num_classes=0)
    state = load_file(str(SHARED_WEIGHTS))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=True)
    x = (synthetic_image() - 0.5) / 0.5  # the weights' own normalisation
    with torch.inference_mode():
        assert torch.equal(builtin.model(x), model.eval()(x))


def test_a_bundle_rebuilds_the_same_network(builtin: bb.Backbone) -> None:
    again = rebuild_model(builtin.architecture, builtin.create_kwargs)
    again.load_state_dict(builtin.model.state_dict(), strict=True)
    x = (synthetic_image(96) - 0.5) / 0.5
    with torch.inference_mode():
        assert torch.equal(again.eval()(x), builtin.model(x))  # "same" padding included


def test_a_weights_file_wins_over_the_builtin_weights(tmp_path: Path) -> None:
    torch.manual_seed(5)
    other = timm.create_model("mobilenetv2_100", pad_type="same", num_classes=0).state_dict()
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, str(path))
    b = create_backbone(BUILTIN_NAME, weights=path)
    assert b.weights == f"file:{path}" and b.create_kwargs == {"pad_type": "same"}
    assert torch.equal(b.model.state_dict()["conv_stem.weight"], other["conv_stem.weight"])


def test_default_falls_back_to_builtin_offline_in_one_line(no_network: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tlearn"):
        first, second = create_backbone(), create_backbone()
    for b in (first, second):
        assert b.name == BUILTIN_NAME and b.weights == f"builtin:{BUILTIN_NAME}"
        assert b.fallback == FALLBACK_MESSAGE
    assert [r.getMessage() for r in caplog.records] == [FALLBACK_MESSAGE]  # once per process
    assert FALLBACK_MESSAGE == (
        "No network and no cached DINOv2 weights: using the built-in MobileNetV2 (mobilenetv2_100.tf_in1k); "
        "pass --backbone NAME for another."
    )


def test_default_is_dinov2_when_its_weights_are_cached(
    no_network: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cache entry laid out as huggingface_hub writes it: the default needs no network then."""
    repo = tmp_path / "models--timm--vit_small_patch14_dinov2.lvd142m"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert hub.hub_weights_cached(DEFAULT_BACKBONE)
    assert bb.resolve_default_backbone() == (DEFAULT_BACKBONE, None)


def test_default_is_dinov2_when_the_hub_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.HUB_TIMEOUT_S: True)
    assert not hub.hub_weights_cached(DEFAULT_BACKBONE)  # the tests' cache is empty
    assert bb.resolve_default_backbone() == (DEFAULT_BACKBONE, None)


def test_a_named_hub_model_offline_never_falls_back(no_network: None, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("resnet18", DEFAULT_BACKBONE):
        with pytest.raises(OfflineError, match=f"weights of {name} are not in the local cache") as info:
            create_backbone(name)
        assert "--weights PATH" in (info.value.hint or "")
        assert f"--backbone {BUILTIN_NAME}" in (info.value.hint or "")
    assert FALLBACK_MESSAGE not in caplog.text


def test_random_init_of_the_default_needs_no_weights(no_network: None) -> None:
    b = create_backbone(weights="none", input_size=56, warn_random=False)
    assert b.name == DEFAULT_BACKBONE and b.fallback is None and b.weights == "none"


def shapes(kind: str, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random colours in both classes, so that only the pattern tells them apart: stripes or one disc."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if kind == "stripes":
            angle, freq = rng.uniform(0, math.pi), rng.uniform(4, 8)
            mask = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle))) > 0
        else:
            cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = np.where(mask[..., None], fg, bg) + rng.normal(0, 0.03, (size, size, 3))
        out.append(np.clip(img, 0, 1).astype(np.float32))
    return out


def test_builtin_features_transfer_to_new_classes(builtin: bb.Backbone) -> None:
    """A linear probe on the built-in features tells stripes from discs on images it has not seen."""
    size, per_class = 64, 16
    rng = np.random.default_rng(0)
    pixels = shapes("stripes", per_class, size, rng) + shapes("disc", per_class, size, rng)
    labels = np.array([0] * per_class + [1] * per_class)
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    mean = torch.tensor(builtin.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(builtin.preprocessing.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        feats = builtin.model((x - mean) / std).numpy()
    train = np.r_[0:10, per_class : per_class + 10]
    test = np.setdiff1d(np.arange(2 * per_class), train)
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(feats[train], labels[train])
    assert probe.score(feats[test], labels[test]) >= 0.9
    # The same probe on the raw pixels is at chance (0.5 here): what separates them is the pretraining.
    flat = x.reshape(len(x), -1).numpy()
    raw = LogisticRegression(C=1.0, max_iter=2000).fit(flat[train], labels[train])
    assert raw.score(flat[test], labels[test]) <= 0.75
