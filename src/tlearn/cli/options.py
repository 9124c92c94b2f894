"""Command-line options shared by commands, and the groups of flags that travel together.

Each flag is a Typer option alias, so a command declares it in one line (`seed: opt.Seed = 0`) and its
help reads the same everywhere. Flags that always go together (the augmentation flags; the fine-tuning
flags) form a frozen dataclass whose fields are such aliases. A command takes the group as one
parameter (`augment: opt.AugmentFlags`) and is decorated with `@option_groups`, which shows Typer the
group's fields as parameters of their own, so `--help` lists every flag and each flag works as before;
the command then receives one AugmentFlags value and calls `.config()` on it.

Augmentation flags default to None, meaning "as the preset says". Nothing heavy is imported at module
level, so `tlearn --help` stays fast: the library's config classes are imported inside the builders.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import typer

from tlearn.core.errors import ConfigError

if TYPE_CHECKING:
    from tlearn.data.augment import AugmentConfig
    from tlearn.training.config import FinetuneConfig

PANEL = "Augmentation (each flag changes the preset)"
FINETUNE_PANEL = "Fine-tuning (--method finetune, scratch, auto)"  # tlearn train
TRAINING_PANEL = "Training length and rates (all methods that train in epochs)"  # tlearn compare
PRESET_NAMES = ("none", "light", "standard", "strong")  # tlearn.data.augment.PRESETS, checked by a test


def _option(*names: str, help: str, metavar: str | None = None) -> Any:
    return typer.Option(*names, help=help, metavar=metavar, rich_help_panel=PANEL, show_default=False)


def finetune_option(*names: str, help: str) -> Any:
    """An option in `tlearn train`'s fine-tuning panel."""
    return typer.Option(*names, help=help, rich_help_panel=FINETUNE_PANEL)


def _training_option(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=TRAINING_PANEL)


# --- options of train and compare (and of augment and check: Data) ---------------------------------

Data = Annotated[Path, typer.Argument(help="A folder with one subfolder per class, split folders, or a CSV.")]
Backbone = Annotated[str | None, typer.Option(help="A timm model name (tlearn backbones lists them).")]
Weights = Annotated[
    str | None, typer.Option(help="Local weights file (.safetensors, .pth), or 'none' for random init.")
]
InputSize = Annotated[int | None, typer.Option(help="Model input side in pixels (default: the weights').")]
FeatureLayer = Annotated[str, typer.Option("--feature-layer", help="last, or level numbers like 3 or 2,3.")]
Seed = Annotated[int, typer.Option(help="Random seed (split, augmentation, training).")]
ValFrac = Annotated[float, typer.Option(help="Fraction of images for validation.")]
TestFrac = Annotated[float, typer.Option(help="Fraction of images for the test.")]
SplitFile = Annotated[Path | None, typer.Option(help="Reuse the split.json of an earlier run.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the bundle already in --out.")]
ClassWeight = Annotated[str, typer.Option(help="none, or balanced for imbalanced classes.")]
Tta = Annotated[bool, typer.Option(help="Average predictions with the mirror image (when --hflip).")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
UnknownRecall = Annotated[
    float,
    typer.Option(help="Share of known validation images the 'unknown' threshold keeps (the rest: not one of mine)."),
]
Views = Annotated[
    int | None,
    typer.Option(help="Augmented views per training image, computed once (default: 0 features, 6 finetune)."),
]

# --- the augmentation flags of augment, train and compare ------------------------------------------

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


@dataclass(frozen=True)
class AugmentFlags:
    """The augmentation flags as given; None is "as the preset says"."""

    preset: Preset = "standard"
    hflip: HFlip = None
    vflip: VFlip = None
    rotation: Rotation = None
    zoom: Zoom = None
    crop_scale: CropScale = None
    crop_ratio: CropRatio = None
    no_crop: NoCrop = False
    translate: Translate = None
    shear: Shear = None
    brightness: Brightness = None
    contrast: Contrast = None
    saturation: Saturation = None
    hue: Hue = None
    grayscale: Grayscale = None
    blur: Blur = None
    blur_sigma: BlurSigma = None
    erasing: Erasing = None
    fill: Fill = None
    fill_color: FillColor = None
    mixup: Mixup = None
    cutmix: Cutmix = None

    def config(self) -> AugmentConfig:
        """The preset with every flag that was given (not None) applied. Raises ConfigError.

        Flip flags switch flips on (probability 0.5) or off; `translate` applies to both axes.
        """
        from tlearn.data.augment import preset

        if self.no_crop and self.crop_scale is not None:
            raise ConfigError("--no-crop and --crop-scale contradict each other. Pass one of them.")
        given: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("preset", "no_crop") and getattr(self, f.name) is not None
        }
        if self.translate is not None:
            given["translate"] = (self.translate, self.translate)
        for flip in ("hflip", "vflip"):
            if flip in given:
                given[flip] = 0.5 * given[flip]
        if self.no_crop:
            given["crop_scale"] = None
        return preset(self.preset, **given)


def augment_config(preset_name: str, **flags: Any) -> AugmentConfig:
    """`AugmentFlags(preset_name, **flags).config()`: the augmentation flags as keywords, for Python callers."""
    return AugmentFlags(preset_name, **flags).config()


# --- the fine-tuning flags: all of them for train, the training length and rates for compare -------


@dataclass(frozen=True)
class FinetuneFlags:
    """`tlearn train`'s fine-tuning flags; the defaults are FinetuneConfig's (a test checks)."""

    head_epochs: Annotated[int, finetune_option("--head-epochs", help="Phase 1 (frozen base) epochs.")] = 30
    head_lr: Annotated[float, finetune_option("--head-lr", help="Phase 1 learning rate.")] = 1e-3
    epochs: Annotated[int | None, finetune_option("--epochs", help="Phase 2 epochs (default 12; 40 from scratch).")] = (
        None
    )
    lr: Annotated[
        float | None, finetune_option("--lr", help="Phase 2 rate of the last stage (default 3e-4; 1e-3 from scratch).")
    ] = None
    lr_decay: Annotated[float, finetune_option("--lr-decay", help="Each earlier stage's rate times this.")] = 0.7
    unfreeze: Annotated[str, finetune_option("--unfreeze", help="Stages to unfreeze in phase 2: a number or all.")] = (
        "2"
    )
    weight_decay: Annotated[float, finetune_option("--weight-decay", help="AdamW weight decay (L2).")] = 1e-4
    label_smoothing: Annotated[float, finetune_option("--label-smoothing", help="Label smoothing.")] = 0.1
    dropout: Annotated[float, finetune_option("--dropout", help="Dropout before the head.")] = 0.2
    hidden: Annotated[int, finetune_option("--hidden", help="Width of a hidden layer in the head (0 = none).")] = 0
    schedule: Annotated[str, finetune_option("--schedule", help="cosine, onecycle, step, constant or exponential.")] = (
        "cosine"
    )
    warmup_epochs: Annotated[int, finetune_option("--warmup-epochs", help="Linear warm-up epochs (cosine).")] = 1
    patience: Annotated[int, finetune_option("--patience", help="Early stopping patience (epochs).")] = 5

    def config(self) -> FinetuneConfig:
        return finetune_config(self)


@dataclass(frozen=True)
class TrainingLengthFlags:
    """`tlearn compare`'s training length and rates, for every method that trains in epochs."""

    head_epochs: Annotated[int, _training_option("--head-epochs", help="Fine-tuning phase 1 (frozen base) epochs.")] = (
        30
    )
    head_lr: Annotated[float, _training_option("--head-lr", help="Fine-tuning phase 1 learning rate.")] = 1e-3
    epochs: Annotated[
        int | None, _training_option("--epochs", help="Fine-tuning phase 2 and scratch epochs (default 12 and 40).")
    ] = None
    lr: Annotated[
        float | None,
        _training_option("--lr", help="Fine-tuning phase 2 and scratch learning rate (default 3e-4 and 1e-3)."),
    ] = None
    patience: Annotated[int, _training_option("--patience", help="Early stopping patience (epochs).")] = 5

    def config(self) -> FinetuneConfig:
        return finetune_config(self)


def finetune_config(flags: FinetuneFlags | TrainingLengthFlags) -> FinetuneConfig:
    """The FinetuneConfig the flags ask for (--unfreeze parsed); settings without a flag keep their defaults.

    Raises ConfigError naming every bad flag (FinetuneConfig's checks run when TrainConfig is built).
    """
    from tlearn.training.config import FinetuneConfig

    values: dict[str, Any] = {f.name: getattr(flags, f.name) for f in fields(flags)}
    if "unfreeze" in values:
        values["unfreeze"] = parse_unfreeze(values["unfreeze"])
    return FinetuneConfig(**values)


# --- flag values that are text -----------------------------------------------------------------------


def parse_duration(text: str | None) -> float | None:
    """--time-budget: '10m', '90s', '1h', '1h30m', '1.5h' or plain seconds ('600') -> seconds.

    Units are h, m and s in any case, spaces between parts allowed. Raises ConfigError otherwise.
    """
    if text is None:
        return None
    rest = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return float(rest)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", rest)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != rest.replace(" ", ""):
        raise ConfigError(f"--time-budget must look like 10m, 90s or 1h30m. Got {text!r}.")
    return sum(float(amount) * {"h": 3600, "m": 60, "s": 1}[unit] for amount, unit in parts)


def parse_unfreeze(text: str) -> int | Literal["all"]:
    """--unfreeze: 'all' (any case) or a whole number of stages. Raises ConfigError otherwise."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--unfreeze must be a number of stages or 'all'. Got {text!r}.") from None


# --- groups of flags as one parameter ------------------------------------------------------------------


def option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Let a Typer command take a frozen dataclass of options (AugmentFlags, ...) as one parameter.

    Typer reads a command's parameters with `inspect.signature`, which honours `__signature__`: the
    wrapper shows it the dataclass's fields in place of the group parameter, with their Annotated
    options and defaults, so they are parsed and listed in --help like any other; on a call it builds
    the dataclass from them and passes that to the command. Goes under `@app.command(...)`.
    """
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if isinstance(p.annotation, type) and is_dataclass(p.annotation):
            groups[p.name] = p.annotation
            hints = get_type_hints(p.annotation, include_extras=True)
            params += [
                inspect.Parameter(f.name, p.KEYWORD_ONLY, annotation=hints[f.name],
                                  default=p.empty if f.default is MISSING else f.default)
                for f in fields(p.annotation)
            ]  # fmt: skip
        else:
            params.append(p.replace(kind=p.KEYWORD_ONLY))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise TypeError(f"{command.__name__}: option groups repeat the parameters {clash}.")

    @functools.wraps(command)
    def expanded(**values: Any) -> None:
        for name, group in groups.items():
            values[name] = group(**{f.name: values.pop(f.name) for f in fields(group)})
        command(**values)

    expanded.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    expanded.__annotations__ = {p.name: p.annotation for p in params} | {"return": signature.return_annotation}
    return expanded
