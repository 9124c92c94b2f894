"""Heatmaps that show where a `Classifier` found the evidence for a class: Grad-CAM, with Captum.

The one place heatmaps are computed; the report, `tlearn predict --explain` and `tlearn serve` call it.
Grad-CAM weighs the feature map of the network's last spatial layer by the gradient of the class's
logit, averaged over the map, and keeps the positive part (Selvaraju et al., 2017). Captum's
`LayerGradCam` does that; this module only says which layer, and turns ViT tokens into a map.

Which layer, one rule: the output of the backbone's last `feature_info` level the trunk uses (the last
stage of a CNN: `blocks.6` of MobileNetV2, `layer4` of a ResNet). For a ViT it is the first norm of that
block (`blocks.11.norm1`): its patch tokens, without the class and register tokens, reshaped to the
patch grid. The last block's own output would not do: a ViT pooled on its class token passes no
gradient to the patch tokens there. The map is computed on the network's input as the eval transform
makes it, in inference mode (BatchNorm as trained), for one view (a bundle with the mirror TTA
predicts with both views; the map shows the upright one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlearn.core.errors import ConfigError
from tlearn.models.classifier import Classifier
from tlearn.models.cut import eval_mode, frozen

ALPHA = 0.6  # how much of the colour map covers the image where the map is hottest
COLOURMAP = "jet"  # the Grad-CAM convention: red where the evidence is, blue where there is none


@dataclass(frozen=True)
class Heatmaps:
    """`maps` (N, H, W) float32 in [0, 1] at the model's input size, each scaled to its own maximum (all 0:
    no positive evidence anywhere); `targets` (N,) the class index each map explains."""

    maps: np.ndarray
    targets: np.ndarray


def class_activation_maps(
    classifier: Classifier,
    x: np.ndarray | torch.Tensor,
    *,
    targets: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 8,
) -> Heatmaps:
    """Grad-CAM of float RGB inputs (N, 3, H, W) in [0, 1], for `targets` (default: the predicted classes,
    which costs one more forward pass). `batch_size` images per pass: 8 is this CPU's fastest (the report's
    36 tiles of MobileNetV2 at 288 px in 0.7 to 0.8 s against 1.1 to 1.3 s at 16, loaded 2-core machine)."""
    from captum.attr import LayerAttribution, LayerGradCam

    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x.float()
    n, (h, w) = len(inputs), inputs.shape[-2:]
    if targets is not None and len(targets) != n:
        raise ConfigError(f"targets must give one class per image: got {len(targets)} for {n} images.")
    maps, chosen = [torch.zeros(0, h, w)], [torch.zeros(0, dtype=torch.long)]
    with _inference(classifier), _probe(classifier, (h, w)) as probe:
        cam = LayerGradCam(lambda t: classifier.head(classifier.features(t)), probe)
        for start in range(0, n, batch_size):
            # channels-last pixels: the convolutions take their faster CPU path, the same maps 1.7x sooner
            # (36 tiles of MobileNetV2 at 288 px; maps within 3e-5); the network's weights are left as they are
            batch = inputs[start : start + batch_size].contiguous(memory_format=torch.channels_last)
            if targets is None:
                with torch.no_grad():
                    target = classifier(batch).argmax(dim=1)
            else:
                target = torch.as_tensor(np.asarray(targets[start : start + len(batch)]), dtype=torch.long)
            with torch.enable_grad():
                attr = cam.attribute(batch, target=target, relu_attributions=True)
            up = LayerAttribution.interpolate(attr.detach(), (h, w), interpolate_mode="bilinear")[:, 0]
            maps.append(_scaled(up))
            chosen.append(target.long())
    return Heatmaps(torch.cat(maps).numpy(), torch.cat(chosen).numpy())


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = ALPHA) -> np.ndarray:
    """A heatmap (H, W) in [0, 1] laid over its image: float (3, H, W) in [0, 1] or uint8 (H, W, 3) -> uint8 (H, W, 3).

    The colour covers the image in proportion to the map, so where the map is cold the photo shows as it is.
    """
    from matplotlib import colormaps

    rgb = np.asarray(image)
    if rgb.ndim == 3 and rgb.shape[0] == 3 and rgb.shape[-1] != 3:
        rgb = np.transpose(rgb, (1, 2, 0))
    base = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    if base.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap {heatmap.shape} and image {base.shape[:2]} differ in size")
    m = np.clip(heatmap.astype(np.float32), 0.0, 1.0)
    colour = colormaps[COLOURMAP](m)[..., :3].astype(np.float32)
    weight = alpha * m[..., None]
    out = base * (1.0 - weight) + colour * weight
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def target_layer(classifier: Classifier) -> tuple[nn.Module, int | None]:
    """The module whose output Grad-CAM weighs, and the number of prefix tokens to skip (None: a CNN's map)."""
    backbone = classifier.trunk.backbone
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ConfigError(
            f"Heatmaps need a backbone that lists its feature maps (timm's feature_info); "
            f"{type(backbone).__name__} does not."
        )
    levels = classifier.trunk.levels
    name = info[levels[-1] if levels else -1]["module"]
    module = backbone.get_submodule(name)
    prefix = getattr(backbone, "num_prefix_tokens", None)
    norm = getattr(module, "norm1", None)
    if prefix is not None and isinstance(norm, nn.Module):  # a transformer block: its tokens, before attention
        return norm, int(prefix)
    return module, None


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its own maximum (maps without positive evidence stay 0)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps.clamp_min(0) / peak).float()


@contextmanager
def _inference(classifier: Classifier) -> Iterator[None]:
    """Inference mode for the duration (dropout off, BatchNorm statistics as trained), then as it was.

    No weight asks for gradients either: the only tensor that does is the target layer's output (Captum
    makes it a leaf that requires them), so autograd records the few layers above it, not the network
    below it: the same maps, 1.4 to 1.7x sooner (the report's 8 tiles at 288 px, medians of 5, two loaded sessions).
    """
    with eval_mode(classifier), frozen(classifier):
        yield


@contextmanager
def _probe(classifier: Classifier, size: tuple[int, int]) -> Iterator[nn.Module]:
    """An identity module that sees the target layer's output as a map (N, C, h, w), for Captum to hook.

    A CNN's map passes through as it is. A ViT's tokens (N, T, D) lose their prefix tokens and are
    reshaped to the patch grid; the tokens given back to the network are the same values, so the
    prediction does not change.
    """
    layer, prefix = target_layer(classifier)
    probe = nn.Identity()

    def hook(_: nn.Module, __: object, out: torch.Tensor) -> torch.Tensor:
        if prefix is None or out.ndim != 3:
            return probe(out)
        n, t, d = out.shape
        gh, gw = _grid(classifier, size, t - prefix)
        grid = probe(out[:, prefix:].transpose(1, 2).reshape(n, d, gh, gw))
        return torch.cat([out[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)

    handle = layer.register_forward_hook(hook)
    try:
        yield probe
    finally:
        handle.remove()


def _grid(classifier: Classifier, size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """The patch grid (rows, columns) of `tokens` patch tokens for an input of `size` (H, W)."""
    patch = getattr(getattr(classifier.trunk.backbone, "patch_embed", None), "patch_size", None)
    if patch is not None:
        gh, gw = size[0] // int(patch[0]), size[1] // int(patch[1])
        if gh * gw == tokens:
            return gh, gw
    side = round(tokens**0.5)
    if side * side != tokens:
        raise ConfigError(f"Cannot lay {tokens} patch tokens out as a grid for a heatmap.")
    return side, side
