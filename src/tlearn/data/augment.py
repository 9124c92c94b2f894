"""Data augmentation for training: a frozen config, named presets, and torchvision v2 pipelines.

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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from tlearn.core.errors import ConfigError
from tlearn.core.preprocessing import Preprocessing

FILL_MODES = ("constant", "edge", "reflect")
FILL_ALIASES = {"nearest": "edge"}  # Keras' name for edge padding

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


@dataclass(frozen=True)
class AugmentConfig:
    """Which random changes training applies to each image, and how strongly. All off by default.

    Probabilities are per image, in [0, 1]. Ranges are (min, max) pairs.
    - `rotation`: degrees, drawn uniformly in [-rotation, +rotation].
    - `zoom`: fraction of the image side kept in view; (0.8, 1.0) zooms in by up to 1 / 0.8 = 1.25x,
      values above 1 zoom out (the uncovered border is filled by `fill`).
    - `crop_scale`, `crop_ratio`: a RandomResizedCrop (area fraction, aspect ratio); None = off.
    - `translate`: largest shift as a fraction of (width, height).
    - `shear`: degrees, horizontal shear drawn in [-shear, +shear].
    - `brightness`, `contrast`, `saturation`, `hue`: ColorJitter strengths (hue at most 0.5).
    - `fill`: what fills corners that rotation, translation, shear or zooming out uncover:
      `constant` (`fill_color`, RGB 0-255), `edge` (repeat the border pixels; alias `nearest`) or
      `reflect` (mirror the image: no visible corners, the usual choice).
    - `mixup`, `cutmix`: Beta(alpha, alpha) strength of the batch-level mixes, 0 = off.
    """

    hflip: float = 0.0
    vflip: float = 0.0
    rotation: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    translate: tuple[float, float] = (0.0, 0.0)
    shear: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    erasing: float = 0.0
    fill: str = "reflect"
    fill_color: tuple[int, int, int] = (0, 0, 0)
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        fill = str(self.fill).strip().lower()
        object.__setattr__(self, "fill", FILL_ALIASES.get(fill, fill))
        for name in ("zoom", "crop_scale", "crop_ratio", "translate", "blur_sigma", "fill_color"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        problems = _check(self)
        if problems:
            raise ConfigError(" ".join(problems))

    @property
    def has_affine(self) -> bool:
        """Whether rotation, translation, shear or zoom is on (one RandomAffine does them all)."""
        return bool(self.rotation or any(self.translate) or self.shear or self.zoom != (1.0, 1.0))

    @property
    def has_batch_mix(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        """Inverse of `to_dict`; missing keys take their defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"Unknown augmentation settings: {', '.join(unknown)}.",
                hint="The bundle may come from a newer tlearn; upgrade tlearn to read it.",
            )
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(cfg: AugmentConfig) -> list[str]:
    """Every problem with `cfg`, each naming its CLI flag, the rule and the value."""
    problems: list[str] = []

    def between(name: str, lo: float, hi: float) -> None:
        value = getattr(cfg, name)
        if not _number(value) or not lo <= value <= hi:
            problems.append(f"{_flag(name)} must be between {lo:g} and {hi:g}. Got {value!r}.")

    def pair(name: str, lo: float, hi: float, *, open_low: bool = False) -> None:
        value = getattr(cfg, name)
        ok = (
            isinstance(value, tuple)
            and len(value) == 2
            and all(_number(v) for v in value)
            and (lo < value[0] if open_low else lo <= value[0])
            and value[0] <= value[1] <= hi
        )
        if not ok:
            low = f"{lo:g} < MIN" if open_low else f"{lo:g} <= MIN"
            problems.append(f"{_flag(name)} must be MIN MAX with {low} <= MAX <= {hi:g}. Got {value!r}.")

    for name in ("hflip", "vflip", "grayscale", "blur", "erasing"):
        between(name, 0, 1)
    between("rotation", 0, 180)
    between("shear", 0, 45)
    for name in ("brightness", "contrast", "saturation"):
        between(name, 0, 1)
    between("hue", 0, 0.5)
    between("mixup", 0, 10)
    between("cutmix", 0, 10)
    pair("zoom", 0.25, 2.0)
    tx_ty = cfg.translate
    if not (isinstance(tx_ty, tuple) and len(tx_ty) == 2 and all(_number(v) and 0 <= v <= 0.5 for v in tx_ty)):
        problems.append(f"--translate must be two fractions X Y between 0 and 0.5. Got {tx_ty!r}.")
    pair("crop_ratio", 0.0, 10.0, open_low=True)
    pair("blur_sigma", 0.0, 10.0, open_low=True)
    if cfg.crop_scale is not None:
        pair("crop_scale", 0.0, 1.0, open_low=True)
    if cfg.fill not in FILL_MODES:
        choices = ", ".join((*FILL_MODES, *FILL_ALIASES))
        problems.append(f"--fill must be one of {choices}. Got {cfg.fill!r}.")
    colour = cfg.fill_color
    if not (
        isinstance(colour, tuple) and len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
    ):
        problems.append(f"--fill-color must be three integers R G B between 0 and 255. Got {colour!r}.")
    return problems


# Presets, mildest first. `standard` is what most small datasets of photos want; `strong` adds what
# helps when there are very few images per class, at the price of slower convergence. Its hue shift
# stays small (±0.02 of the colour circle, about ±7°): at 0.05 yellow flowers already turn orange,
# and colour is often what tells classes apart.
_LIGHT = AugmentConfig(hflip=0.5, crop_scale=(0.7, 1.0))
_STANDARD = AugmentConfig(hflip=0.5, rotation=15, zoom=(0.8, 1.0), translate=(0.1, 0.1), brightness=0.2, contrast=0.2)
_STRONG = replace(_STANDARD, shear=10, saturation=0.2, hue=0.02, erasing=0.25)
PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": _LIGHT,
    "standard": _STANDARD,
    "strong": _STRONG,
}


def preset(name: str, **overrides: Any) -> AugmentConfig:
    """The named preset, with some fields changed: `preset("standard", rotation=30, fill="edge")`."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"Unknown augmentation preset '{name}'. Choose one of: {', '.join(PRESETS)}.")
    unknown = sorted(set(overrides) - {f.name for f in fields(AugmentConfig)})
    if unknown:
        raise ConfigError(f"Unknown augmentation settings: {', '.join(unknown)}.")
    return replace(PRESETS[key], **overrides)


def describe(cfg: AugmentConfig) -> list[str]:
    """Short labels of the active ops, in pipeline order: ["hflip 0.5", "rotate ±15°", ...]."""
    out: list[str] = []
    if cfg.crop_scale is not None:
        out.append(f"crop {_range(*cfg.crop_scale)} of area")
    if cfg.rotation:
        out.append(f"rotate ±{_g(cfg.rotation)}°")
    if cfg.zoom != (1.0, 1.0):
        out.append(f"zoom {_range(*cfg.zoom)}")
    if any(cfg.translate):
        tx, ty = cfg.translate
        out.append(f"translate {_g(tx * 100)}%" if tx == ty else f"translate {_g(tx * 100)}% x {_g(ty * 100)}%")
    if cfg.shear:
        out.append(f"shear ±{_g(cfg.shear)}°")
    if _uncovers_corners(cfg):
        out.append(f"fill {cfg.fill}" + (f" {cfg.fill_color}" if cfg.fill == "constant" else ""))
    for name in ("hflip", "vflip", "brightness", "contrast", "saturation", "hue", "grayscale"):
        if getattr(cfg, name):
            out.append(f"{name} {_g(getattr(cfg, name))}")
    if cfg.blur:
        out.append(f"blur {_g(cfg.blur)} (σ {_range(*cfg.blur_sigma)})")
    if cfg.erasing:
        out.append(f"erase {_g(cfg.erasing)}")
    if cfg.mixup:
        out.append(f"mixup α {_g(cfg.mixup)}")
    if cfg.cutmix:
        out.append(f"cutmix α {_g(cfg.cutmix)}")
    return out


def _g(x: float) -> str:
    return f"{x:.3g}"


def _range(lo: float, hi: float) -> str:
    """ "0.8-1.0", "0.75-1.0": both ends keep at least one decimal, so they read alike."""

    def one(v: float) -> str:
        text = f"{v:.2f}".rstrip("0")
        return text + "0" if text.endswith(".") else text

    return f"{one(lo)}-{one(hi)}"


def _uncovers_corners(cfg: AugmentConfig) -> bool:
    return bool(cfg.rotation or any(cfg.translate) or cfg.shear or cfg.zoom[1] > 1.0)


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
