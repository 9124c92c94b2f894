"""The one inference network every method ends in: normalise -> backbone trunk -> pooled features -> head.

A logistic regression fitted on cached features, a fine-tuned network and the from-scratch baseline
are all a `Classifier`, so evaluation, prediction, export and serving have one thing to run. Its
input is float RGB in [0, 1], NCHW, at the backbone's input size; normalisation by the weights' own
mean and std happens inside, so it travels with the model (into ONNX too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from tlearn.core.errors import ConfigError
from tlearn.models.tta import mirror_logits
from tlearn.models.unknown import UnknownScorer

LAST = "last"


@dataclass(frozen=True)
class HeadSpec:
    """What sits on the pooled features: [dropout, linear, relu] if hidden, then dropout, linear."""

    num_classes: int
    in_features: int
    hidden: int = 0
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_head(spec: HeadSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = spec.in_features
    if spec.hidden:
        layers += [nn.Dropout(spec.dropout), nn.Linear(width, spec.hidden), nn.ReLU(inplace=True)]
        width = spec.hidden
    layers += [nn.Dropout(spec.dropout), nn.Linear(width, spec.num_classes)]
    return nn.Sequential(*layers)


class FeatureTrunk(nn.Module):
    """Backbone -> pooled feature vector (N, D).

    `levels` empty: the backbone's own pooled output (what it was trained to produce). Otherwise the
    global average of the feature maps at those `feature_info` levels, concatenated: earlier levels
    are less specific to the pretraining task, the better choice for data far from ImageNet.
    """

    def __init__(self, backbone: nn.Module, levels: Sequence[int] = ()) -> None:
        super().__init__()
        self.levels = tuple(int(i) for i in levels)
        if self.levels:
            # Drop the layers after the last level used: less to compute, a smaller bundle.
            backbone.prune_intermediate_layers(list(self.levels), prune_head=True)  # type: ignore[operator]
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.levels:
            return self.backbone(x)
        maps = self.backbone.forward_intermediates(  # type: ignore[operator]
            x, indices=list(self.levels), intermediates_only=True, output_fmt="NCHW", stop_early=True
        )
        return torch.cat([m.mean(dim=(2, 3)) if m.ndim == 4 else m.mean(dim=1) for m in maps], dim=1)


class Normalize(nn.Module):
    """(x - mean) / std per channel, for float RGB in [0, 1], NCHW."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.get_buffer("mean")) / self.get_buffer("std")


class Classifier(nn.Module):
    """Float RGB in [0, 1], NCHW -> class logits (N, K).

    With `flip_tta` the logits are the mean of the image's and its mirror image's: a cheap, reliable
    gain wherever a mirrored photo shows the same class (twice the compute at inference). The logits are
    divided by `temperature` (fitted on validation after training, see `training/calibrate.py`), which
    calibrates the probabilities without changing any prediction.

    `unknown` (an `UnknownScorer`, or None for bundles without one) scores how far an input is from
    the training images; `answer(x)` gives the logits and that score from one pass.
    """

    def __init__(
        self,
        trunk: FeatureTrunk,
        head: nn.Sequential,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        flip_tta: bool = False,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.flip_tta = flip_tta
        self.temperature = float(temperature)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        self.unknown: UnknownScorer | None
        self.register_module("unknown", None)

    @property
    def num_classes(self) -> int:
        return next(int(m.out_features) for m in reversed(self.head) if isinstance(m, nn.Linear))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return self.trunk((x - mean) / std)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) calibrated logits and the (N, D) pooled features they came from (with the mirror
        rule: the mean of the image's and its mirror image's features)."""
        return self.outputs_of_features(self.features(x), self.features(x.flip(-1)) if self.flip_tta else None)

    def outputs_of_features(
        self, f: torch.Tensor, f_mirror: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`logits_and_features` from the pooled features of the images and (with `flip_tta`) of their
        mirror images, computed beforehand: the head, the mirror rule and the temperature."""
        logits = self.head(f)
        if self.flip_tta:
            if f_mirror is None:
                raise ValueError("This classifier averages each image with its mirror image: pass f_mirror.")
            logits, f = mirror_logits(logits, self.head(f_mirror)), (f + f_mirror) / 2
        return (logits / self.temperature if self.temperature != 1.0 else logits), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]

    def answer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, K) logits and the (N,) unknown score (None without a scorer), from one pass of the network."""
        logits, f = self.logits_and_features(x)
        return logits, None if self.unknown is None else self.unknown(f, logits)


def parse_levels(spec: str | Sequence[int] | None, num_levels: int) -> tuple[int, ...]:
    """`--feature-layer`: "last" (the pooled output) or level indices "2", "-2", "2,3" (negative from the end)."""
    if spec is None or spec == LAST or spec == ():
        return ()
    items: list[int] = []
    raw = spec.split(",") if isinstance(spec, str) else list(spec)
    for item in raw:
        try:
            i = int(item)
        except (TypeError, ValueError):
            raise ConfigError(
                f"--feature-layer must be 'last' or level numbers like 3, -2 or 2,3. Got {spec!r}."
            ) from None
        if not -num_levels <= i < num_levels:
            raise ConfigError(
                f"--feature-layer {i} is out of range: this backbone has levels 0 to {num_levels - 1} "
                f"(or -1 to -{num_levels})."
            )
        items.append(i % num_levels)
    return tuple(sorted(set(items)))
