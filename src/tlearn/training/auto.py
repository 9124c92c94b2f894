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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tlearn.artifacts.details import AutoRecord
from tlearn.artifacts.history import HISTORY_FILE, HistoryRow, not_kept, write_history
from tlearn.artifacts.metrics import compute_metrics
from tlearn.core import distributed
from tlearn.core.progress import Progress, no_progress
from tlearn.core.timing import NO_DEADLINE, Deadline
from tlearn.data.labelled import LabelledImages
from tlearn.data.unlabelled import UnlabelledImages
from tlearn.models.backbones import Backbone
from tlearn.models.classifier import Normalize
from tlearn.training import costs
from tlearn.training.auto_validation import (
    MIN_VAL_ERRORS,
    _better_on_validation,
    _layer_on_validation,
    behind_features,
    expected_val_errors,
)
from tlearn.training.config import TrainConfig
from tlearn.training.costs import FINETUNE_EPOCHS
from tlearn.training.feature_method import (
    feature_namespace,
    fit_feature_method,
    for_features,
    plan_views,
)
from tlearn.training.features import FeatureCache, extract_features
from tlearn.training.fitted import Fitted
from tlearn.training.linear import fit_linear

log = logging.getLogger(__name__)

LARGE_PER_CLASS = 150  # training images per class from which fine-tuning is the main method
PROBE_LEVELS = 3  # earlier levels probed besides the last layer
MIN_EPOCHS = 4  # fewer fine-tuning epochs than this and the budget takes fewer stages instead
MIN_VIEWS = 2  # cached augmented views per training image: fewer are tried before fewer epochs


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
    finetune_estimates: dict[str, float]  # "unfreeze N" -> estimated seconds of fine-tuning (FINETUNE_EPOCHS)
    budget_s: float  # seconds the run's time budget leaves for fine-tuning when auto decides
    val_images: int = 0
    epoch_seconds: dict[str, float] = field(default_factory=dict)  # "unfreeze N" -> seconds per epoch
    view_seconds: dict[str, float] = field(default_factory=dict)  # "unfreeze N" -> seconds per cached view
    views: int = 0  # augmented views per training image the estimates count (fewer may be chosen)

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
    views: int = 0  # augmented views per training image for fine-tuning (0: not fine-tuning)

    @property
    def quadrant(self) -> str:
        return f"{self.size} and {self.domain}"


def _how_many(errors: float) -> str:
    """'none' or 'about 2.3': expected errors as the explanation says them."""
    return "none" if round(errors, 1) == 0 else f"about {errors:.1f}"


def decide(e: Evidence, *, num_stages: int) -> Decision:
    """The method, layer, stages and epochs for these measurements. Pure: no I/O, no randomness."""
    size = "large" if e.per_class_median >= LARGE_PER_CLASS else "small"
    earlier = e.best_earlier
    domain = "different" if is_different(e.probes, e.train_images) else "similar"
    fallback = fallback_probe(e.probes, e.train_images, size)
    layer = fallback.layer
    measured = bool(np.isfinite(fallback.accuracy))  # not when no class has two training images to hold one out
    lines = [
        f"{e.train_images} training images, {e.per_class_median:.0f} per class (median): {size}.",
        f"Linear probe: last layer {e.last.accuracy:.1%}"
        + (f", best earlier layer ({earlier.description}) {earlier.accuracy:.1%}" if earlier else "")
        + (": similar to the pretraining data." if domain == "similar" else ": different from the pretraining data.")
        if measured
        else "Linear probe: not measured, since no class has two training images to hold one out.",
    ]
    want = {("similar", "small"): 2, ("similar", "large"): 3, ("different", "small"): 3}.get((domain, size), num_stages)
    errors = expected_val_errors(fallback.accuracy, e.val_images)
    unfreeze, epochs, views = 0, 0, 0
    if not e.val_images:
        lines.append("No validation images to show that fine-tuning does better: features only.")
    elif not measured:
        lines.append("Nothing measured says fine-tuning would do better: features only.")
    elif errors < MIN_VAL_ERRORS:
        lines.append(
            f"The features should get {_how_many(errors)} of the {e.val_images} validation images wrong: too few "
            "for fine-tuning to show a gain beyond the noise of the validation split. Features only."
        )
    else:
        unfreeze, epochs, views = _fitting(e, want, num_stages)
        if not unfreeze:
            lines.append(
                f"Fine-tuning would not fit the time left ({_minutes(e.budget_s)}): "
                + ("features." if layer == "last" else f"features of level {layer}.")
            )
    if unfreeze:
        est = _estimate(e, unfreeze, num_stages, epochs, views)
        fewer = f" ({views} augmented views per image, not {e.views}, to fit)" if views < e.views else ""
        lines.append(
            f"Fine-tuning the last {unfreeze} stages for {epochs} epochs{fewer} should take about {_minutes(est)} "
            f"(time left {_minutes(e.budget_s)}): features{'' if layer == 'last' else f' of level {layer}'} first as "
            "the fallback, then fine-tuning, kept unless the features do better on validation."
        )
    return Decision(
        size=size,
        domain=domain,
        method="finetune" if unfreeze else "features",
        feature_layer=layer,
        unfreeze=("all" if unfreeze == num_stages else unfreeze),
        epochs=epochs,
        explanation=" ".join(lines),
        views=views,
    )


def _key(unfreeze: int, num_stages: int) -> str:
    return "all" if unfreeze >= num_stages else str(unfreeze)


def _estimate(e: Evidence, unfreeze: int, num_stages: int, epochs: int, views: int) -> float:
    """Seconds for `epochs` epochs on `views` cached views: the estimate at FINETUNE_EPOCHS and the
    measured views, moved by the seconds per epoch and per view."""
    key = _key(unfreeze, num_stages)
    full = e.finetune_estimates.get(key, np.inf)
    fewer_epochs = (FINETUNE_EPOCHS - epochs) * e.epoch_seconds.get(key, 0.0)
    return full - fewer_epochs - (e.views - views) * e.view_seconds.get(key, 0.0)


def _view_choices(views: int) -> list[int]:
    """The cached views tried, most first: the configured number, then halving it down to MIN_VIEWS."""
    choices = [views]
    while choices[-1] // 2 >= MIN_VIEWS:
        choices.append(choices[-1] // 2)
    return choices


def _fitting(e: Evidence, want: int, num_stages: int) -> tuple[int, int, int]:
    """The most stages up to `want`, the most epochs up to FINETUNE_EPOCHS (at least MIN_EPOCHS), and
    the most cached views (each one costs a pass of the frozen bottom over every training image) whose
    estimate fits the time left; (0, 0, 0) when none does."""
    for n in sorted({min(want, num_stages), *range(min(want, 3), 0, -1)}, reverse=True):
        for epochs in range(FINETUNE_EPOCHS, MIN_EPOCHS - 1, -1):
            for views in _view_choices(e.views):
                if _estimate(e, n, num_stages, epochs, views) <= e.budget_s:
                    return n, epochs, views
    return 0, 0, 0


def is_different(probes: tuple[Probe, ...], train_images: int) -> bool:
    """An earlier layer beats the last by more than the noise of the probes: the data is far from the
    pretraining data. A tie counts as similar (the cheaper path): the earlier layer must show it."""
    last = next(p for p in probes if p.layer == "last")
    earlier = [p.accuracy for p in probes if p.layer != "last"]
    if not earlier:
        return False
    best = max(earlier)
    p = (best + last.accuracy) / 2
    noise = np.sqrt(2 * p * (1 - p) / max(train_images, 1))  # sd of a difference of two accuracies
    return bool(best - last.accuracy > noise)


def fallback_probe(probes: tuple[Probe, ...], train_images: int, size: str) -> Probe:
    """The layer the feature method takes. Small and different data: the best earlier layer (the last
    stages are too specific to the pretraining task; fine-tuning then reaches one stage deeper)."""
    earlier = [p for p in probes if p.layer != "last"]
    if size == "small" and earlier and is_different(probes, train_images):
        return max(earlier, key=lambda p: p.accuracy)
    return next(p for p in probes if p.layer == "last")


def fine_tuning_can_show(probes: tuple[Probe, ...], train_images: int, val_images: int, size: str) -> bool:
    """Whether validation could show fine-tuning beating the features at all (else its cost need not
    be measured): enough validation errors expected of the features auto falls back on."""
    fallback = fallback_probe(probes, train_images, size)
    return val_images > 0 and expected_val_errors(fallback.accuracy, val_images) >= MIN_VAL_ERRORS


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


@dataclass(frozen=True)
class ProbePass:
    """Pooled features at every level auto probes, from one pass of the network over every image and
    its mirror image: the feature method's features too (see `_share_with_feature_method`)."""

    slices: dict[str, np.ndarray]  # "last" or a level index -> (rows, D), rows as `plan_views` lays them out
    inputs: int  # rows in all
    seconds: float  # wall time of the pass (small when the rows were cached)


def _probe_embed(backbone: Backbone) -> nn.Module:
    """Float RGB in [0, 1] -> every probed level's pooled features, side by side."""
    prep = backbone.preprocessing
    return nn.Sequential(Normalize(prep.mean, prep.std), _ProbeTrunk(backbone.model, probe_levels(backbone))).eval()


def probe_pass(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    progress: Progress = no_progress,
) -> ProbePass:
    """One pass over every image (and its mirror image) giving every probed level's features, cached
    where the feature method looks for them: the pass the feature method would make anyway, so it is
    not part of auto's measuring."""
    levels = probe_levels(backbone)
    prep = backbone.preprocessing
    plan = plan_views(data, prep, cfg, mirror=cfg.mirror, views=0)
    embed = _probe_embed(backbone)
    namespace = {**feature_namespace(backbone, "probe:" + ",".join(map(str, levels))), "precision": "fp32"}
    cache = FeatureCache(namespace)
    data.pixels.load(sorted({plan.image_of(r) for r in cache.missing(plan.keys)}))
    start = time.perf_counter()
    # The image and its mirror are crops of the decoded pixels: made here, as the feature method makes
    # them (see compute_features), not handed over from worker processes that take seconds to start.
    rows = extract_features(
        embed, plan.inputs, keys=plan.keys, cache=cache, batch_size=cfg.batch_size, progress=progress, workers=0,
        network=namespace,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    slices = _level_slices(backbone, levels, rows)
    _share_with_feature_method(backbone, plan.keys, slices)
    return ProbePass(slices=slices, inputs=len(plan.inputs), seconds=elapsed)


def _level_slices(backbone: Backbone, levels: tuple[int, ...], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The probe embedding's rows cut into each level's pooled features ("last": the network's output)."""
    dims = [backbone.levels[i].channels for i in levels]
    bounds = np.cumsum([0, *dims, rows.shape[1] - sum(dims)])
    slices = {str(i): rows[:, a:b] for i, a, b in zip(levels, bounds[:-1], bounds[1:], strict=False)}
    slices["last"] = rows[:, bounds[-2] : bounds[-1]]
    return slices


def measure(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    probe: ProbePass,
    *,
    native: Backbone | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> Evidence:
    """A cross-validated linear probe on each level of `probe`'s features, and the network's cost.

    `backbone` is the network as the feature method runs it; `native` as fine-tuning runs it (it is
    what the time estimates are for). The time left for fine-tuning is what the deadline leaves after
    the feature method's fit (timed here on the last layer's probe) and the end of the run.
    """
    prep = backbone.preprocessing
    train, n_val = data.split.train, len(data.split.val)
    probes, fit_seconds = [], 0.0
    for layer, feats in probe.slices.items():
        t0 = time.perf_counter()
        fit = fit_linear(feats[train], data.labels[train], num_classes=len(data.classes), seed=cfg.seed)
        fit_seconds = max(fit_seconds, time.perf_counter() - t0)
        accuracy = max((s for _, s in fit.cv_scores), default=float("nan"))
        probes.append(Probe(layer, _describe(backbone, layer), feats.shape[1], accuracy))
    counts = np.bincount(data.labels[train], minlength=len(data.classes))
    if probe.seconds > 0.5:
        ips = probe.inputs / probe.seconds
    else:  # the features came from the cache: time the network on a batch
        ips = costs.forward_speed(_probe_embed(backbone), prep.input_size)
    # Timing fine-tuning costs seconds; skipped where the decision cannot depend on it.
    size = "large" if float(np.median(counts)) >= LARGE_PER_CLASS else "small"
    timed = fine_tuning_can_show(tuple(probes), len(train), n_val, size)
    estimates = costs.finetune_estimates(native or backbone, data, cfg) if timed else None
    finish = 2 * (n_val + len(data.split.test)) / ips + costs.FINISH_FIXED_S
    return Evidence(
        train_images=len(train),
        classes=len(data.classes),
        per_class_median=float(np.median(counts)),
        per_class_min=int(counts.min()),
        probes=tuple(probes),
        forward_ips=float(ips),
        finetune_estimates=estimates.total if estimates else {},
        budget_s=max(deadline.left() - fit_seconds - finish, 0.0),
        val_images=n_val,
        epoch_seconds=estimates.per_epoch if estimates else {},
        view_seconds=estimates.per_view if estimates else {},
        views=estimates.views if estimates else 0,
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
    deadline: Deadline = NO_DEADLINE,
    unlabelled: UnlabelledImages | None = None,
) -> Fitted:
    """Measure, decide, fit. Photos without labels (`unlabelled`) train the feature method's head only:
    when fine-tuning runs and is kept, they are not in the final model (its details say so)."""
    from tlearn.training.finetune import fit_finetune

    features_backbone = for_features(backbone, cfg)  # the same network, maybe at a larger input
    probe = probe_pass(features_backbone, data, cfg, progress=progress)
    evidence = measure(features_backbone, data, cfg, probe, native=backbone, deadline=deadline)
    # Timings differ between processes: under torchrun, rank 0's measurements decide for every rank.
    decision = distributed.from_main(lambda: decide(evidence, num_stages=len(backbone.stages)))
    log.debug("%s", decision.explanation)  # the CLI prints it, the bundle and the result keep it
    record = AutoRecord(evidence=evidence.to_dict(), decision=asdict(decision), explanation=decision.explanation)

    def fit_layer(layer: str) -> Fitted:
        return fit_feature_method(
            features_backbone, data, replace(cfg, feature_layer=layer), progress=progress, unlabelled=unlabelled
        )

    features = fit_layer(decision.feature_layer)
    if decision.feature_layer != "last":
        features, said = _layer_on_validation(features, fit_layer("last"), decision.feature_layer, data)
        record = replace(record, explanation=record.explanation + said)
    if decision.method == "features":
        return replace(features, details=replace(features.details, auto=record))
    ft_cfg = replace(
        cfg,
        finetune=replace(
            cfg.finetune,
            unfreeze=decision.unfreeze,
            epochs=decision.epochs if cfg.finetune.epochs is None else cfg.finetune.epochs,
        ),
        views=decision.views if cfg.views is None else cfg.views,
    )
    give_up = None
    if "val" in features.proba and len(data.split.val):
        val = data.split.val
        reached = compute_metrics(data.labels[val], features.proba["val"], data.classes).accuracy
        give_up = behind_features(reached, len(val), ft_cfg.finetune.epochs_for("finetune"))
    tuned = fit_finetune(
        backbone, data, ft_cfg, out=out, progress=progress, on_epoch_end=on_epoch_end, deadline=deadline,
        give_up=give_up,
    )  # fmt: skip
    choice, scores = _better_on_validation(features, tuned, data)
    winner = tuned if choice == "finetune" else features
    pseudo = features.details.unlabelled
    if choice == "finetune" and pseudo is not None:
        winner = replace(winner, details=replace(winner.details, unlabelled=replace(pseudo, kept=False)))
    said = ""
    epochs = tuned.details.epochs
    if epochs is not None and epochs.planned_epochs:
        said += f" The time budget left room for {epochs.finetune_epochs_run} of {epochs.planned_epochs} epochs."
    if epochs is not None and epochs.gave_up:
        said += f" Fine-tuning stopped after {epochs.finetune_epochs_run} epochs: {epochs.gave_up}."
    said += f" On validation: features {scores['features']:.1%}, fine-tuned {scores['finetune']:.1%}: {choice} kept."
    record = replace(record, validation=scores, chosen=choice, explanation=record.explanation + said)
    history = tuned.history
    if choice == "features":  # the curves stay, as what was tried; none of their epochs made the bundle
        rows = not_kept(HistoryRow.from_dict(r) for r in tuned.history)
        if distributed.is_main():
            write_history(out / HISTORY_FILE, rows)
        history = [r.to_dict() for r in rows]
    return replace(winner, details=replace(winner.details, auto=record), history=history)
