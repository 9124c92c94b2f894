"""Pretrained backbones from timm: any model name; weights from the hub, a local file, the built-in ones, or none.

timm is the registry: names are the interface and `timm.create_model(name, num_classes=0)` gives
the network without its top. `create_backbone` adds what a user of a small dataset needs around it
and returns it as one `Backbone` value: the network, how it wants its pixels, its stages, and where
its weights came from. The parts live in modules of their own: `names` (checks and close-match
hints), `hub` (reachability, offline mode, download errors), `weights_file` (local files and their
sidecars), `builtin` (the MobileNetV2 shipped with tlearn), `stages` (stages, feature levels, the
BatchNorm rule) and `catalog` (`list_backbones`); their public names are importable from here too.

The default backbone is DINOv2 ViT-S/14 when its weights can be had: in the Hugging Face cache, or
from a hub that answers at once. When they cannot (offline, nothing cached), the default falls back
to the built-in MobileNetV2, says so in one warning line, and records why in `Backbone.fallback`. A
backbone the user names never falls back: without its weights it is an `OfflineError`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from tlearn.core.errors import BackboneError
from tlearn.core.files import file_sha256
from tlearn.core.preprocessing import Preprocessing
from tlearn.models import hub, scratch_cnn  # noqa: F401  (scratch_cnn registers the from-scratch CNN with timm)
from tlearn.models.builtin import BUILTIN_NAME, builtin_sidecar, builtin_state_dict, builtin_weights_id, is_builtin
from tlearn.models.catalog import ModelInfo, list_backbones
from tlearn.models.hub import hub_reachable
from tlearn.models.names import canonical_name, check_model_name, name_for_file, takes_img_size
from tlearn.models.stages import (
    FeatureLevel,
    Stage,
    batchnorm_layers,
    feature_levels,
    model_stages,
    set_train_mode_frozen_bn,
)
from tlearn.models.weights_file import load_weights_file, read_sidecar, state_problems, weights_file

__all__ = [
    "BUILTIN_NAME",
    "DEFAULT_BACKBONE",
    "FALLBACK_MESSAGE",
    "Backbone",
    "FeatureLevel",
    "ModelInfo",
    "Stage",
    "batchnorm_layers",
    "check_model_name",
    "create_backbone",
    "feature_levels",
    "hub_reachable",
    "list_backbones",
    "model_stages",
    "rebuild_model",
    "resolve_default_backbone",
    "set_train_mode_frozen_bn",
]

log = logging.getLogger(__name__)

# DINOv2 ViT-S/14: self-supervised features whose linear probe comes close to full fine-tuning on
# fine-grained datasets, Apache-2.0, 22 M parameters. Run at 224 px (the resolution of its own
# linear evaluation) instead of its default 518: five times cheaper on a CPU.
DEFAULT_BACKBONE = "vit_small_patch14_dinov2.lvd142m"
DEFAULT_KWARGS: dict[str, dict[str, Any]] = {"vit_small_patch14_dinov2": {"img_size": 224}}
FALLBACK_MESSAGE = (
    f"No network and no cached DINOv2 weights: using the built-in MobileNetV2 ({BUILTIN_NAME}); "
    "pass --backbone NAME for another."
)


@dataclass(frozen=True)
class Backbone:
    """A pretrained network without its top, and what downstream code needs to know about it."""

    model: nn.Module
    name: str  # the one used, possibly with a pretrained tag: "resnet50.a1_in1k"
    architecture: str  # timm architecture to rebuild it: "resnet50"
    create_kwargs: dict[str, Any]
    preprocessing: Preprocessing
    num_features: int
    stages: tuple[Stage, ...]
    levels: tuple[FeatureLevel, ...]
    weights: str  # "hub:<arch.tag>", "file:<path>", "builtin:<name>" or "none"
    weights_id: str = field(default="")  # identifies the weights' content, for caches
    any_input_size: bool = True  # convolutional: takes any input size (transformers are built for one)
    fallback: str | None = None  # why this is not the default backbone that was asked for (None: it is)


@dataclass(frozen=True)
class _Weights:
    """A network with its weights loaded, where they came from, and the data config they want."""

    model: nn.Module
    source: str
    weights_id: str
    cfg: dict[str, Any]


def create_backbone(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
    seed: int = 0,
    warn_random: bool = True,
    **kwargs: Any,
) -> Backbone:
    """Build a timm model without its classifier and load its weights.

    `name`: a timm name, the built-in "mobilenetv2_100.tf_in1k", or None for the default (see
    `resolve_default_backbone`; with a weights file, the architecture its sidecar names).
    `weights`: None for the pretrained weights (hub or built in), "none" for random init (not transfer
    learning), or a path to a local file (.safetensors, .pth, .pt, .bin) with an optional sidecar
    `<stem>.json`; a file always wins over the hub and the built-in weights.
    `input_size` overrides the weights' input resolution (square).
    """
    path = weights_file(weights)
    sidecar = read_sidecar(path) if path is not None else {}
    fallback = None
    if path is not None:
        name = name_for_file(name, sidecar, path)
    elif name is None:
        name, fallback = resolve_default_backbone() if weights is None else (DEFAULT_BACKBONE, None)
    name = canonical_name(name)
    check_model_name(name)
    arch = timm.models.get_arch_name(name)
    create_kwargs = _create_kwargs(name, sidecar, kwargs, input_size)
    if path is not None:
        loaded = _from_file(arch, create_kwargs, path, sidecar)
    elif weights is not None:  # "none"; timm knows the built-in name's architecture, not its tag
        loaded = _random(arch if is_builtin(name) else name, create_kwargs, seed=seed, warn=warn_random)
    elif is_builtin(name):
        loaded = _builtin(arch, create_kwargs)
    else:
        with hub.hub_download(name):
            model = _create(name, create_kwargs, pretrained=True)
        tag = _cfg_of(model).get("tag") or ""
        source = f"hub:{arch}.{tag}" if tag else f"hub:{arch}"
        loaded = _Weights(model, source, source, _cfg_of(model))
    return _backbone(name, arch, create_kwargs, loaded, input_size=input_size, fallback=fallback)


def resolve_default_backbone() -> tuple[str, str | None]:
    """The backbone to use when none is named, and why it is not the default (None when it is).

    DINOv2 when its weights are in the Hugging Face cache or the hub answers within `HUB_TIMEOUT_S`;
    otherwise the built-in MobileNetV2, with a warning logged once per process.
    """
    if hub.hub_weights_cached(DEFAULT_BACKBONE) or hub.hub_reachable():
        return DEFAULT_BACKBONE, None
    _warn_fallback_once()
    return BUILTIN_NAME, FALLBACK_MESSAGE


@functools.cache
def _warn_fallback_once() -> None:
    log.warning(FALLBACK_MESSAGE)


def rebuild_model(architecture: str, create_kwargs: dict[str, Any]) -> nn.Module:
    """The same architecture with random weights, for loading a saved state dict into."""
    return _create(architecture, create_kwargs, pretrained=False)


def _create_kwargs(
    name: str, sidecar: dict[str, Any], overrides: dict[str, Any], input_size: int | None
) -> dict[str, Any]:
    """timm's create_model options: the name's defaults, then the sidecar's, then the caller's."""
    arch = timm.models.get_arch_name(name)
    builtin = builtin_sidecar().get("create_model_kwargs", {}) if is_builtin(name) else {}
    kwargs = {**DEFAULT_KWARGS.get(arch, {}), **builtin, **sidecar.get("create_model_kwargs", {}), **overrides}
    kwargs.pop("num_classes", None)
    kwargs.pop("pretrained", None)
    if input_size is not None and takes_img_size(arch):
        kwargs["img_size"] = input_size
    return kwargs


def _create(name: str, kwargs: dict[str, Any], *, pretrained: bool) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as err:
        raise BackboneError(
            f"Cannot build {name} with options {kwargs}: {err}.",
            hint="Check the create_model_kwargs of the weights' sidecar JSON.",
        ) from None


def _cfg_of(model: nn.Module) -> dict[str, Any]:
    return dict(getattr(model, "pretrained_cfg", None) or {})


def _from_file(arch: str, kwargs: dict[str, Any], path: Path, sidecar: dict[str, Any]) -> _Weights:
    model = _create(arch, kwargs, pretrained=False)
    load_weights_file(model, path, arch)
    cfg = {**_cfg_of(model), **sidecar.get("pretrained_cfg", {})}
    if not sidecar.get("pretrained_cfg"):
        log.warning(
            "No sidecar %s beside the weights: assuming %s's default preprocessing (mean %s, std %s). "
            "If the weights were trained otherwise, write that file with a pretrained_cfg.",
            path.with_suffix(".json").name,
            arch,
            cfg.get("mean"),
            cfg.get("std"),
        )
    return _Weights(model, f"file:{path}", f"sha256:{file_sha256(path)}", cfg)


def _random(name: str, kwargs: dict[str, Any], *, seed: int, warn: bool) -> _Weights:
    if warn:
        log.warning("Random initial weights (--weights none): this is training from scratch, not transfer.")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _create(name, kwargs, pretrained=False)
    return _Weights(model, "none", f"none:seed{seed}", _cfg_of(model))


def _builtin(arch: str, kwargs: dict[str, Any]) -> _Weights:
    """The built-in MobileNetV2: built as its sidecar says, loaded strictly, preprocessed as it was trained."""
    model = _create(arch, kwargs, pretrained=False)
    state = builtin_state_dict(with_classifier=False)
    problems = state_problems(model, state)
    if problems:  # options that change the architecture (another width, say)
        raise BackboneError(
            f"The built-in weights do not fit {arch} built with {kwargs}: {'; '.join(problems)}.",
            hint=f"Leave the model options out for {BUILTIN_NAME}, or pick another backbone.",
        )
    model.load_state_dict(state, strict=True)
    cfg = {**_cfg_of(model), **builtin_sidecar()["pretrained_cfg"]}
    return _Weights(model, f"builtin:{BUILTIN_NAME}", builtin_weights_id(), cfg)


def _backbone(
    name: str,
    arch: str,
    create_kwargs: dict[str, Any],
    loaded: _Weights,
    *,
    input_size: int | None,
    fallback: str | None,
) -> Backbone:
    """The Backbone value: preprocessing from the weights' data config, resized if asked."""
    cfg = dict(loaded.cfg)
    if "img_size" in create_kwargs:
        size = create_kwargs["img_size"]
        cfg["input_size"] = (3, size, size) if isinstance(size, int) else (3, *size)
    if input_size is not None:
        cfg["input_size"] = (3, input_size, input_size)
    model = loaded.model.eval()
    return Backbone(
        model=model,
        name=name,
        architecture=arch,
        create_kwargs=create_kwargs,
        preprocessing=Preprocessing.from_timm(cfg),
        num_features=int(getattr(model, "num_features", 0)),
        stages=model_stages(model),
        levels=feature_levels(model),
        weights=loaded.source,
        weights_id=loaded.weights_id,
        any_input_size=not (takes_img_size(arch) or cfg.get("fixed_input_size", False)),
        fallback=fallback,
    )
