"""Augmentation: what each op does to pixels, fill modes, seeding, presets, messages, the preview."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from conftest import add_broken_files
from tlearn.cli import options
from tlearn.core.errors import ConfigError
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment import (
    PRESETS,
    AugmentConfig,
    augmented_view,
    build_eval_transform,
    build_train_transform,
    describe,
    mix_batch,
    preset,
    view_seed,
)
from tlearn.report.augment_preview import preview_size, write_preview

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# crop_pct 1: a 64 px image passes the framing untouched, so pixels can be compared one to one.
PREP = Preprocessing((64, 64), MEAN, STD, "bilinear", 1.0)


def noise(size: tuple[int, int] = (64, 64), lo: int = 60, hi: int = 190, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3) noise with every value in [lo, hi]: a black or white pixel can only be a fill."""
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(*size, 3), dtype=np.uint8)


def as_uint8(chw: torch.Tensor) -> np.ndarray:
    return (chw * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def pin_affine(monkeypatch: pytest.MonkeyPatch, **params: Any) -> None:
    """Make every RandomAffine apply exactly `params` (angle, translate in px, scale, shear)."""
    fixed = {"angle": 0.0, "translate": (0, 0), "scale": 1.0, "shear": (0.0, 0.0), **params}
    monkeypatch.setattr(v2.RandomAffine, "make_params", lambda self, flat_inputs: dict(fixed))


def pin_affine_to_extremes(monkeypatch: pytest.MonkeyPatch, sign: int) -> None:
    """Make every RandomAffine draw the most extreme parameters its ranges allow."""

    def extremes(self: v2.RandomAffine, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = flat_inputs[0].shape[-2:]
        tx, ty = self.translate or (0.0, 0.0)
        return {
            "angle": sign * self.degrees[1],
            "translate": (sign * round(tx * w), -sign * round(ty * h)),
            "scale": self.scale[0] if self.scale else 1.0,
            "shear": (sign * self.shear[1] if self.shear else 0.0, 0.0),
        }

    monkeypatch.setattr(v2.RandomAffine, "make_params", extremes)


# --- what the ops do to pixels ---------------------------------------------------------------


def test_hflip_mirrors_the_pixels() -> None:
    img = noise()
    out = build_train_transform(AugmentConfig(hflip=1.0), PREP)(img)
    assert torch.equal(out, build_eval_transform(PREP)(img[:, ::-1].copy()))
    assert np.array_equal(as_uint8(out), img[:, ::-1])


def test_vflip_mirrors_the_pixels_upside_down() -> None:
    img = noise()
    assert np.array_equal(as_uint8(build_train_transform(AugmentConfig(vflip=1.0), PREP)(img)), img[::-1])


@pytest.mark.parametrize("fill", ["reflect", "edge", "constant"])
def test_rotation_by_90_degrees_matches_rot90(monkeypatch: pytest.MonkeyPatch, fill: str) -> None:
    pin_affine(monkeypatch, angle=90.0)
    img = noise()
    out = as_uint8(build_train_transform(AugmentConfig(rotation=90, fill=fill), PREP)(img))
    expected = np.rot90(img, k=-1)  # F.affine turns positive angles clockwise
    assert np.abs(out.astype(int) - expected).mean() < 1.0


def test_translation_moves_a_marker_by_the_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_affine(monkeypatch, translate=(6, -4))
    img = np.full((64, 64, 3), 100, np.uint8)
    img[28:36, 28:36] = 250
    out = as_uint8(build_train_transform(AugmentConfig(translate=(0.2, 0.2)), PREP)(img))
    ys, xs = np.nonzero(out[..., 0] > 200)
    assert (xs.mean(), ys.mean()) == pytest.approx((31.5 + 6, 31.5 - 4), abs=0.5)


def test_translation_stays_within_the_configured_fraction() -> None:
    img = np.full((64, 64, 3), 100, np.uint8)
    img[30:34, 30:34] = 250
    transform = build_train_transform(AugmentConfig(translate=(0.25, 0.0), fill="constant"), PREP)
    shifts = []
    for seed in range(24):
        out = as_uint8(augmented_view(img, transform, seed=seed))
        ys, xs = np.nonzero(out[..., 0] > 200)
        shifts.append(xs.mean() - 31.5)
        assert ys.mean() == pytest.approx(31.5, abs=0.5)
    assert max(abs(s) for s in shifts) <= 0.25 * 64 + 1
    assert max(abs(s) for s in shifts) > 0.15 * 64


@pytest.mark.parametrize("fill", ["reflect", "edge", "nearest"])
@pytest.mark.parametrize("sign", [1, -1])
def test_reflect_and_edge_leave_no_constant_corners(monkeypatch: pytest.MonkeyPatch, fill: str, sign: int) -> None:
    pin_affine_to_extremes(monkeypatch, sign)
    cfg = AugmentConfig(rotation=40, zoom=(0.7, 1.6), translate=(0.3, 0.3), shear=20, fill=fill)
    out = as_uint8(build_train_transform(cfg, PREP)(noise()))
    # Only pixels of the image, or a blend of them, can be in [60, 190]: no black fill anywhere.
    assert out.min() >= 60 and out.max() <= 190


def test_reflect_fill_holds_for_random_draws_and_non_square_inputs() -> None:
    prep = Preprocessing((48, 64), MEAN, STD, "bilinear", 0.875)
    no_colour = {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0, "erasing": 0}
    cfg = preset("strong", rotation=45, zoom=(0.6, 1.5), translate=(0.3, 0.2), **no_colour)
    transform = build_train_transform(cfg, prep)
    for seed in range(8):
        out = as_uint8(augmented_view(noise((70, 90)), transform, seed=seed))
        assert out.shape == (48, 64, 3)
        assert out.min() >= 60 and out.max() <= 190


def test_constant_fill_paints_the_uncovered_corners(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_affine(monkeypatch, angle=45.0, scale=0.7)
    cfg = AugmentConfig(rotation=45, zoom=(1.0, 1.43), fill="constant", fill_color=(255, 0, 255), brightness=0.3)
    out = as_uint8(build_train_transform(cfg, PREP)(noise()))
    for y, x in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert tuple(out[y, x]) == (255, 0, 255)
    assert tuple(out[32, 32]) != (255, 0, 255)


# --- output contract -------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["array", "pil", "small"])
def test_eval_transform_is_deterministic_and_gives_input_size(source: str) -> None:
    prep = Preprocessing((48, 64), MEAN, STD, "bicubic", 0.875)
    img: Any = noise((100, 150))
    if source == "pil":
        img = Image.fromarray(img)
    elif source == "small":
        img = noise((30, 20))  # smaller than the model input: enlarged, never an error
    transform = build_eval_transform(prep)
    out = transform(img)
    assert out.shape == (3, 48, 64) and out.dtype == torch.float32
    assert torch.equal(out, transform(img))


@pytest.mark.parametrize("name", list(PRESETS))
def test_outputs_are_float_in_unit_range_and_not_normalised(name: str) -> None:
    transform = build_train_transform(preset(name), PREP)
    out = augmented_view(noise((80, 100)), transform, seed=3)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 64, 64)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    grey = np.full((64, 64, 3), 128, np.uint8)
    no_colour = preset(name, brightness=0, contrast=0, saturation=0, hue=0, erasing=0)
    plain = build_train_transform(no_colour, PREP)(grey)
    assert torch.allclose(plain, torch.full_like(plain, 128 / 255))  # no mean / std applied


def test_the_same_seed_gives_the_same_view_and_another_seed_another() -> None:
    img = noise((80, 100))
    transform = build_train_transform(preset("strong"), PREP)
    before = torch.random.get_rng_state()
    a = augmented_view(img, transform, seed=7)
    assert torch.equal(a, augmented_view(img, transform, seed=7))
    assert not torch.equal(a, augmented_view(img, transform, seed=8))
    assert torch.equal(torch.random.get_rng_state(), before)  # global state untouched
    assert view_seed(0, 1, 2) == view_seed(0, 1, 2)
    assert len({view_seed(0, 0, 1), view_seed(0, 1, 0), view_seed(1, 0, 0)}) == 3


# --- presets and configuration ---------------------------------------------------------------


def test_presets_build_the_ops_they_promise() -> None:
    ops = build_train_transform(preset("standard"), PREP).transforms  # type: ignore[attr-defined]
    affine = next(op for op in ops if isinstance(op, v2.RandomAffine))
    assert affine.degrees == [-15.0, 15.0]
    assert affine.scale == pytest.approx((1.0, 1.25))  # zoom 0.8-1.0 shows 80 to 100 % of the side
    assert any(isinstance(op, v2.ColorJitter) for op in ops)
    assert any(isinstance(op, v2.Pad) and op.padding_mode == "reflect" for op in ops)
    strong = build_train_transform(preset("strong"), PREP).transforms  # type: ignore[attr-defined]
    assert any(isinstance(op, v2.RandomErasing) for op in strong)
    light = build_train_transform(preset("light"), PREP).transforms  # type: ignore[attr-defined]
    assert any(isinstance(op, v2.RandomResizedCrop) for op in light)
    assert preset("standard").hflip == 0.5 and preset("strong").shear > 0


def test_preset_none_is_the_eval_transform() -> None:
    img = noise((90, 120))
    prep = Preprocessing((64, 64), MEAN, STD, "bicubic", 0.875)
    assert torch.equal(build_train_transform(preset("none"), prep)(img), build_eval_transform(prep)(img))
    assert describe(preset("none")) == []


def test_describe_lists_the_active_ops() -> None:
    assert describe(preset("standard")) == [
        "rotate ±15°",
        "zoom 0.8-1.0",
        "translate 10%",
        "fill reflect",
        "hflip 0.5",
        "brightness 0.2",
        "contrast 0.2",
    ]
    assert "mixup α 0.2" in describe(AugmentConfig(mixup=0.2))


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(
        ConfigError, match=r"Unknown augmentation preset 'strongg'\. Choose one of: none, light, standard, strong\."
    ):
        preset("strongg")
    assert tuple(PRESETS) == options.PRESET_NAMES


def test_preset_overrides_and_fill_alias() -> None:
    cfg = preset("standard", rotation=30, fill="nearest")
    assert (cfg.rotation, cfg.fill, cfg.hflip) == (30, "edge", 0.5)


def test_validation_names_the_flags_and_reports_every_problem() -> None:
    with pytest.raises(ConfigError, match=r"--rotation must be between 0 and 180\. Got 200\."):
        AugmentConfig(rotation=200)
    with pytest.raises(ConfigError) as err:
        AugmentConfig(hflip=1.5, zoom=(1.0, 0.5), fill="mirror", fill_color=(0, 0, 300))
    message = str(err.value)
    for flag in ("--hflip", "--zoom", "--fill must be one of constant, edge, reflect", "--fill-color"):
        assert flag in message


def test_config_round_trips_through_json() -> None:
    cfg = preset("strong", crop_scale=(0.5, 1.0), fill_color=(1, 2, 3))
    assert AugmentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="Unknown augmentation settings: spin"):
        AugmentConfig.from_dict({"spin": 3})


def test_cli_options_make_a_config() -> None:
    cfg = options.augment_config("light", no_crop=True, vflip=True, translate=0.2, hflip=False)
    assert cfg.crop_scale is None and cfg.vflip == 0.5 and cfg.hflip == 0
    assert cfg.translate == (0.2, 0.2)
    with pytest.raises(ConfigError, match="--no-crop and --crop-scale"):
        options.augment_config("light", no_crop=True, crop_scale=(0.5, 1.0))


# --- batch mixes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mix_batch_gives_soft_targets_that_sum_to_one(mixup: float, cutmix: float) -> None:
    images = torch.rand(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, targets = mix_batch(
        images,
        labels,
        num_classes=3,
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
        generator=torch.Generator().manual_seed(0),
    )
    assert mixed.shape == images.shape and targets.shape == (6, 3)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert (targets.max(1).values < 1).any()  # really mixed
    again = mix_batch(
        images,
        labels,
        num_classes=3,
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(mixed, again[0]) and torch.equal(targets, again[1])


def test_mix_batch_off_gives_one_hot_targets() -> None:
    images = torch.rand(4, 3, 8, 8)
    mixed, targets = mix_batch(images, torch.tensor([0, 1, 1, 0]), num_classes=2)
    assert mixed is images
    assert targets.tolist() == [[1, 0], [0, 1], [0, 1], [1, 0]]


# --- preview ---------------------------------------------------------------------------------


def test_preview_png_size_follows_rows_and_cols(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    preview = write_preview(shapes, out, cfg=preset("standard"), name="standard", prep=PREP, rows=2, cols=3)
    with Image.open(out) as png:
        assert png.size == preview.size == preview_size(2, 3)
    assert [label for label, _ in preview.rows] == ["blue_triangle", "green_square"]
    assert preview_size(3, 3)[1] - preview_size(2, 3)[1] == preview_size(2, 3)[1] - preview_size(1, 3)[1]
    assert preview_size(2, 4)[0] - preview_size(2, 3)[0] == preview_size(2, 3)[0] - preview_size(2, 2)[0]


def test_preview_skips_unreadable_files_and_shows_given_images(shapes: Path, tmp_path: Path) -> None:
    add_broken_files(shapes, "green_square")  # empty.jpg sorts before green_square_000.jpg
    preview = write_preview(shapes, tmp_path / "a.png", cfg=preset("light"), prep=PREP, rows=2, cols=2)
    assert preview.rows[1][0] == "green_square" and preview.rows[1][1].name == "green_square_000.jpg"
    assert {bad.path.name for bad in preview.skipped} == {"empty.jpg"}
    given = [shapes / "red_circle" / "red_circle_003.jpg", shapes / "green_square" / "notes.jpg"]
    preview = write_preview(shapes, tmp_path / "b.png", cfg=preset("light"), prep=PREP, images=given, cols=2)
    assert preview.rows == (("red_circle", given[0]),)
    assert [bad.path.name for bad in preview.skipped] == ["notes.jpg"]


def test_cli_augment_writes_the_png(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "preview.png"
    res = run_cli(
        "augment", shapes, "--out", out, "--rows", "2", "--cols", "3", "--input-size", "64",
        "--rotation", "30", "--fill", "edge", "--no-hflip", "--seed", "1",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "rotate ±30°" in res.out and "fill edge" in res.out and "hflip" not in res.out
    assert "Wrote 2 images x 2 views" in res.out and "preview.png" in res.out
    with Image.open(out) as png:
        assert png.size == preview_size(2, 3)


def test_cli_augment_errors_are_one_line(run_cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("augment", shapes, "--preset", "strongg", "--out", tmp_path / "p.png")
    assert res.code == 1
    assert "Error: Unknown augmentation preset 'strongg'. Choose one of: none, light, standard, strong." in res.err
    res = run_cli("augment", shapes, "--rotation", "200", "--hue", "0.9", "--out", tmp_path / "p.png")
    assert res.code == 1
    assert "--rotation must be between 0 and 180. Got 200.0." in res.err and "--hue" in res.err
    assert "Traceback" not in res.err and not (tmp_path / "p.png").exists()
