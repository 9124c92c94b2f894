"""`--method auto`: measure the data, choose between features and fine-tuning, and say why.

The classic advice has four quadrants:
- small and similar to the pretraining data: a linear classifier on the last layer's features;
- large and similar: fine-tune, warm-up first;
- small and different: features from an earlier stage (later stages are too specific);
- large and different: fine-tune more of the network, from the pretrained start.

tlearn measures instead of guessing. Size: training images per class. Similarity: one pass of the
backbone gives pooled features at several depths; a cross-validated linear probe on each says how
much the last layer beats (or loses to) earlier ones, and how separable the classes are. Cost: the
measured speed of the network on this machine gives the expected fine-tuning time, set against the
time budget. `decide` is a pure function of those measurements; `fit_auto` runs what it decides,
keeping the feature method as the fallback: where fine-tuning runs too, the features are kept only
when they are right on more validation images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tlearn.artifacts.details import AutoRecord
from tlearn.artifacts.metrics import compute_metrics
from tlearn.core import distributed
from tlearn.core.progress import Progress, no_progress
from tlearn.data.labelled import LabelledImages
from tlearn.models.backbones import Backbone
from tlearn.models.classifier import Normalize
from tlearn.training import costs
from tlearn.training.config import TrainConfig
from tlearn.training.costs import FINETUNE_EPOCHS
from tlearn.training.feature_method import feature_namespace, fit_feature_method, for_features, plan_views
from tlearn.training.features import FeatureCache, extract_features
from tlearn.training.fitted import Fitted
from tlearn.training.linear import fit_linear

log = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 600.0  # ten minutes: what a laptop user waits for without leaving the room
LARGE_PER_CLASS = 150  # training images per class from which fine-tuning is the main method
# An earlier layer that beats the last by more than this calls the data "different". Measured with
# MobileNetV2 (benchmarks/domains.py): last minus best earlier layer is +1.2 points on flowers17 photos,
# -0.4 on their edge maps, -1.4 on their shuffled tiles.
SIMILAR_MARGIN = 0.0
SATURATED = 0.99  # a last-layer probe this good leaves fine-tuning nothing worth its time
PROBE_LEVELS = 3  # earlier levels probed besides the last layer


@dataclass(frozen=True)
class Probe:
    layer: str  # "last" or a level index
    description: str  # where it is: "blocks.4, 96 channels, stride 16"
    dim: int
    accuracy: float  # cross-validated linear-probe accuracy on the training images


@dataclass(frozen=True)
class Evidence:
    train_images: int
    classes: int
    per_class_median: float
    per_class_min: int
    probes: tuple[Probe, ...]
    forward_ips: float  # images per second through the frozen network (inference)
    finetune_estimates: dict[str, float]  # "unfreeze N" -> estimated seconds of fine-tuning
    budget_s: float

    @property
    def last(self) -> Probe:
        return next(p for p in self.probes if p.layer == "last")

    @property
    def best_earlier(self) -> Probe | None:
        earlier = [p for p in self.probes if p.layer != "last"]
        return max(earlier, key=lambda p: p.accuracy) if earlier else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    size: str  # "small" or "large"
    domain: str  # "similar" or "different"
    method: str  # "features" or "finetune"
    feature_layer: str
    unfreeze: int | Literal["all"]  # 0: no fine-tuning
    epochs: int
    explanation: str

    @property
    def quadrant(self) -> str:
        return f"{self.size} and {self.domain}"


def decide(e: Evidence, *, num_stages: int) -> Decision:
    """The method, layer, stages and epochs for these measurements. Pure: no I/O, no randomness."""
    size = "large" if e.per_class_median >= LARGE_PER_CLASS else "small"
    earlier = e.best_earlier
    domain = "different" if is_different(e.probes) else "similar"
    lines = [
        f"{e.train_images} training images, {e.per_class_median:.0f} per class (median): {size}.",
        f"Linear probe: last layer {e.last.accuracy:.1%}"
        + (f", best earlier layer ({earlier.description}) {earlier.accuracy:.1%}" if earlier else "")
        + (": similar to the pretraining data." if domain == "similar" else ": different from the pretraining data."),
    ]
    fits = {int(k): v for k, v in e.finetune_estimates.items() if k != "all" and v <= e.budget_s}
    saturated = is_saturated(e.probes)
    if saturated:
        unfreeze, layer = 0, "last"
    elif domain == "similar":
        want = 3 if size == "large" else 2
        unfreeze = max((n for n in fits if n <= want), default=0)
        layer = "last"
    elif size == "large":
        all_fits = e.finetune_estimates.get("all", np.inf) <= e.budget_s
        unfreeze = num_stages if all_fits else max(fits, default=0)
        layer = "last"
    else:
        # The last stages are too specific to the pretraining task: the fallback takes features from
        # the earlier layer, and fine-tuning reaches one stage deeper than for similar data.
        unfreeze = max((n for n in fits if n <= 3), default=0)
        layer = earlier.layer if earlier else "last"
    if unfreeze:
        key = "all" if unfreeze == num_stages and "all" in e.finetune_estimates else str(unfreeze)
        est = e.finetune_estimates.get(key, e.finetune_estimates.get(str(unfreeze), 0.0))
        lines.append(
            f"Fine-tuning the last {unfreeze} stages should take about {_minutes(est)} "
            f"(budget {_minutes(e.budget_s)}): features{'' if layer == 'last' else f' of level {layer}'} first as "
            "the fallback, then fine-tuning, kept unless the features do better on validation."
        )
        method = "finetune"
    else:
        if saturated:
            lines.append("The last layer's features already separate the classes: fine-tuning has little to add.")
        elif domain == "similar" and not fits:
            lines.append(f"Fine-tuning would not fit the budget of {_minutes(e.budget_s)}: features only.")
        elif domain == "different":
            lines.append(f"Fine-tuning would not fit the budget of {_minutes(e.budget_s)}: features of level {layer}.")
        else:
            lines.append("Features only.")
        method = "features"
    return Decision(
        size=size,
        domain=domain,
        method=method,
        feature_layer=layer,
        unfreeze=("all" if unfreeze == num_stages else unfreeze),
        epochs=FINETUNE_EPOCHS if unfreeze else 0,
        explanation=" ".join(lines),
    )


def is_different(probes: tuple[Probe, ...]) -> bool:
    """An earlier layer beats the last: the data is far from the pretraining data."""
    last = next(p for p in probes if p.layer == "last")
    earlier = [p.accuracy for p in probes if p.layer != "last"]
    return bool(earlier) and max(earlier) > last.accuracy + SIMILAR_MARGIN


def is_saturated(probes: tuple[Probe, ...]) -> bool:
    """Similar data whose last-layer features already separate the classes: features only, whatever
    fine-tuning would cost (so its cost need not be measured)."""
    last = next(p for p in probes if p.layer == "last")
    return not is_different(probes) and last.accuracy >= SATURATED


# --- measuring -----------------------------------------------------------------------------------


class _ProbeTrunk(nn.Module):
    """One pass -> pooled features of several levels and the network's own pooled output, concatenated."""

    def __init__(self, backbone: nn.Module, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final, maps = self.backbone.forward_intermediates(x, indices=list(self.levels))  # type: ignore[operator]
        last = self.backbone.forward_head(final, pre_logits=True)  # type: ignore[operator]
        pooled = [m.mean(dim=(2, 3)) if m.ndim == 4 else m.mean(dim=1) for m in maps]
        return torch.cat([*pooled, last], dim=1)


def probe_levels(backbone: Backbone) -> tuple[int, ...]:
    """Up to PROBE_LEVELS levels spread over the second half of the network (earlier ones are edges)."""
    n = len(backbone.levels)
    if n <= 1:
        return ()
    candidates = sorted({round(float(f) * (n - 1)) for f in np.linspace(0.5, 1.0, PROBE_LEVELS)})
    return tuple(i for i in candidates if 0 <= i < n)


def measure(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    native: Backbone | None = None,
    progress: Progress = no_progress,
) -> Evidence:
    """Probe every level in one pass (features also cached for the feature method), time the network.

    `backbone` is the network as the feature method runs it; `native` as fine-tuning runs it (it is
    what the time estimates are for).
    """
    levels = probe_levels(backbone)
    prep = backbone.preprocessing
    mirror = cfg.mirror
    plan = plan_views(data, prep, cfg, mirror=mirror, views=0)
    embed = nn.Sequential(Normalize(prep.mean, prep.std), _ProbeTrunk(backbone.model, levels)).eval()
    namespace = {**feature_namespace(backbone, "probe:" + ",".join(map(str, levels))), "precision": "fp32"}
    cache = FeatureCache(namespace)
    data.pixels.load(sorted({plan.image_of(r) for r in cache.missing(plan.keys)}))
    start = time.perf_counter()
    rows = extract_features(
        embed, plan.inputs, keys=plan.keys, cache=cache, batch_size=cfg.batch_size, progress=progress
    )
    elapsed = time.perf_counter() - start
    dims = [backbone.levels[i].channels for i in levels] + [
        rows.shape[1] - sum(backbone.levels[i].channels for i in levels)
    ]
    bounds = np.cumsum([0, *dims])
    slices = {str(i): rows[:, a:b] for i, a, b in zip(levels, bounds[:-1], bounds[1:], strict=False)}
    slices["last"] = rows[:, bounds[-2] : bounds[-1]]
    _share_with_feature_method(backbone, plan.keys, slices)

    train = data.split.train
    probes = []
    for layer, feats in slices.items():
        fit = fit_linear(feats[train], data.labels[train], num_classes=len(data.classes), seed=cfg.seed)
        accuracy = max((s for _, s in fit.cv_scores), default=float("nan"))
        probes.append(Probe(layer, _describe(backbone, layer), feats.shape[1], accuracy))
    counts = np.bincount(data.labels[train], minlength=len(data.classes))
    ips = len(plan.inputs) / elapsed if elapsed > 0.5 else costs.forward_speed(embed, prep.input_size)
    # Timing fine-tuning costs seconds; skipped where the decision cannot depend on it.
    estimates = {} if is_saturated(tuple(probes)) else costs.finetune_estimates(native or backbone, data, cfg)
    return Evidence(
        train_images=len(train),
        classes=len(data.classes),
        per_class_median=float(np.median(counts)),
        per_class_min=int(counts.min()),
        probes=tuple(probes),
        forward_ips=float(ips),
        finetune_estimates=estimates,
        budget_s=cfg.time_budget or DEFAULT_BUDGET_S,
    )


def _share_with_feature_method(backbone: Backbone, keys: list[str], slices: dict[str, np.ndarray]) -> None:
    """Store each level's slice where the feature method looks for it: no second pass."""
    for layer, feats in slices.items():
        FeatureCache({**feature_namespace(backbone, layer), "precision": "fp32"}).add(keys, feats)


def _describe(backbone: Backbone, layer: str) -> str:
    if layer == "last":
        return f"the network's output, {backbone.num_features} features"
    level = backbone.levels[int(layer)]
    return f"level {layer}: {level.module}, {level.channels} channels, stride {level.reduction}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


# --- running -------------------------------------------------------------------------------------


def fit_auto(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    out: Path,
    progress: Progress = no_progress,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> Fitted:
    from tlearn.training.finetune import fit_finetune

    features_backbone = for_features(backbone, cfg)  # the same network, maybe at a larger input
    evidence = measure(features_backbone, data, cfg, native=backbone, progress=progress)
    # Timings differ between processes: under torchrun, rank 0's measurements decide for every rank.
    decision = distributed.from_main(lambda: decide(evidence, num_stages=len(backbone.stages)))
    log.debug("%s", decision.explanation)  # the CLI prints it, the bundle and the result keep it
    record = AutoRecord(evidence=evidence.to_dict(), decision=asdict(decision), explanation=decision.explanation)
    features = fit_feature_method(
        features_backbone, data, replace(cfg, feature_layer=decision.feature_layer), progress=progress
    )
    if decision.method == "features":
        return replace(features, details=replace(features.details, auto=record))
    ft_cfg = replace(
        cfg,
        finetune=replace(
            cfg.finetune,
            unfreeze=decision.unfreeze,
            epochs=decision.epochs if cfg.finetune.epochs is None else cfg.finetune.epochs,
        ),
    )
    tuned = fit_finetune(backbone, data, ft_cfg, out=out, progress=progress, on_epoch_end=on_epoch_end)
    choice, scores = _better_on_validation(features, tuned, data)
    winner = tuned if choice == "finetune" else features
    said = f" On validation: features {scores['features']:.1%}, fine-tuned {scores['finetune']:.1%}: {choice} kept."
    record = replace(record, validation=scores, chosen=choice, explanation=record.explanation + said)
    return replace(winner, details=replace(winner.details, auto=record), history=tuned.history)


def _better_on_validation(features: Fitted, tuned: Fitted, data: LabelledImages) -> tuple[str, dict[str, float]]:
    """The fine-tuned model unless the features are right on more validation images.

    Fine-tuning ran because the measurements called for it; the fallback is there for when it makes
    things worse. Log loss would be no fair tie-break: label smoothing keeps the fine-tuned model's
    probabilities below 1 by design (on flowers17 it handed a 97.1% tie to the features, whose test
    accuracy was 2.7 points lower).
    """
    val = data.split.val
    if not len(val) or "val" not in features.proba or "val" not in tuned.proba:
        return "finetune", {"features": float("nan"), "finetune": float("nan")}
    a = compute_metrics(data.labels[val], features.proba["val"], data.classes)
    b = compute_metrics(data.labels[val], tuned.proba["val"], data.classes)
    choice = "finetune" if b.accuracy >= a.accuracy else "features"
    return choice, {"features": a.accuracy, "finetune": b.accuracy}
