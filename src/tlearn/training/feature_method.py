"""The feature-extraction method: the frozen network runs once per image, a linear head learns on top.

For small datasets close to ImageNet this is the method to beat, and it is cheap: features are
cached, so a rerun with another head, C or class weighting costs seconds. `views` adds K augmented
views of each training image (extracted once, cached too), the cheap augmentation of this method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeAlias

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from tlearn.artifacts.details import LinearHead, MethodDetails, PseudoLabels
from tlearn.core.progress import Progress, no_progress
from tlearn.data.labelled import LabelledImages
from tlearn.data.sources import display_path
from tlearn.data.split import Split
from tlearn.data.unlabelled import UnlabelledImages
from tlearn.models.backbones import Backbone
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec, parse_levels
from tlearn.models.tta import mirror_logits
from tlearn.training.config import TrainConfig
from tlearn.training.features import FeatureCache, extract_features
from tlearn.training.fitted import Fitted
from tlearn.training.head_phase import class_weights, seeded_head, train_head
from tlearn.training.linear import fit_linear
from tlearn.training.pseudo import Labelled, SelfTrained, Views, self_train
from tlearn.training.views import FeatureSet, plan_views


class _Embed(nn.Module):
    """The feature part of a classifier as a module of its own (what extraction runs)."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


# Frozen convolutional networks give better features a little above the resolution they were trained
# at: random-resized-crop training shows objects larger than a center crop at test time does
# ("FixRes", Touvron et al. 2019). Measured on flowers17, 3 split seeds, MobileNetV2 224 px: linear
# probe 94.4% at 224, 94.8% at 256, 95.5% at 288 (benchmarks/flowers.py). Transformers keep theirs.
FEATURE_RESOLUTION = 1.25


def for_features(backbone: Backbone, cfg: TrainConfig) -> Backbone:
    """The backbone as the feature method runs it: the same network, at 1.25x its input size when it
    is convolutional and the user did not set --input-size."""
    if cfg.input_size is not None or not backbone.any_input_size:
        return backbone
    prep = backbone.preprocessing
    size = tuple(round(s * FEATURE_RESOLUTION / 32) * 32 for s in prep.input_size)
    return replace(backbone, preprocessing=replace(prep, input_size=(size[0], size[1])))


def feature_namespace(backbone: Backbone, layer: str | tuple[int, ...]) -> dict[str, Any]:
    """What identifies a feature: the network, its weights, the layer and the preprocessing."""
    if isinstance(layer, str) and layer.startswith("probe:"):
        levels: Any = layer  # the auto method's multi-level pass
    elif isinstance(layer, tuple):
        levels = list(layer)
    else:
        levels = list(parse_levels(layer, len(backbone.levels)))
    return {
        "architecture": backbone.architecture,
        "create_kwargs": backbone.create_kwargs,
        "weights": backbone.weights_id,
        "levels": levels,
        "preprocessing": backbone.preprocessing.to_dict(),
    }


def feature_trunk(backbone: Backbone, feature_layer: str | None, *, trains: bool = False) -> Classifier:
    """A classifier shell (no head yet) around the backbone's feature trunk.

    An earlier layer prunes the layers after it, so that trunk gets its own copy of the network; so
    does a trunk that `trains` (fine-tuning). The backbone's own network stays the pretrained one:
    the feature cache names its weights, and what runs after fine-tuning computes features with it
    (auto's feature fallback, the label check, the next run reading the cache).
    """
    levels = parse_levels(feature_layer, len(backbone.levels))
    model = copy.deepcopy(backbone.model) if levels or trains else backbone.model
    trunk = FeatureTrunk(model, levels)
    prep = backbone.preprocessing
    return Classifier(trunk, nn.Sequential(nn.Identity()), mean=prep.mean, std=prep.std).eval()


def compute_features(
    shell: Classifier,
    backbone: Backbone,
    data: LabelledImages,
    *,
    views: int,
    mirror: bool,
    cfg: TrainConfig,
    progress: Progress = no_progress,
) -> FeatureSet:
    """Features of all images (and their mirror images) and `views` augmented views per training image."""
    prep = backbone.preprocessing
    embed = _Embed(shell).to(memory_format=torch.channels_last)
    namespace = {**feature_namespace(backbone, shell.trunk.levels), "precision": "fp32"}
    plan = plan_views(data, prep, cfg, mirror=mirror, views=views)
    fixed = plan.fixed
    cache = FeatureCache(namespace)
    view_cache = FeatureCache({**namespace, "augment": cfg.augment.to_dict(), "seed": cfg.seed})
    todo = [plan.image_of(r) for r in cache.missing(plan.keys[:fixed])]
    todo += [plan.image_of(fixed + r) for r in view_cache.missing(plan.keys[fixed:])]
    data.pixels.load(sorted(set(todo)))  # decode what is needed, in parallel, before the workers start
    # The image and its mirror are crops of the decoded pixels (see views._eval_view): made on this
    # process, they cost a few percent of the network's time, less than handing them over from workers.
    clean = extract_features(
        embed, plan.inputs[:fixed], keys=plan.keys[:fixed], cache=cache, batch_size=cfg.batch_size,
        progress=progress, workers=0, network=namespace,
    )  # fmt: skip
    aug = extract_features(
        embed, plan.inputs[fixed:], keys=plan.keys[fixed:], cache=view_cache, batch_size=cfg.batch_size,
        progress=progress, stage="views", network=namespace,
    )  # fmt: skip
    if not len(aug):
        aug = np.zeros((0, clean.shape[1]), np.float32)
    return plan.rows(np.concatenate([clean, aug]))


def fit_feature_method(
    backbone: Backbone,
    data: LabelledImages,
    cfg: TrainConfig,
    *,
    progress: Progress = no_progress,
    unlabelled: UnlabelledImages | None = None,
) -> Fitted:
    """Features -> a linear head on them -> one Classifier (trunk + nn.Linear head).

    `--head logistic` (default) and `svm` fit scikit-learn models with C chosen by cross-validation;
    `softmax` trains a linear softmax layer on the same cached features with AdamW, as fine-tuning's
    phase 1 does (weight decay, label smoothing, early stopping on validation loss). With
    `unlabelled`, the head then learns from its confident guesses on those photos too, as long as
    validation improves (`pseudo.self_train`).
    """
    shell = feature_trunk(backbone, cfg.feature_layer)
    mirror = cfg.mirror
    feats = compute_features(
        shell, backbone, data, views=cfg.views_for("features"), mirror=mirror, cfg=cfg, progress=progress
    )
    x, y, owners = _training_rows(feats, data)
    spec = HeadSpec(num_classes=len(data.classes), in_features=x.shape[1])
    if cfg.head == "softmax":
        head, score, fit_info = _softmax_head(spec, feats, data, cfg)
    else:
        head, score, fit_info = _sklearn_head(x, y, owners, data, cfg)
    pseudo = None
    if unlabelled is not None:
        pool = _pool_features(shell, backbone, unlabelled, data, cfg, progress)
        fixed = replace(cfg, C=fit_info["C"])  # the labelled rows' choice: CV on guesses would grade guesses
        train, val = data.split.train, data.split.val
        labelled = Labelled(x, y, owners, _views(feats, train), train, data.labels[train])
        trained = self_train(
            labelled, pool, _views(feats, val), data.labels[val], start=(head, score, fit_info),
            fit=lambda x2, y2, o2: _sklearn_head(x2, y2, o2, data, fixed), C=fit_info["C"],
            num_classes=len(data.classes), seed=cfg.seed,
        )  # fmt: skip
        head, score, _ = trained.head
        pseudo = _pseudo_record(trained, unlabelled, data.classes)
    prep = backbone.preprocessing
    classifier = Classifier(shell.trunk, head, mean=prep.mean, std=prep.std, flip_tta=mirror)

    def logits(idx: np.ndarray) -> np.ndarray:  # what the classifier computes, from cached features
        z = score(feats.clean[idx])
        return mirror_logits(z, score(feats.mirror[idx])) if feats.mirror is not None else z

    proba = {part: softmax(logits(idx), axis=1) for part, idx in data.split.parts().items()}
    pooled = feats.clean if feats.mirror is None else (feats.clean + feats.mirror) / 2  # as Classifier pools
    features = {part: pooled[idx] for part, idx in data.split.parts().items()}
    linear = LinearHead(
        **fit_info, views=cfg.views_for("features"), mirror=mirror, feature_layer=cfg.feature_layer,
        feature_dim=int(x.shape[1]), train_rows=len(x) + (pseudo.used * (2 if mirror else 1) if pseudo else 0),
    )  # fmt: skip
    details = MethodDetails("features", linear=linear, unlabelled=pseudo)
    return Fitted(
        classifier=classifier.eval(), head=spec, details=details, proba=proba, preprocessing=prep, features=features,
        val_predicted=val_features(feats, data),
    )  # fmt: skip


def val_features(feats: FeatureSet, data: LabelledImages) -> tuple[np.ndarray, np.ndarray | None]:
    """The validation images' features and their mirror images' (None without): what prediction computes
    for their files, since it decodes a file to the pixels training decoded it to (`data/eval_pixels.py`)."""
    val = data.split.val
    return feats.clean[val], None if feats.mirror is None else feats.mirror[val]


Score: TypeAlias = Callable[[np.ndarray], np.ndarray]  # cached features (n, D) -> logits (n, K)


def _pool_features(
    shell: Classifier, backbone: Backbone, pool: UnlabelledImages, data: LabelledImages, cfg: TrainConfig,
    progress: Progress,
) -> Views:  # fmt: skip
    """Features of the unlabelled photos (and their mirror images), cached like the labelled ones'."""
    empty = np.zeros(0, dtype=np.int64)
    as_data = LabelledImages(
        pixels=pool.pixels, labels=np.zeros(len(pool), dtype=np.int64), sha256=pool.sha256, classes=data.classes,
        split=Split(train=empty, val=empty, test=empty),
    )  # fmt: skip
    feats = compute_features(shell, backbone, as_data, views=0, mirror=cfg.mirror, cfg=cfg, progress=progress)
    return Views(feats.clean, feats.mirror)


def _views(feats: FeatureSet, idx: np.ndarray) -> Views:
    return Views(feats.clean[idx], None if feats.mirror is None else feats.mirror[idx])


def _pseudo_record(trained: SelfTrained, pool: UnlabelledImages, classes: tuple[str, ...]) -> PseudoLabels:
    counts = np.bincount(trained.labels, minlength=len(classes))
    return PseudoLabels(
        folder=display_path(pool.folder), found=pool.found, unreadable=len(pool.unreadable),
        excluded=len(pool.excluded), used=len(trained.taken), threshold=trained.threshold, rounds=trained.rounds,
        class_counts={c: int(n) for c, n in zip(classes, counts, strict=True)},
        val_before=trained.val_before, val_after=trained.val_after, checked=trained.checked,
        right_before=trained.right_before, right_after=trained.right_after,
    )  # fmt: skip


def _training_rows(feats: FeatureSet, data: LabelledImages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training row (clean, mirror, views), its label and the image it came from."""
    train = data.split.train
    rows = [feats.clean[train]] + ([feats.mirror[train]] if feats.mirror is not None else []) + [feats.views]
    owners = np.concatenate([train] * (2 if feats.mirror is not None else 1) + [feats.view_owner])
    return np.concatenate(rows), data.labels[owners], owners


def _sklearn_head(
    x: np.ndarray, y: np.ndarray, owners: np.ndarray, data: LabelledImages, cfg: TrainConfig
) -> tuple[nn.Sequential, Score, dict[str, Any]]:
    """Logistic regression or a linear SVM, C by cross-validation grouped by image (views stay together)."""
    fit = fit_linear(
        x,
        y,
        num_classes=len(data.classes),
        kind="svm" if cfg.head == "svm" else "logistic",
        C=cfg.C,
        class_weight="balanced" if cfg.class_weight == "balanced" else None,
        groups=owners,
        seed=cfg.seed,
    )
    info = {"head": fit.kind, "C": fit.C, "cv_folds": fit.folds, "cv_scores": tuple(fit.cv_scores)}
    return nn.Sequential(nn.Dropout(0.0), fit.to_linear()), fit.logits, info


def _softmax_head(
    spec: HeadSpec, feats: FeatureSet, data: LabelledImages, cfg: TrainConfig
) -> tuple[nn.Sequential, Score, dict[str, Any]]:
    """A linear softmax layer trained on the cached features until the validation loss stops improving."""
    # Train on features scaled to unit mean square (as the scikit-learn heads are), then fold the
    # scale into the layer so the head takes the raw features.
    rms = float(np.sqrt(np.mean(_training_rows(feats, data)[0] ** 2))) or 1.0
    scaled = FeatureSet(
        feats.clean / rms, None if feats.mirror is None else feats.mirror / rms, feats.views / rms, feats.view_owner
    )
    head = seeded_head(spec, cfg.seed)
    weights = class_weights(data, cfg.class_weight)
    train_head(head, scaled, data, cfg.finetune, seed=cfg.seed, class_weight=weights, mirror=cfg.mirror)
    head.eval()
    with torch.no_grad():
        layer = head[-1]
        assert isinstance(layer, nn.Linear)  # build_head ends in the output layer
        layer.weight.div_(rms)

    def score(f: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return head(torch.from_numpy(f)).numpy()

    return head, score, {"head": "softmax", "C": None, "cv_folds": 0, "cv_scores": ()}
