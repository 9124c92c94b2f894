"""A network's parts as training sees them: its stages (to unfreeze "the last N"), feature levels, BatchNorm.

Stages come from timm's `group_matcher` (stem, blocks..., the last block with the head's convs), so
"unfreeze two stages" means the same thing on every timm model. The BatchNorm rule keeps running
statistics fixed while the rest of the network trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn


@dataclass(frozen=True)
class Stage:
    """A group of parameters from input to output, as timm's `group_matcher` groups them."""

    index: int
    name: str
    params: tuple[str, ...]


@dataclass(frozen=True)
class FeatureLevel:
    """An intermediate feature map (timm `feature_info`): where it is, its width and stride."""

    index: int
    module: str
    channels: int
    reduction: int


def model_stages(model: nn.Module) -> tuple[Stage, ...]:
    """Parameter groups from input to output (stem, blocks..., last block with the head's convs)."""
    matcher = getattr(model, "group_matcher", None)
    groups: dict[int, list[str]] = {}
    if matcher is not None:
        try:
            groups = dict(group_parameters(model, matcher(coarse=True)))
        except (NotImplementedError, AttributeError, TypeError):
            groups = {}
    if not groups:  # no matcher: top-level children that hold parameters
        for i, (child, module) in enumerate(model.named_children()):
            names = [f"{child}.{n}" for n, _ in module.named_parameters()]
            if names:
                groups[i] = names
    return tuple(
        Stage(index, _stage_name(names), tuple(names)) for index, (_, names) in enumerate(sorted(groups.items()))
    )


def feature_levels(model: nn.Module) -> tuple[FeatureLevel, ...]:
    """The model's intermediate feature maps, input side first (empty when timm lists none)."""
    info = getattr(model, "feature_info", None) or []
    return tuple(
        FeatureLevel(i, str(f.get("module", "")), int(f["num_chs"]), int(f.get("reduction", 0)))
        for i, f in enumerate(info)
    )


def set_train_mode_frozen_bn(model: nn.Module) -> nn.Module:
    """Training mode for everything but BatchNorm, which stays in inference mode.

    In training mode BatchNorm normalises with each batch's statistics and overwrites its running
    statistics: on a small dataset that wrecks the pretrained features (on the shared MobileNetV2,
    whose BatchNorm was folded into the convolutions, it drops accuracy to chance). Frozen, the
    running statistics never change and the network computes what it computed in pretraining.
    """
    model.train()
    for module in batchnorm_layers(model):
        module.eval()
    return model


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _stage_name(params: list[str]) -> str:
    """A short label for a stage from its parameter names: "blocks.3", "conv_stem+bn1", "a .. z"."""
    prefixes: list[str] = []
    for p in params:
        parts = p.split(".")
        prefix = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if prefix not in prefixes:
            prefixes.append(prefix)
    if len(prefixes) > 3:
        return f"{prefixes[0]} .. {prefixes[-1]}"
    return "+".join(prefixes)
