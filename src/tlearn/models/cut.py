"""Cut a backbone at a stage boundary: a frozen bottom that runs once, a top that trains.

When only the last stages are unfrozen, the part below them computes the same thing for the same
pixels at every epoch. Running it once per image (and augmented view) and training the top on its
cached output is where most of fine-tuning's time goes back: on MobileNetV2 with two stages unfrozen
the top is a fraction of the network.

`cut_trunk` knows the shape of the common timm families (a stem, a list of stages, a tail); for any
other model it returns None and training runs the whole network. Every cut is checked numerically
against the uncut network before it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from tlearn.models.classifier import FeatureTrunk
from tlearn.models.stages import Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Anatomy:
    """forward_features(x) == tail(blocks[-1](...blocks[0](stem(x)))); `prefix` names the blocks."""

    stem: Callable[[torch.Tensor], torch.Tensor]
    blocks: Sequence[nn.Module]
    prefix: Sequence[str]
    tail: Callable[[torch.Tensor], torch.Tensor]


class Bottom(nn.Module):
    """Normalised input -> the activation entering block `index` (frozen, run once)."""

    def __init__(self, anatomy: Anatomy, index: int) -> None:
        super().__init__()
        self.anatomy = anatomy
        self.index = index
        self.blocks = nn.ModuleList(anatomy.blocks[:index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.anatomy.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class Top(nn.Module):
    """The activation entering block `index` -> pooled features (trains in phase 2)."""

    def __init__(self, backbone: nn.Module, anatomy: Anatomy, index: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.anatomy = anatomy
        self.blocks = nn.ModuleList(anatomy.blocks[index:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.backbone.forward_head(self.anatomy.tail(x), pre_logits=True)  # type: ignore[operator]


@dataclass(frozen=True)
class Cut:
    bottom: Bottom
    top: Top
    index: int
    boundary: str  # the first block of the top, e.g. "blocks.5"


def cut_trunk(trunk: FeatureTrunk, trainable: Sequence[Stage], *, input_size: tuple[int, int]) -> Cut | None:
    """A bottom/top split just below the first trainable stage, or None when there is none to make."""
    if trunk.levels or not trainable:
        return None
    model = trunk.backbone
    anatomy = _anatomy(model)
    if anatomy is None:
        return None
    index = _boundary_index(anatomy, trainable[0].params[0])
    if index is None or index == 0:
        return None
    cut = Cut(Bottom(anatomy, index), Top(model, anatomy, index), index, _name(anatomy, index))
    if not _agrees(trunk, cut, input_size):
        log.warning(
            "The split of %s at %s does not reproduce the network: training it whole.",
            type(model).__name__,
            cut.boundary,
        )
        return None
    return cut


def _anatomy(model: nn.Module) -> Anatomy | None:
    """The stem / blocks / tail of the model families whose forward_features is a plain chain."""
    names = {n for n, _ in model.named_children()}
    m: nn.Module = model
    if {"conv_stem", "bn1", "blocks"} <= names:  # EfficientNet, MobileNetV2/V3, MixNet...
        blocks = list(m.blocks)  # type: ignore[arg-type]
        has_head = "conv_head" in names and "bn2" in names and type(m).__name__ == "EfficientNet"
        return Anatomy(
            stem=lambda x: m.bn1(m.conv_stem(x)),  # type: ignore[operator]
            blocks=blocks,
            prefix=[f"blocks.{i}" for i in range(len(blocks))],
            tail=(lambda x: m.bn2(m.conv_head(x))) if has_head else (lambda x: x),  # type: ignore[operator]
        )
    if {"conv1", "bn1", "layer1", "layer4"} <= names:  # ResNet and its variants
        layers = ["layer1", "layer2", "layer3", "layer4"]
        return Anatomy(
            stem=lambda x: m.maxpool(m.act1(m.bn1(m.conv1(x)))),  # type: ignore[operator]
            blocks=[getattr(m, n) for n in layers],
            prefix=layers,
            tail=lambda x: x,
        )
    if {"stem", "stages", "norm_pre"} <= names:  # ConvNeXt
        stages = list(m.stages)  # type: ignore[arg-type]
        return Anatomy(
            stem=m.stem,  # type: ignore[arg-type]
            blocks=stages,
            prefix=[f"stages.{i}" for i in range(len(stages))],
            tail=m.norm_pre,  # type: ignore[arg-type]
        )
    if {"patch_embed", "blocks", "norm"} <= names and hasattr(m, "_pos_embed"):  # ViT
        blocks = list(m.blocks)  # type: ignore[arg-type]
        return Anatomy(
            stem=lambda x: m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x)))),  # type: ignore[operator]
            blocks=blocks,
            prefix=[f"blocks.{i}" for i in range(len(blocks))],
            tail=m.norm,  # type: ignore[arg-type]
        )
    return None


def _boundary_index(anatomy: Anatomy, first_param: str) -> int | None:
    for i, prefix in enumerate(anatomy.prefix):
        if first_param.startswith(prefix + "."):
            return i
    stem_like = ("conv_stem", "bn1", "conv1", "stem", "patch_embed", "cls_token", "pos_embed", "reg_token")
    if first_param.startswith(stem_like):
        return None  # everything trains: nothing to cut off
    return len(anatomy.blocks)  # only the tail (e.g. conv_head) trains


def _name(anatomy: Anatomy, index: int) -> str:
    return anatomy.prefix[index] if index < len(anatomy.prefix) else "the last layers"


def _agrees(trunk: FeatureTrunk, cut: Cut, input_size: tuple[int, int]) -> bool:
    x = torch.rand(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    with eval_mode(trunk), torch.inference_mode():
        whole = trunk(x)
        split = cut.top(cut.bottom(x))
    return whole.shape == split.shape and torch.allclose(whole, split, rtol=1e-4, atol=1e-4)


def top_input(a: torch.Tensor) -> torch.Tensor:
    """Activations at a cut in the layout the top runs fastest on: channels-last for a convolutional
    feature map (N, C, H, W); a transformer's tokens (N, T, D) as they are (there is no channel dim to move)."""
    return a.contiguous(memory_format=torch.channels_last) if a.ndim == 4 else a


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No parameter of `module` asks for gradients (a frozen part exports to ONNX only then), then each
    back as it was."""
    wanted = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in wanted:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, grad in wanted:
            p.requires_grad_(grad)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Inference mode for a block, then every submodule back in the mode it was in (BatchNorm included)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
