"""Backbone names: timm names checked with close-match hints, the built-in name, a sidecar's architecture.

timm is the registry, so a name is `architecture[.tag]` as timm spells it ("resnet50.a1_in1k"). The
one name timm does not know is the built-in backbone's, "mobilenetv2_100.tf_in1k": its weights ship
with tlearn (`tlearn.models.builtin`), not with timm.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import timm

from tlearn.core.errors import BackboneError
from tlearn.models.builtin import BUILTIN_NAME, is_builtin

# Families whose networks fix their input size when they are built (position embeddings, windows).
_FIXED_SIZE_FAMILIES = ("vit_", "deit", "eva", "beit", "swin", "maxvit", "coatnet", "test_vit", "levit")


def check_model_name(name: str) -> None:
    """Raise with the closest timm names when `name` is not a timm model (or not a known tag)."""
    if is_builtin(name):
        return
    arch, tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"Closest: {', '.join(close)}. " if close else ""
        family = re.match(r"[A-Za-z]*", arch)
        word = (family.group() if family else "") or arch  # the family: resnet, vit
        raise BackboneError(
            f"Unknown backbone '{name}'.",
            hint=f"{hint}List models with: tlearn backbones --filter {word}",
        )
    if tag:
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*")]
        if arch == timm.models.get_arch_name(BUILTIN_NAME):
            tags.append(timm.models.split_model_name_tag(BUILTIN_NAME)[1])
        if tag not in tags:
            raise BackboneError(
                f"'{arch}' has no pretrained weights tagged '{tag}'.",
                hint=f"Tags: {', '.join(tags) or 'none'}. Or leave the tag out for the default weights.",
            )


def canonical_name(name: str) -> str:
    """The name as timm spells it; the built-in name typed with spaces or capitals becomes its own."""
    return BUILTIN_NAME if is_builtin(name) else name


def name_for_file(name: str | None, sidecar: dict[str, Any], path: Path) -> str:
    """The backbone of a weights file: `name` when given, else the sidecar's; the two must agree."""
    from_sidecar = sidecar.get("architecture")
    if name is None:
        if not from_sidecar:
            raise BackboneError(
                f"The weights file {path.name} does not say which architecture it is for.",
                hint=f"Pass --backbone NAME (a timm model name), or write a sidecar {path.with_suffix('.json')} "
                'with {"architecture": "NAME"}.',
            )
        name = str(from_sidecar)
    if from_sidecar and timm.models.get_arch_name(name) != timm.models.get_arch_name(from_sidecar):
        raise BackboneError(
            f"The weights file {path} is for {from_sidecar} (says its sidecar), not {name}.",
            hint="Leave --backbone out to use the sidecar's architecture, or pass weights for this one.",
        )
    return name


def takes_img_size(arch: str) -> bool:
    """Transformers fix their input size at build time; convolutional networks take any size."""
    return arch.startswith(_FIXED_SIZE_FAMILIES)
