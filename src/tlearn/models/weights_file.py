"""Local weights files: the path check, the JSON sidecar, reading the tensors, and fitting them to a model.

A weights file is a .safetensors file or a torch checkpoint (.pth, .pt, .bin). Beside it, an
optional sidecar `<stem>.json` says which architecture it is for (`architecture`), how to build it
(`create_model_kwargs`) and how it wants its pixels (`pretrained_cfg`: mean, std, size...). A file
that does not fit the model is refused with what disagrees, after timm's own converter for the
architecture (`checkpoint_filter_fn`: original formats, resized position embeddings) was tried.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import clean_state_dict, load_state_dict
from torch import nn

from tlearn.core.errors import BackboneError

# Names of classifier layers: their tensors in a file are dropped, since the backbone has no top.
_HEAD_NAMES = ("classifier", "fc", "head", "head.fc", "last_linear", "head.l", "fc_norm")
# Keys that checkpoints wrap their state dict in, beyond the "state_dict" and "model" that timm unwraps.
_WRAPPERS = ("model_state_dict", "module", "state_dict_ema")


def weights_file(weights: str | Path | None) -> Path | None:
    """The local weights file `weights` names; None for the hub's weights (None) or random init ("none")."""
    if weights is None or str(weights).lower() == "none":
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneError(
            f"Weights file not found: {path}.",
            hint="Pass the path of a .safetensors or .pth file, 'none' for random init, or leave "
            "--weights out to download pretrained weights.",
        )
    return path


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON object in `<stem>.json` beside a weights file; {} when there is none."""
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


STATE_DICT_HINT = "Pass a .safetensors file or a .pth/.pt/.bin file saved with torch.save(state_dict)."


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch checkpoint, unwrapped from {"state_dict": ...} and DDP's "module.".

    timm reads the file (`load_state_dict`: safetensors, or `torch.load` with weights only) and
    unwraps "state_dict" and "model"; the other wrappers training scripts write are unwrapped here.
    EMA weights are taken only when nothing else is there, as before timm was asked.
    """
    try:
        state: Any = load_state_dict(str(path), use_ema=False)
    except Exception as err:
        if "weights_only" in str(err) and "global" in str(err):  # objects, not only tensors: a pickled model
            raise BackboneError(
                f"{path} holds a whole pickled model, not its weights alone: tlearn reads weights only, since "
                "unpickling a model can run any code.",
                hint="Where the model was saved, save its weights instead: torch.save(model.state_dict(), "
                "'weights.pth') or safetensors.torch.save_file(model.state_dict(), 'weights.safetensors').",
            ) from None
        raise BackboneError(f"Cannot read weights from {path}: {_one_line(err)}.", hint=STATE_DICT_HINT) from None
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict):
            state = clean_state_dict(state[key])
            break
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} does not hold a state dict of tensors.")
    return state


def load_weights_file(model: nn.Module, path: Path, arch: str) -> None:
    """Load `path` into `model` (built as `arch`), the classifier's tensors left out. Raises BackboneError."""
    state = read_state_dict(path)
    problems = state_problems(model, state)
    if problems:
        filtered = _timm_filter(arch, state, model)
        if filtered is not None and not state_problems(model, filtered):
            state, problems = filtered, []
    if problems:
        raise BackboneError(
            f"The weights in {path.name} do not fit {arch}: {'; '.join(problems)}.",
            hint="Check --backbone (and the sidecar's create_model_kwargs) against the model the file came from.",
        )
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def state_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading into `model`: missing and unexpected keys, other shapes."""
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    heads = {*_HEAD_NAMES, *((classifier,) if isinstance(classifier, str) else (classifier or ()))}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and k.rsplit(".", 1)[0] not in heads]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {what} ({', '.join(keys[:3])}{more})")
    return problems


def _timm_filter(arch: str, state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor] | None:
    """timm's own converter for checkpoints in an original format (and ViT position embeddings)."""
    try:
        module = importlib.import_module(timm.models.model_entrypoint(arch).__module__)
    except (RuntimeError, ImportError):
        return None
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return None
    try:
        return dict(fn(dict(state), model))
    except Exception:
        return None


def _one_line(err: Exception) -> str:
    """An exception's message on one line (some readers put a traceback-like report in it)."""
    return " ".join(str(err).split()) or type(err).__name__
