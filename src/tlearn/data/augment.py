"""Data augmentation for training: the torchvision v2 pipelines that carry out an `AugmentConfig`.

The config, its checks and the presets live in `tlearn.data.augment_config`; they are re-exported
here, so `from tlearn.data.augment import AugmentConfig, preset, build_train_transform` keeps working.

The transforms take what decoding gives (uint8 (H, W, 3) RGB pixels with the shorter side near
`Preprocessing.working_short_side`, or a PIL image) and return a float32 (3, H, W) tensor in [0, 1]
of exactly `Preprocessing.input_size`. They never normalise: mean and std live in `Preprocessing`
and the model applies them, so every view a human looks at is a plain picture.

Everything but random erasing runs on uint8 tensors (resizing and cropping are several times faster
than on float): framing (resize and crop), colour, geometry, flips; then the conversion to float.
Rotation, translation, shear and zoom share one `RandomAffine`, so an image is interpolated once.
v2's affine can only fill the corners it uncovers with a constant; for `edge` and `reflect` the
image is first padded (v2.Pad) by a margin computed from the configured ranges, large enough that
the affine never samples outside it, and cropped back afterwards. Randomness comes from torch's
global generator, as v2 wants it; `augmented_view` pins it to a seed per view, so results do not
depend on the order in which views are made.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from tlearn.core.preprocessing import Preprocessing
from tlearn.data.augment_config import FILL_ALIASES, FILL_MODES, PRESETS, AugmentConfig, describe, preset

__all__ = [
    "FILL_ALIASES",
    "FILL_MODES",
    "PRESETS",
    "AugmentConfig",
    "Transform",
    "augmented_view",
    "build_eval_transform",
    "build_train_transform",
    "describe",
    "mix_batch",
    "preset",
    "view_seed",
]

# Tensor resizing knows nearest, bilinear and bicubic; Pillow-only filters map to their closest.
_INTERPOLATION = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "lanczos": v2.InterpolationMode.BICUBIC,
    "hamming": v2.InterpolationMode.BILINEAR,
    "box": v2.InterpolationMode.BILINEAR,
}
# Pixels of safety around the computed padding: translations are rounded to whole pixels and
# bilinear sampling reads one neighbour beyond the point it lands on.
_PAD_SLACK = 3

Transform = Callable[[Any], torch.Tensor]


def build_eval_transform(prep: Preprocessing) -> Transform:
    """Deterministic: resize the shorter side to `prep.resize_short_side` (antialiased), center crop.

    Input: uint8 (H, W, 3) RGB array or PIL image. Output: float32 (3, *prep.input_size) in [0, 1].
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(prep.resize_short_side, interpolation=_interpolation(prep), antialias=True),
            v2.CenterCrop(list(prep.input_size)),
            v2.ToDtype(torch.float32, scale=True),
            v2.ToPureTensor(),
        ]
    )


def build_train_transform(cfg: AugmentConfig, prep: Preprocessing) -> Transform:
    """Random views for training: the configured ops at the backbone's input size and interpolation.

    Same input and output as `build_eval_transform`. With nothing configured it equals the eval
    transform. Without a random crop, the image is framed as for evaluation but on a square of the
    resize size, so that rotating or shifting brings real pixels into view before padded ones.
    Mixup and CutMix act on batches: see `mix_batch`.
    """
    h, w = prep.input_size
    ops: list[Any] = [v2.ToImage()]
    if cfg.crop_scale is not None:
        ops.append(
            v2.RandomResizedCrop(
                [h, w],
                scale=cfg.crop_scale,
                ratio=cfg.crop_ratio,
                interpolation=_interpolation(prep),
                antialias=True,
            )
        )
        context = (h, w)
    else:
        side = prep.resize_short_side
        ops.append(v2.Resize(side, interpolation=_interpolation(prep), antialias=True))
        context = (side, side) if cfg.has_affine else (h, w)
        ops.append(v2.CenterCrop(list(context)))
    # Colour before the affine, so that a constant fill keeps exactly the colour asked for.
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        ops.append(
            v2.ColorJitter(
                brightness=cfg.brightness or None,
                contrast=cfg.contrast or None,
                saturation=cfg.saturation or None,
                hue=cfg.hue or None,
            )
        )
    if cfg.grayscale:
        ops.append(v2.RandomGrayscale(cfg.grayscale))
    if cfg.blur:
        kernel = 2 * math.ceil(3 * cfg.blur_sigma[1]) + 1  # +-3 sigma: the whole bell
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=cfg.blur_sigma)], p=cfg.blur))
    if cfg.has_affine:
        ops += _affine_ops(cfg, context=context, out=(h, w))
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip:
        ops.append(v2.RandomVerticalFlip(cfg.vflip))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if cfg.erasing:
        # Erase with the backbone's mean colour, which becomes 0 after the model normalises: the
        # same as erasing with 0 after Normalize in the torchvision references.
        ops.append(v2.RandomErasing(cfg.erasing, value=list(prep.mean)))
    ops.append(v2.ToPureTensor())
    return v2.Compose(ops)


def _affine_ops(cfg: AugmentConfig, *, context: tuple[int, int], out: tuple[int, int]) -> list[Any]:
    """Pad (edge / reflect) -> one RandomAffine -> center crop from `context` (H, W) to `out` (H, W).

    The translate fractions of the config are relative to the output size; RandomAffine takes them
    relative to the (padded) image it sees, so they are rescaled here.
    """
    ops: list[Any] = []
    ch, cw = context
    pad_y, pad_x = _affine_margin(cfg, context=context, out=out) if cfg.fill != "constant" else (0, 0)
    padded_h, padded_w = ch, cw
    while pad_x > 0 or pad_y > 0:
        # Reflection cannot reach further than the image is wide: pad in steps when zooming out far.
        step_x = pad_x if cfg.fill == "edge" else min(pad_x, padded_w - 1)
        step_y = pad_y if cfg.fill == "edge" else min(pad_y, padded_h - 1)
        ops.append(v2.Pad([step_x, step_y, step_x, step_y], padding_mode=cfg.fill))
        padded_h, padded_w = padded_h + 2 * step_y, padded_w + 2 * step_x
        pad_x, pad_y = pad_x - step_x, pad_y - step_y
    tx, ty = cfg.translate
    zoom_in, zoom_out = cfg.zoom
    ops.append(
        v2.RandomAffine(
            degrees=cfg.rotation,
            translate=(tx * out[1] / padded_w, ty * out[0] / padded_h) if tx or ty else None,
            scale=(1 / zoom_out, 1 / zoom_in) if cfg.zoom != (1.0, 1.0) else None,
            shear=cfg.shear or None,
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=list(cfg.fill_color),  # used only by `constant`: the padding covers the others
        )
    )
    ops.append(v2.CenterCrop(list(out)))
    return ops


def _affine_margin(cfg: AugmentConfig, *, context: tuple[int, int], out: tuple[int, int]) -> tuple[int, int]:
    """Padding (y, x) in pixels so that no output pixel of the affine samples outside the padded image.

    Maps the corners of the output crop back through the inverse of every extreme affine the
    config allows (torchvision's matrix: rotation, then horizontal shear, scaled) and measures how
    far beyond the context image they land. Corners, translations and shear are linear, so their
    extremes suffice; angles are sampled finely, and the slack covers the rest.
    """
    h, w = out
    angles = np.radians(np.linspace(-cfg.rotation, cfg.rotation, 181))
    shears = np.radians([-cfg.shear, cfg.shear])
    scale = 1.0 / cfg.zoom[1]  # the smallest scale shows the most of the source
    rot_grid, sh_grid = np.meshgrid(angles, shears, indexing="ij")
    rot, sh = rot_grid.ravel(), sh_grid.ravel()
    # Forward matrix [[a, b], [c, d]] as in torchvision's _get_inverse_affine_matrix with shear_y = 0.
    a, c = np.cos(rot), np.sin(rot)
    b = -np.cos(rot) * np.tan(sh) - np.sin(rot)
    d = -np.sin(rot) * np.tan(sh) + np.cos(rot)
    det = (a * d - b * c) * scale
    corners = np.array([[sx * w / 2, sy * h / 2] for sx in (-1, 1) for sy in (-1, 1)])
    shifts = np.array([[sx * cfg.translate[0] * w, sy * cfg.translate[1] * h] for sx in (-1, 1) for sy in (-1, 1)])
    v = (corners[:, None, :] - shifts[None, :, :]).reshape(-1, 2)  # output point minus translation
    # Inverse of scale * [[a, b], [c, d]] applied to every v, for every matrix.
    src_x = (d[:, None] * v[None, :, 0] - b[:, None] * v[None, :, 1]) / det[:, None]
    src_y = (-c[:, None] * v[None, :, 0] + a[:, None] * v[None, :, 1]) / det[:, None]
    reach_x = float(np.abs(src_x).max()) - context[1] / 2
    reach_y = float(np.abs(src_y).max()) - context[0] / 2
    return max(0, math.ceil(reach_y) + _PAD_SLACK), max(0, math.ceil(reach_x) + _PAD_SLACK)


def _interpolation(prep: Preprocessing) -> v2.InterpolationMode:
    return _INTERPOLATION.get(prep.interpolation, v2.InterpolationMode.BILINEAR)


# torch's global generator is process-wide: seeding it for one view must not interleave with
# another thread doing the same.
_RNG_LOCK = threading.Lock()


def view_seed(seed: int, image: int, view: int) -> int:
    """A seed for view `view` of image `image`, independent of the order views are made in."""
    return int(np.random.SeedSequence([seed, image, view]).generate_state(1, dtype=np.uint64)[0])


def augmented_view(pixels: np.ndarray | Image.Image, transform: Transform, *, seed: int) -> torch.Tensor:
    """`transform(pixels)` with torch's random generator set to `seed`, leaving the global state as it was.

    The same seed always gives the same view. Use `view_seed(seed, i, k)` for view k of image i.
    Views are made one at a time per process (a lock guards the global generator).
    """
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(pixels)


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with MixUp or CutMix (one of the two at random when both are on).

    `images` (N, C, H, W) float, `labels` (N,) class indices. Returns the mixed images and soft
    targets (N, num_classes), each row summing to 1; with both alphas 0, the images unchanged and
    one-hot targets. Each image is mixed with its neighbour in the batch, so shuffle batches.
    `generator` makes the mix reproducible without touching torch's global generator.
    """
    mixes: list[Any] = []
    if mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return images, torch.nn.functional.one_hot(labels.long(), num_classes).to(images.dtype)
    mix = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
    if generator is None:
        mixed, targets = mix(images, labels.long())
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        with _RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mixed, targets = mix(images, labels.long())
    return mixed.as_subclass(torch.Tensor), targets.to(images.dtype)
