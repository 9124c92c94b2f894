"""What augmentation training applies: a frozen config whose checks name the CLI flags, named presets.

`AugmentConfig` is plain data: it is stored in bundles (`to_dict` / `from_dict`) and shown to users
(`describe`). The torchvision pipelines that carry it out are in `tlearn.data.augment`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tlearn.core.errors import ConfigError
from tlearn.core.words import not_one_of

FILL_MODES = ("constant", "edge", "reflect")
FILL_ALIASES = {"nearest": "edge"}  # Keras' name for edge padding


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
        problems.append(not_one_of("--fill", cfg.fill, (*FILL_MODES, *FILL_ALIASES)))
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
