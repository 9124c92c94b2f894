"""Pretrained backbones from timm: any model name, weights from the hub, a local file, or none.

timm is the registry: names are the interface and `timm.create_model(name, num_classes=0)` gives
the network without its top. This module adds what a user of a small dataset needs around it:
weights from a local file (with an optional JSON sidecar that carries the architecture and the
preprocessing), a fast and clear answer when the hub cannot be reached, close-match hints for
unknown names, the model's stages (to freeze or unfreeze "the last N"), and the BatchNorm rule.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from tlearn.core.errors import BackboneError, OfflineError
from tlearn.core.preprocessing import Preprocessing
from tlearn.models import scratch_cnn  # noqa: F401  (registers the from-scratch CNN with timm)

log = logging.getLogger(__name__)

# DINOv2 ViT-S/14: self-supervised features whose linear probe comes close to full fine-tuning on
# fine-grained datasets, Apache-2.0, 22 M parameters. Run at 224 px (the resolution of its own
# linear evaluation) instead of its default 518: five times cheaper on a CPU.
DEFAULT_BACKBONE = "vit_small_patch14_dinov2.lvd142m"
DEFAULT_KWARGS: dict[str, dict[str, Any]] = {"vit_small_patch14_dinov2": {"img_size": 224}}
HUB_TIMEOUT_S = 2.0
_HEAD_NAMES = ("classifier", "fc", "head", "head.fc", "last_linear", "head.l", "fc_norm")


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


@dataclass(frozen=True)
class Backbone:
    """A pretrained network without its top, and what downstream code needs to know about it."""

    model: nn.Module
    name: str  # as the user gave it, possibly with a pretrained tag: "resnet50.a1_in1k"
    architecture: str  # timm architecture to rebuild it: "resnet50"
    create_kwargs: dict[str, Any]
    preprocessing: Preprocessing
    num_features: int
    stages: tuple[Stage, ...]
    levels: tuple[FeatureLevel, ...]
    weights: str  # "hub:<tag>", "file:<path>" or "none"
    weights_id: str = field(default="")  # identifies the weights' content, for caches
    any_input_size: bool = True  # convolutional: takes any input size (transformers are built for one)


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

    `weights`: None for the hub's pretrained weights, "none" for random init (not transfer learning),
    or a path to a local file (.safetensors, .pth, .pt, .bin) with an optional sidecar `<stem>.json`.
    `input_size` overrides the weights' input resolution (square).
    """
    sidecar: dict[str, Any] = {}
    path: Path | None = None
    if weights is not None and str(weights).lower() != "none":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneError(
                f"Weights file not found: {path}.",
                hint="Pass the path of a .safetensors or .pth file, 'none' for random init, or leave "
                "--weights out to download pretrained weights.",
            )
        sidecar = _read_sidecar(path)
    name = _resolve_name(name, sidecar, path)
    arch = timm.models.get_arch_name(name)
    create_kwargs = {**DEFAULT_KWARGS.get(arch, {}), **sidecar.get("create_model_kwargs", {}), **kwargs}
    create_kwargs.pop("num_classes", None)
    create_kwargs.pop("pretrained", None)
    if input_size is not None and _takes_img_size(arch):
        create_kwargs["img_size"] = input_size

    if path is not None:
        model = _create(arch, create_kwargs, pretrained=False)
        _load_file(model, path, arch)
        source, weights_id = f"file:{path}", f"sha256:{_file_digest(path)}"
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
    elif weights is not None:  # "none"
        if warn_random:
            log.warning("Random initial weights (--weights none): this is training from scratch, not transfer.")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = _create(name, create_kwargs, pretrained=False)
        source, weights_id, cfg = "none", f"none:seed{seed}", _cfg_of(model)
    else:
        model = _from_hub(name, create_kwargs)
        cfg = _cfg_of(model)
        tag = cfg.get("tag") or ""
        source = weights_id = f"hub:{arch}.{tag}" if tag else f"hub:{arch}"

    if "img_size" in create_kwargs:
        size = create_kwargs["img_size"]
        cfg["input_size"] = (3, size, size) if isinstance(size, int) else (3, *size)
    preprocessing = Preprocessing.from_timm(cfg)
    if input_size is not None:
        preprocessing = Preprocessing(
            (input_size, input_size),
            preprocessing.mean,
            preprocessing.std,
            preprocessing.interpolation,
            preprocessing.crop_pct,
            preprocessing.crop_mode,
        )
    model.eval()
    return Backbone(
        model=model,
        name=name,
        architecture=arch,
        create_kwargs=create_kwargs,
        preprocessing=preprocessing,
        num_features=int(getattr(model, "num_features", 0)),
        stages=model_stages(model),
        levels=feature_levels(model),
        weights=source,
        weights_id=weights_id,
        any_input_size=not (_takes_img_size(arch) or cfg.get("fixed_input_size", False)),
    )


def _cfg_of(model: nn.Module) -> dict[str, Any]:
    return dict(getattr(model, "pretrained_cfg", None) or {})


def rebuild_model(architecture: str, create_kwargs: dict[str, Any]) -> nn.Module:
    """The same architecture with random weights, for loading a saved state dict into."""
    return _create(architecture, create_kwargs, pretrained=False)


def model_stages(model: nn.Module) -> tuple[Stage, ...]:
    """Parameter groups from input to output (stem, blocks..., last block with the head's convs)."""
    from timm.models._manipulate import group_parameters

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
    stages = []
    for index, (_, names) in enumerate(sorted(groups.items())):
        stages.append(Stage(index, _stage_name(names), tuple(names)))
    return tuple(stages)


def feature_levels(model: nn.Module) -> tuple[FeatureLevel, ...]:
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
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# --- names -----------------------------------------------------------------------------------


def _resolve_name(name: str | None, sidecar: dict[str, Any], path: Path | None) -> str:
    from_sidecar = sidecar.get("architecture")
    if name is None:
        name = from_sidecar or DEFAULT_BACKBONE
        if path is not None and not from_sidecar:
            raise BackboneError(
                f"The weights file {path.name} does not say which architecture it is for.",
                hint=f"Pass --backbone NAME (a timm model name), or write a sidecar {path.with_suffix('.json')} "
                'with {"architecture": "NAME"}.',
            )
    if from_sidecar and timm.models.get_arch_name(name) != timm.models.get_arch_name(from_sidecar):
        raise BackboneError(
            f"The weights file {path} is for {from_sidecar} (says its sidecar), not {name}.",
            hint="Leave --backbone out to use the sidecar's architecture, or pass weights for this one.",
        )
    check_model_name(name)
    return name


def check_model_name(name: str) -> None:
    """Raise with the closest timm names when `name` is not a timm model (or not a known tag)."""
    arch, tag = _split_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"Closest: {', '.join(close)}. " if close else ""
        word = re.match(r"[A-Za-z]*", arch).group() or arch  # type: ignore[union-attr]  # the family: resnet, vit
        raise BackboneError(
            f"Unknown backbone '{name}'.",
            hint=f"{hint}List models with: tlearn backbones --filter {word}",
        )
    if tag:
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            raise BackboneError(
                f"'{arch}' has no pretrained weights tagged '{tag}'.",
                hint=f"Tags: {', '.join(tags) or 'none'}. Or leave the tag out for the default weights.",
            )


def _split_tag(name: str) -> tuple[str, str]:
    arch, _, tag = name.partition(".")
    return arch, tag


def _stage_name(params: list[str]) -> str:
    prefixes: list[str] = []
    for p in params:
        parts = p.split(".")
        prefix = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if prefix not in prefixes:
            prefixes.append(prefix)
    if len(prefixes) > 3:
        return f"{prefixes[0]} .. {prefixes[-1]}"
    return "+".join(prefixes)


def _takes_img_size(arch: str) -> bool:
    """Transformers fix their input size at build time; convolutional networks take any size."""
    return arch.startswith(("vit_", "deit", "eva", "beit", "swin", "maxvit", "coatnet", "test_vit", "levit"))


# --- creating and loading ------------------------------------------------------------------


def _create(name: str, kwargs: dict[str, Any], *, pretrained: bool) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as err:
        raise BackboneError(
            f"Cannot build {name} with options {kwargs}: {err}.",
            hint="Check the create_model_kwargs of the weights' sidecar JSON.",
        ) from None


def _from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    reachable = hub_reachable()
    try:
        with _hub_offline(not reachable):
            return _create(name, kwargs, pretrained=True)
    except BackboneError:
        raise
    except Exception as err:
        if reachable and not _is_missing_file(err):
            raise BackboneError(
                f"Downloading the pretrained weights of {name} failed: {err}.",
                hint="Try again, or pass a local weights file with --weights PATH.",
            ) from None
        raise OfflineError(
            f"The pretrained weights of {name} are not in the local cache, and the Hugging Face hub "
            f"cannot be reached{'' if reachable else ' (offline)'}.",
            hint="Pass a local weights file with --weights PATH (.safetensors or .pth; a sidecar PATH.json "
            "can give the architecture and preprocessing), or pick a cached model: tlearn backbones --cached.",
        ) from None


def _is_missing_file(err: Exception) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError

    return isinstance(err, LocalEntryNotFoundError | FileNotFoundError)


@functools.cache
def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Can the hub be reached? One TCP connection with a short timeout instead of minutes of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Put huggingface_hub in offline mode for a block: it then answers from the cache at once."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        doc = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BackboneError(f"Cannot read the weights sidecar {side}: {err}.") from None
    if not isinstance(doc, dict):
        raise BackboneError(f"The weights sidecar {side} must hold a JSON object.")
    return doc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch checkpoint, unwrapped from {"state_dict": ...} and DDP's "module."."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(
            f"Cannot read weights from {path}: {err}.",
            hint="Pass a .safetensors file or a .pth/.pt/.bin file saved with torch.save(state_dict).",
        ) from None
    for key in ("state_dict", "model_state_dict", "model", "module", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} does not hold a state dict of tensors.")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _load_file(model: nn.Module, path: Path, arch: str) -> None:
    state = read_state_dict(path)
    problems = _state_problems(model, state)
    if problems:
        filtered = _timm_filter(arch, state, model)
        if filtered is not None and not _state_problems(model, filtered):
            state, problems = filtered, []
    if problems:
        raise BackboneError(
            f"The weights in {path.name} do not fit {arch}: {'; '.join(problems)}.",
            hint="Check --backbone (and the sidecar's create_model_kwargs) against the model the file came from.",
        )
    model.load_state_dict(_without_head(model, state), strict=False)


def _without_head(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    return {k: v for k, v in state.items() if k in own}


def _state_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    own = model.state_dict()
    heads = {*_HEAD_NAMES, *_as_tuple(_cfg_of(model).get("classifier"))}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and k.rsplit(".", 1)[0] not in heads]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for what, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {what} ({', '.join(keys[:3])}{more})")
    return problems


def _timm_filter(arch: str, state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor] | None:
    """timm's own converter for checkpoints in an original format (and ViT position embeddings)."""
    from timm.models._registry import _model_to_module

    module_name = _model_to_module.get(arch)
    if not module_name:
        return None
    fn = getattr(importlib.import_module(f"timm.models.{module_name}"), "checkpoint_filter_fn", None)
    if fn is None:
        return None
    try:
        return dict(fn(dict(state), model))
    except Exception:
        return None


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- listing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    name: str
    params_m: float | None
    input_size: tuple[int, int] | None
    license: str | None
    cached: bool


def list_backbones(
    pattern: str = "", *, pretrained: bool = False, cached_only: bool = False, limit: int | None = 30
) -> tuple[list[ModelInfo], int]:
    """timm models whose name contains `pattern` (or matches it as a wildcard), and how many matched.

    With `pretrained`, names carry their weights tag (resnet50.a1_in1k). Parameters are counted by
    building each model on the meta device (no memory, no weights).
    """
    wildcard = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*" if pattern else ""
    names = timm.list_pretrained(wildcard or "*") if pretrained or cached_only else timm.list_models(wildcard)
    cached = _cached_hub_repos()
    if cached_only:
        names = [n for n in names if _hub_id(n) in cached]
    total = len(names)
    rows = []
    for name in names[:limit] if limit else names:
        cfg = _pretrained_cfg(name)
        size = tuple(cfg.get("input_size", ()))[-2:] if cfg else ()
        rows.append(
            ModelInfo(
                name=name,
                params_m=_count_params(name),
                input_size=(int(size[0]), int(size[1])) if len(size) == 2 else None,
                license=cfg.get("license") if cfg else None,
                cached=_hub_id(name) in cached,
            )
        )
    return rows, total


def _pretrained_cfg(name: str) -> dict[str, Any]:
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    except (RuntimeError, ValueError, TypeError):
        return {}
    return cfg.to_dict() if cfg is not None else {}


def _hub_id(name: str) -> str | None:
    return _pretrained_cfg(name).get("hf_hub_id")


def _count_params(name: str) -> float | None:
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters()) / 1e6


def _cached_hub_repos() -> set[str]:
    try:
        from huggingface_hub import scan_cache_dir

        return {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet, or an unreadable one: nothing is cached
        return set()
