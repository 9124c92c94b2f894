"""The from-scratch baseline's network: the small CNN of the classic small-data exercise, registered with timm.

Four conv blocks (32, 64, 128, 128 filters, 3x3, ReLU, max-pool) and global pooling; the head of
`--method scratch` adds dropout 0.5, a dense layer of 512 and the output layer. Registered as a timm
model so that it is built, saved and reloaded exactly like a pretrained backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

SCRATCH_ARCH = "tlearn_small_cnn"
SCRATCH_INPUT = 150
SCRATCH_HIDDEN = 512
SCRATCH_DROPOUT = 0.5


class SmallCNN(nn.Module):
    """(N, 3, H, W) -> (N, 128) pooled features."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 128), num_classes: int = 0, **_: Any) -> None:
        super().__init__()
        blocks = []
        cin = 3
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = {
            "architecture": SCRATCH_ARCH,
            "input_size": (3, SCRATCH_INPUT, SCRATCH_INPUT),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "num_classes": num_classes,
        }
        self.feature_info: list[dict[str, Any]] = [
            {"module": f"blocks.{i}", "num_chs": w, "reduction": 2 ** (i + 1)} for i, w in enumerate(widths)
        ]

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"blocks": r"^blocks\.(\d+)"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.blocks(x)).flatten(1))


@register_model
def tlearn_small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    if pretrained:
        raise ValueError("tlearn_small_cnn has no pretrained weights: it is the from-scratch baseline.")
    return SmallCNN(**kwargs)
