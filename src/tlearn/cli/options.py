"""Command-line options shared by commands: the augmentation flags of `tlearn augment` and `tlearn train`.

Each flag is a Typer option alias, so a command declares it in one line (`rotation: Rotation = None`)
and its help reads the same everywhere. Every augmentation flag defaults to None, meaning "as the
preset says"; `augment_config` turns the preset name and the flags given into one AugmentConfig.
Nothing heavy is imported at module level, so `tlearn --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tlearn.core.errors import ConfigError

if TYPE_CHECKING:
    from tlearn.data.augment import AugmentConfig

PANEL = "Augmentation (each flag changes the preset)"
PRESET_NAMES = ("none", "light", "standard", "strong")  # tlearn.data.augment.PRESETS, checked by a test


def _option(*names: str, help: str, metavar: str | None = None) -> Any:
    return typer.Option(*names, help=help, metavar=metavar, rich_help_panel=PANEL, show_default=False)


Preset = Annotated[
    str,
    typer.Option(
        "--preset",
        help=f"Augmentation preset: {', '.join(PRESET_NAMES)}.",
        rich_help_panel=PANEL,
    ),
]
HFlip = Annotated[bool | None, _option("--hflip/--no-hflip", help="Random horizontal flips (half the images).")]
VFlip = Annotated[
    bool | None, _option("--vflip/--no-vflip", help="Random vertical flips (for images with no up, e.g. cells).")
]
Rotation = Annotated[float | None, _option("--rotation", help="Rotate by up to ±DEG degrees.", metavar="DEG")]
Zoom = Annotated[
    tuple[float, float] | None,
    _option("--zoom", help="Fraction of the side kept in view: 0.8 1.0 zooms in up to 1.25x.", metavar="MIN MAX"),
]
CropScale = Annotated[
    tuple[float, float] | None,
    _option("--crop-scale", help="Random resized crop keeping MIN to MAX of the area.", metavar="MIN MAX"),
]
CropRatio = Annotated[
    tuple[float, float] | None,
    _option("--crop-ratio", help="Aspect ratio range of the random crop.", metavar="MIN MAX"),
]
NoCrop = Annotated[bool, _option("--no-crop", help="No random resized crop, whatever the preset says.")]
Translate = Annotated[
    float | None, _option("--translate", help="Shift by up to FRAC of the width and height.", metavar="FRAC")
]
Shear = Annotated[float | None, _option("--shear", help="Shear by up to ±DEG degrees.", metavar="DEG")]
Brightness = Annotated[float | None, _option("--brightness", help="Brightness jitter (0 to 1).", metavar="F")]
Contrast = Annotated[float | None, _option("--contrast", help="Contrast jitter (0 to 1).", metavar="F")]
Saturation = Annotated[float | None, _option("--saturation", help="Saturation jitter (0 to 1).", metavar="F")]
Hue = Annotated[float | None, _option("--hue", help="Hue jitter (0 to 0.5).", metavar="F")]
Grayscale = Annotated[float | None, _option("--grayscale", help="Probability of turning grey.", metavar="P")]
Blur = Annotated[float | None, _option("--blur", help="Probability of a Gaussian blur.", metavar="P")]
BlurSigma = Annotated[
    tuple[float, float] | None, _option("--blur-sigma", help="Blur sigma range in pixels.", metavar="MIN MAX")
]
Erasing = Annotated[float | None, _option("--erasing", help="Probability of erasing a random rectangle.", metavar="P")]
Fill = Annotated[
    str | None,
    _option(
        "--fill",
        help="What fills corners that rotating or shifting uncovers: reflect (mirror), edge (alias nearest), "
        "constant (--fill-color).",
        metavar="MODE",
    ),
]
FillColor = Annotated[
    tuple[int, int, int] | None,
    _option("--fill-color", help="RGB colour (0 to 255) for --fill constant.", metavar="R G B"),
]
Mixup = Annotated[float | None, _option("--mixup", help="MixUp alpha for batches (0 = off).", metavar="ALPHA")]
Cutmix = Annotated[float | None, _option("--cutmix", help="CutMix alpha for batches (0 = off).", metavar="ALPHA")]


def augment_config(
    preset_name: str,
    *,
    hflip: bool | None = None,
    vflip: bool | None = None,
    rotation: float | None = None,
    zoom: tuple[float, float] | None = None,
    crop_scale: tuple[float, float] | None = None,
    crop_ratio: tuple[float, float] | None = None,
    no_crop: bool = False,
    translate: float | None = None,
    shear: float | None = None,
    brightness: float | None = None,
    contrast: float | None = None,
    saturation: float | None = None,
    hue: float | None = None,
    grayscale: float | None = None,
    blur: float | None = None,
    blur_sigma: tuple[float, float] | None = None,
    erasing: float | None = None,
    fill: str | None = None,
    fill_color: tuple[int, int, int] | None = None,
    mixup: float | None = None,
    cutmix: float | None = None,
) -> AugmentConfig:
    """The preset with every flag that was given (not None) applied. Raises ConfigError.

    Flip flags switch flips on (probability 0.5) or off; `translate` applies to both axes.
    """
    from tlearn.data.augment import preset

    if no_crop and crop_scale is not None:
        raise ConfigError("--no-crop and --crop-scale contradict each other. Pass one of them.")
    overrides = {
        "rotation": rotation,
        "zoom": zoom,
        "crop_scale": crop_scale,
        "crop_ratio": crop_ratio,
        "translate": None if translate is None else (translate, translate),
        "shear": shear,
        "brightness": brightness,
        "contrast": contrast,
        "saturation": saturation,
        "hue": hue,
        "grayscale": grayscale,
        "blur": blur,
        "blur_sigma": blur_sigma,
        "erasing": erasing,
        "fill": fill,
        "fill_color": fill_color,
        "mixup": mixup,
        "cutmix": cutmix,
        "hflip": None if hflip is None else 0.5 * hflip,
        "vflip": None if vflip is None else 0.5 * vflip,
    }
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if no_crop:
        given["crop_scale"] = None
    return preset(preset_name, **given)
