"""A trained model on disk: a folder with the weights, a JSON config, the split and the history.

    model.safetensors   the whole Classifier (backbone trunk + head + normalisation buffers)
    tlearn.json         what it takes to rebuild and use it: architecture and kwargs, feature levels,
                        head, preprocessing, class names in order; and how it was made: method,
                        metrics, seed, data, command, package versions
    split.json          the train / val / test assignment (paths relative to the dataset)
    history.csv         one row per epoch (methods that train in epochs)

Weights are safetensors (no pickles). The config is written last, so a folder with a config is a
complete bundle even if a run was interrupted.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tlearn.core.errors import BundleError
from tlearn.core.files import atomic_path, read_json, write_json_atomic
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.sources import display_path
from tlearn.models.backbones import rebuild_model
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec, build_head

BUNDLE_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "tlearn.json"
SPLIT_FILE = "split.json"
CHECK_FILE = "check.json"  # the dataset check of the run


@dataclass(frozen=True)
class BundleConfig:
    classes: tuple[str, ...]
    architecture: str
    backbone: str
    create_kwargs: dict[str, Any]
    weights: str
    levels: tuple[int, ...]
    head: HeadSpec
    preprocessing: Preprocessing
    method: str
    flip_tta: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    data: str = ""
    command: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format: int = BUNDLE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "classes": list(self.classes),
            "architecture": self.architecture,
            "backbone": self.backbone,
            "create_kwargs": self.create_kwargs,
            "weights": self.weights,
            "levels": list(self.levels),
            "head": self.head.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "method": self.method,
            "flip_tta": self.flip_tta,
            "details": self.details,
            "metrics": self.metrics,
            "seed": self.seed,
            "data": self.data,
            "command": self.command,
            "versions": self.versions,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleConfig:
        return cls(
            classes=tuple(d["classes"]),
            architecture=d["architecture"],
            backbone=d.get("backbone", d["architecture"]),
            create_kwargs=dict(d.get("create_kwargs", {})),
            weights=d.get("weights", ""),
            levels=tuple(d.get("levels", ())),
            head=HeadSpec(**d["head"]),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            method=d.get("method", ""),
            flip_tta=bool(d.get("flip_tta", False)),
            details=d.get("details", {}),
            metrics=d.get("metrics", {}),
            seed=int(d.get("seed", 0)),
            data=d.get("data", ""),
            command=d.get("command", ""),
            versions=d.get("versions", {}),
            created=d.get("created", ""),
            format=int(d["format"]),
        )


def save_bundle(classifier: Classifier, config: BundleConfig, out: Path) -> Path:
    """Write weights, then the config (stamped with versions and time). Returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in classifier.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": str(BUNDLE_FORMAT)})
    stamped = BundleConfig.from_dict(
        {**config.to_dict(), "versions": package_versions(), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    )
    write_json_atomic(out / CONFIG_FILE, stamped.to_dict())
    return out


def build_classifier(config: BundleConfig) -> Classifier:
    """The network a config describes, with random weights (load a state dict into it)."""
    backbone = rebuild_model(config.architecture, config.create_kwargs)
    return Classifier(
        FeatureTrunk(backbone, config.levels),
        build_head(config.head),
        mean=config.preprocessing.mean,
        std=config.preprocessing.std,
        flip_tta=config.flip_tta,
    )


def load_bundle(path: str | Path) -> tuple[Classifier, BundleConfig]:
    """Rebuild the classifier of a bundle folder, in inference mode. Raises BundleError."""
    folder = Path(path).expanduser()
    if folder.is_file() and folder.name in (CONFIG_FILE, WEIGHTS_FILE):
        folder = folder.parent
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.exists():
        raise BundleError(f"No such bundle: {display_path(folder)}.", hint="Pass the folder that `tlearn train` wrote.")
    if not config_path.is_file() or not weights_path.is_file():
        raise BundleError(
            f"{display_path(folder)} is not a tlearn bundle: it lacks {CONFIG_FILE} or {WEIGHTS_FILE}.",
            hint="Pass the folder that `tlearn train` wrote (it holds both files).",
        )
    try:
        raw = read_json(config_path)
    except (OSError, ValueError) as err:
        raise BundleError(f"Cannot read {display_path(config_path)}: {err}.") from None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt != BUNDLE_FORMAT:
        made_by = raw.get("versions", {}).get("tlearn", "an unknown version") if isinstance(raw, dict) else "?"
        raise BundleError(
            f"{display_path(folder)} is a bundle of format {fmt} (made by tlearn {made_by}); this tlearn reads format "
            f"{BUNDLE_FORMAT}.",
            hint="Load it with the tlearn version that made it, or train it again with this one.",
        )
    try:
        config = BundleConfig.from_dict(raw)
        classifier = build_classifier(config)
        state = load_file(str(weights_path))
        classifier.load_state_dict(state, strict=True)
    except Exception as err:  # a damaged file fails in many ways (safetensors, torch, JSON fields)
        raise BundleError(f"The bundle {display_path(folder)} is damaged or incomplete: {err}.") from None
    return classifier.eval(), config


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform(terse=True)}
    for pkg in ("tlearn", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    versions["torch_threads"] = str(torch.get_num_threads())
    return versions
