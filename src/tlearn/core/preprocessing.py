"""How a backbone wants its pixels: input size, mean/std, interpolation, crop fraction.

It is read once from the weights' data config (timm's `pretrained_cfg`, or a sidecar JSON beside a
local weights file), stored in every bundle, and never guessed downstream: the shared MobileNetV2,
for one, wants mean = std = 0.5, not ImageNet statistics. Normalisation itself happens inside the
model (see `model.py`), so every transform hands the model float RGB in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]  # (height, width) the model sees
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    @classmethod
    def from_timm(cls, cfg: Mapping[str, Any]) -> Preprocessing:
        """From a timm data config (`resolve_model_data_config`) or a `pretrained_cfg` dict."""
        size = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
        interpolation = str(cfg.get("interpolation") or "bilinear")
        if interpolation not in INTERPOLATIONS:
            interpolation = "bilinear"
        return cls(
            input_size=(int(size[0]), int(size[1])),
            mean=_triple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=_triple(cfg.get("std", (0.229, 0.224, 0.225))),
            interpolation=interpolation,
            crop_pct=float(cfg.get("crop_pct") or 0.875),
            crop_mode=str(cfg.get("crop_mode") or "center"),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        return cls(
            input_size=(int(d["input_size"][0]), int(d["input_size"][1])),
            mean=_triple(d["mean"]),
            std=_triple(d["std"]),
            interpolation=str(d.get("interpolation", "bilinear")),
            crop_pct=float(d.get("crop_pct", 0.875)),
            crop_mode=str(d.get("crop_mode", "center")),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @property
    def resize_short_side(self) -> int:
        """Shorter side before the center crop, as timm computes it: floor(input / crop_pct)."""
        return math.floor(max(self.input_size) / self.crop_pct)

    @property
    def working_short_side(self) -> int:
        """Shorter side that images are decoded to once: enough for the eval crop, no more."""
        return self.resize_short_side

    @property
    def resample(self) -> Image.Resampling:
        return INTERPOLATIONS[self.interpolation]


def _triple(values: Any) -> tuple[float, float, float]:
    v = [float(x) for x in values]
    if len(v) == 1:
        v = v * 3
    return (v[0], v[1], v[2])
