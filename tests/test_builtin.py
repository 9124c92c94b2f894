"""The built-in MobileNetV2: shipped small (int8 + per-channel scales), restored bit for bit, and it works."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from tlearn.core.errors import BackboneError
from tlearn.models.builtin import (
    BUILTIN_ARCH,
    BUILTIN_NAME,
    builtin_sidecar,
    builtin_state_dict,
    builtin_weights_id,
    float_digest,
    is_builtin,
    unpack_state_dict,
)

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / f"{BUILTIN_NAME}.safetensors"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "src" / "tlearn" / "models" / "builtin"
MAX_SHIPPED_BYTES = 5_000_000
needs_shared = pytest.mark.skipif(
    not SHARED_WEIGHTS.is_file(), reason=f"the original float weights are not at {SHARED_WEIGHTS} (../shared absent)"
)


@pytest.fixture(scope="module")
def restored() -> dict[str, torch.Tensor]:
    return builtin_state_dict()


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    if not SHARED_WEIGHTS.is_file():
        pytest.skip(f"the original float weights are not at {SHARED_WEIGHTS} (../shared absent)")
    return load_file(str(SHARED_WEIGHTS))


def synthetic_image() -> torch.Tensor:
    """A fixed 224 px image in the model's input range [-1, 1]: smooth gradients plus seeded noise."""
    ramp = torch.linspace(-1.0, 1.0, 224)
    image = torch.stack([ramp.view(1, -1).expand(224, 224), ramp.view(-1, 1).expand(224, 224), ramp.outer(ramp)])
    noise = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    return (0.7 * image + 0.3 * noise).clamp(-1.0, 1.0).unsqueeze(0)


def logits(state: dict[str, torch.Tensor]) -> torch.Tensor:
    model = timm.create_model(BUILTIN_ARCH, pretrained=False, pad_type="same", num_classes=1000)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model.eval()(synthetic_image())


def raw_bytes(t: torch.Tensor) -> torch.Tensor:
    view = torch.int32 if t.element_size() == 4 else torch.uint8
    return t.contiguous().reshape(-1).view(view)


def test_restored_state_dict_has_the_recorded_digest(restored: dict[str, torch.Tensor]) -> None:
    sidecar = builtin_sidecar()
    assert float_digest(restored) == sidecar["float_sha256"]
    assert all(t.dtype in (torch.float32, torch.int64) for t in restored.values())
    assert builtin_weights_id() == f"builtin:{BUILTIN_NAME}:{sidecar['float_sha256'][:16]}"
    assert builtin_state_dict(verify=True).keys() == restored.keys()


def test_sidecar_says_how_to_build_and_preprocess() -> None:
    sidecar = builtin_sidecar()
    assert (sidecar["architecture"], sidecar["tag"]) == (BUILTIN_ARCH, "tf_in1k")
    assert sidecar["create_model_kwargs"] == {"pad_type": "same"}
    cfg = sidecar["pretrained_cfg"]
    assert (cfg["mean"], cfg["std"], cfg["interpolation"], cfg["crop_pct"]) == ([0.5] * 3, [0.5] * 3, "bilinear", 0.875)
    assert cfg["license"] == "apache-2.0"
    assert sidecar["provenance"]["source"]["repository"] == "google-coral/test_data"


def test_only_the_tagged_name_is_builtin() -> None:
    assert is_builtin(BUILTIN_NAME)
    assert not is_builtin(BUILTIN_ARCH)  # the hub's default weights for the architecture are something else
    assert not is_builtin(None)
    assert not is_builtin("resnet50.a1_in1k")


@needs_shared
@pytest.mark.real_data
def test_every_tensor_is_bit_identical_to_the_original(
    restored: dict[str, torch.Tensor], original: dict[str, torch.Tensor]
) -> None:
    assert restored.keys() == original.keys()
    for key, want in original.items():
        got = restored[key]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), key
        assert torch.equal(raw_bytes(got), raw_bytes(want)), key
    assert float_digest(original) == builtin_sidecar()["float_sha256"]


def test_timm_model_classifies_deterministically(restored: dict[str, torch.Tensor]) -> None:
    first, second = logits(restored), logits(builtin_state_dict())
    assert first.shape == (1, 1000)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@needs_shared
@pytest.mark.real_data
def test_timm_model_gives_the_original_output(
    restored: dict[str, torch.Tensor], original: dict[str, torch.Tensor]
) -> None:
    assert torch.equal(logits(restored), logits(original))


def test_headless_model_loads_strictly_without_the_classifier() -> None:
    model = timm.create_model(BUILTIN_ARCH, pretrained=False, pad_type="same", num_classes=0)
    model.load_state_dict(builtin_state_dict(with_classifier=False), strict=True)


def test_damaged_packing_is_a_backbone_error() -> None:
    with pytest.raises(BackboneError, match="damaged"):
        unpack_state_dict({"w.q": torch.zeros(2, 3, dtype=torch.int8)})


def test_shipped_files_are_small_and_licensed() -> None:
    files = [p for p in BUILTIN_DIR.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < MAX_SHIPPED_BYTES
    shipped = {"LICENSE", "NOTICE.md", f"{BUILTIN_NAME}.json", f"{BUILTIN_NAME}.int8.safetensors"}
    assert shipped <= {p.name for p in files}
    assert "Apache License" in (BUILTIN_DIR / "LICENSE").read_text(encoding="utf-8")
    assert builtin_sidecar()["float_sha256"] in (BUILTIN_DIR / "NOTICE.md").read_text(encoding="utf-8")
    assert not (BUILTIN_DIR / "__init__.py").exists()  # data only, read through importlib.resources
