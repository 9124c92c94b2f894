"""The backbones one can pick: timm's models and weights, the built-in one first, with what a user compares.

For each: parameters (counted on the meta device: no memory, no weights), input size, licence, and
whether its weights are here already (the local Hugging Face cache, or shipped with tlearn).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import timm
import torch

from tlearn.models.builtin import BUILTIN_ARCH, BUILTIN_NAME, builtin_sidecar


@dataclass(frozen=True)
class ModelInfo:
    name: str
    params_m: float | None
    input_size: tuple[int, int] | None
    license: str | None
    cached: bool  # its weights need no download
    builtin: bool = False  # its weights ship with tlearn


def list_backbones(
    pattern: str = "", *, pretrained: bool = False, cached_only: bool = False, limit: int | None = 30
) -> tuple[list[ModelInfo], int]:
    """timm models whose name contains `pattern` (or matches it as a wildcard), and how many matched.

    With `pretrained`, names carry their weights tag (resnet50.a1_in1k). The built-in backbone
    comes first whenever the pattern matches it, cached or not: it needs no download.
    """
    wildcard = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*" if pattern else ""
    names = timm.list_pretrained(wildcard or "*") if pretrained or cached_only else timm.list_models(wildcard)
    cached = _cached_hub_repos()
    if cached_only:
        names = [n for n in names if _hub_id(n) in cached]
    builtin = [_builtin_info()] if fnmatch.fnmatchcase(BUILTIN_NAME, wildcard.lower() or "*") else []
    total = len(builtin) + len(names)
    shown = names[: max(limit - len(builtin), 0)] if limit else names
    return builtin + [_info(name, cached) for name in shown], total


def _info(name: str, cached: set[str]) -> ModelInfo:
    cfg = _pretrained_cfg(name)
    size = tuple(cfg.get("input_size", ()))[-2:]
    return ModelInfo(
        name=name,
        params_m=_count_params(name),
        input_size=(int(size[0]), int(size[1])) if len(size) == 2 else None,
        license=cfg.get("license"),
        cached=_hub_id(name) in cached,
    )


def _builtin_info() -> ModelInfo:
    sidecar = builtin_sidecar()
    cfg = sidecar["pretrained_cfg"]
    size = cfg["input_size"][-2:]
    return ModelInfo(
        name=BUILTIN_NAME,
        params_m=_count_params(BUILTIN_ARCH, **sidecar.get("create_model_kwargs", {})),
        input_size=(int(size[0]), int(size[1])),
        license=cfg.get("license"),
        cached=True,
        builtin=True,
    )


def _pretrained_cfg(name: str) -> dict[str, Any]:
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    except (RuntimeError, ValueError, TypeError):
        return {}
    return cfg.to_dict() if cfg is not None else {}


def _hub_id(name: str) -> str | None:
    return _pretrained_cfg(name).get("hf_hub_id")


def _count_params(name: str, **kwargs: Any) -> float | None:
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **kwargs)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters()) / 1e6


def _cached_hub_repos() -> set[str]:
    try:
        from huggingface_hub import scan_cache_dir

        return {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet, or an unreadable one: nothing is cached
        return set()
