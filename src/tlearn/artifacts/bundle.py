"""A trained model on disk: a folder with the weights, a JSON config, the split and the history.

    model.safetensors   the whole Classifier (backbone trunk + head + normalisation buffers)
    tlearn.json         what it takes to rebuild and use it: architecture and kwargs, feature levels,
                        head, preprocessing, class names in order; and how it was made: method,
                        metrics, seed, data, command, package versions
    split.json          the train / val / test assignment (paths relative to the dataset)
    history.csv         one row per epoch (methods that train in epochs)
    unknown.safetensors the "unknown" answer's bank: class means and a capped sample of training
                        features, float16 (bundles before it have none: no rejection)

Weights are safetensors (no pickles). The config is written last, so a folder with a config is a
complete bundle even if a run was interrupted. It records the SHA-256 of the weights file, and
loading checks it (bundles saved before the digest was recorded load without the check), then checks
that the classes it lists are as many as the network's outputs: an edited or mismatched tlearn.json is
one clear error at load, not wrong labels later.
"""

from __future__ import annotations

import os
import platform
import stat
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tlearn.core.errors import BundleError
from tlearn.core.files import atomic_path, file_sha256, read_json, write_json_atomic
from tlearn.core.preprocessing import Preprocessing
from tlearn.data.sources import display_path
from tlearn.models.backbones import rebuild_model
from tlearn.models.classifier import Classifier, FeatureTrunk, HeadSpec, build_head
from tlearn.models.unknown import UnknownRule, empty_scorer

BUNDLE_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
UNKNOWN_FILE = "unknown.safetensors"
UNKNOWN_PREFIX = "unknown."  # the Classifier's state under this prefix goes to UNKNOWN_FILE
CONFIG_FILE = "tlearn.json"
SPLIT_FILE = "split.json"
CHECK_FILE = "check.json"  # the dataset check of the run
DIGEST_KEY = "weights_sha256"  # in tlearn.json, beside the config's own keys: the SHA-256 of WEIGHTS_FILE


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
    temperature: float = 1.0  # the logits are divided by it (calibration); bundles before it: 1
    unknown: UnknownRule | None = None  # the "unknown" answer (its bank in UNKNOWN_FILE); bundles before it: None
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
            "temperature": self.temperature,
            "unknown": None if self.unknown is None else self.unknown.to_dict(),
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
            temperature=float(d.get("temperature", 1.0)),
            unknown=UnknownRule.from_dict(d["unknown"]) if isinstance(d.get("unknown"), dict) else None,
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
    """Write weights, then the config (stamped with versions, time and the weights' SHA-256). Returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in classifier.state_dict().items()}
    bank = {k[len(UNKNOWN_PREFIX) :]: state.pop(k).half() for k in list(state) if k.startswith(UNKNOWN_PREFIX)}
    if bank:
        _write_tensors(bank, out / UNKNOWN_FILE)
    else:
        (out / UNKNOWN_FILE).unlink(missing_ok=True)
    digest = _write_tensors(state, out / WEIGHTS_FILE)
    stamped = BundleConfig.from_dict(
        {**config.to_dict(), "versions": package_versions(), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    )
    write_json_atomic(out / CONFIG_FILE, {**stamped.to_dict(), DIGEST_KEY: digest})
    return out


def build_classifier(config: BundleConfig) -> Classifier:
    """The network a config describes, with random weights (load a state dict into it)."""
    backbone = rebuild_model(config.architecture, config.create_kwargs)
    classifier = Classifier(
        FeatureTrunk(backbone, config.levels),
        build_head(config.head),
        mean=config.preprocessing.mean,
        std=config.preprocessing.std,
        flip_tta=config.flip_tta,
        temperature=config.temperature,
    )
    if config.unknown is not None:
        classifier.unknown = empty_scorer(config.unknown)
    return classifier


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
    except OSError as err:
        raise BundleError(f"Cannot read {display_path(config_path)}: {err.strerror}.") from None
    except ValueError as err:
        raise BundleError(f"Cannot read {display_path(config_path)}: {_one_line(err)}.") from None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt != BUNDLE_FORMAT:
        made_by = raw.get("versions", {}).get("tlearn", "an unknown version") if isinstance(raw, dict) else "?"
        raise BundleError(
            f"{display_path(folder)} is a bundle of format {fmt} (made by tlearn {made_by}); this tlearn reads format "
            f"{BUNDLE_FORMAT}.",
            hint="Load it with the tlearn version that made it, or train it again with this one.",
        )
    _check_digest(folder, raw.get(DIGEST_KEY))
    try:
        config = BundleConfig.from_dict(raw)
        classifier = build_classifier(config)
        state = load_file(str(weights_path))
        if config.unknown is not None:
            bank = load_file(str(folder / UNKNOWN_FILE))
            state.update({UNKNOWN_PREFIX + k: v.float() for k, v in bank.items()})
        classifier.load_state_dict(state, strict=True)
    except Exception as err:  # a damaged file fails in many ways (safetensors, torch, JSON fields)
        raise BundleError(f"The bundle {display_path(folder)} is damaged or incomplete: {_one_line(err)}.") from None
    _check_classes(folder, config, classifier)
    return classifier.eval(), config


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """A safetensors file written atomically, readable as any new file here; returns its SHA-256."""
    with atomic_path(path) as tmp:
        tmp.touch()  # created as any new file is here: 0666 less the umask, as tlearn.json will be
        mode = stat.S_IMODE(tmp.stat().st_mode)
        save_file(tensors, str(tmp), metadata={"format": str(BUNDLE_FORMAT)})
        os.chmod(tmp, mode)  # safetensors writes its file 0600 whatever the umask: others could not read it
        return file_sha256(tmp)


def _check_digest(folder: Path, recorded: object) -> None:
    """The weights file must be the one saved with this tlearn.json (when it records a digest)."""
    if not isinstance(recorded, str) or not recorded:
        return  # a bundle saved before the digest was recorded: nothing to check against
    try:
        found = file_sha256(folder / WEIGHTS_FILE)
    except OSError as err:
        raise BundleError(f"Cannot read {display_path(folder / WEIGHTS_FILE)}: {err.strerror}.") from None
    if found != recorded:
        raise BundleError(
            f"{display_path(folder / WEIGHTS_FILE)} is not the file this bundle saved: its SHA-256 is {found[:12]}..., "
            f"{CONFIG_FILE} records {recorded[:12]}....",
            hint="It was changed or damaged after saving (a partial copy, weights of another run): copy the bundle "
            "folder again from where it was trained, or train again.",
        )


def _check_classes(folder: Path, config: BundleConfig, classifier: Classifier) -> None:
    """The classes listed must name the network's outputs, one each, in order: an edited list shifts every
    label (or indexes past the end), and an exported model would disagree with its JSON."""
    outputs = next(m.out_features for m in reversed(classifier.head) if isinstance(m, torch.nn.Linear))
    classes = config.classes
    where = display_path(folder / CONFIG_FILE)
    hint = (
        f"Restore the 'classes' list of {CONFIG_FILE}: {outputs} names, in the order of training (the bundle's "
        "check.json and predictions.csv hold them), or train again."
    )
    if len(classes) != outputs:
        shown = ", ".join(str(c) for c in classes[:8]) + (", ..." if len(classes) > 8 else "")
        raise BundleError(
            f"{where} lists {len(classes)} classes ({shown}) but the network has {outputs} outputs: the two "
            "must match, one class per output.",
            hint=hint,
        )
    repeated = next((c for c in classes if classes.count(c) > 1), None)
    if repeated is not None:
        raise BundleError(f"{where} lists the class {repeated!r} twice: each output needs its own class.", hint=hint)


def _one_line(err: Exception, limit: int = 240) -> str:
    """An exception's message on one line, cut to `limit` characters (torch lists every mismatched key)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform(terse=True)}
    for pkg in ("tlearn", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    versions["torch_threads"] = str(torch.get_num_threads())
    return versions
