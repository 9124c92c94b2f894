"""The built-in backbone: an ImageNet MobileNetV2 shipped inside the package, so tlearn works offline.

The weights are a real ImageNet-1k MobileNetV2 1.0 (timm's `mobilenetv2_100` built with
`pad_type="same"`), converted from TensorFlow Lite's int8 post-training-quantized model
(google-coral/test_data, Apache-2.0; see `builtin/NOTICE.md` and `builtin/LICENSE`). Its convolution
and linear weights are int8 values times one float32 scale per output channel, so the package stores
them that way (`<name>.q` int8 and `<name>.scale` float32, about 3.9 MB instead of 14) and restores
the float32 tensors bit for bit: `q.float() * scale`, one float32 multiplication per element, is what
the packing script verified against the original float file. Everything else (biases, BatchNorm
tensors, counters) is stored as it is.

`float_digest` fingerprints a state dict in a fixed way; the sidecar records the digest of the
original float file, so anyone can check that the restored tensors are the original ones.

This module imports nothing else from tlearn (except `tlearn.core.errors`): the backbone code builds on it,
not the other way round.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import torch
from safetensors.torch import load_file

from tlearn.core.errors import BackboneError

BUILTIN_NAME = "mobilenetv2_100.tf_in1k"
BUILTIN_ARCH = "mobilenetv2_100"
WEIGHTS_FILE = f"{BUILTIN_NAME}.int8.safetensors"
SIDECAR_FILE = f"{BUILTIN_NAME}.json"
Q_SUFFIX = ".q"
SCALE_SUFFIX = ".scale"


def _data_dir() -> Traversable:
    """The data folder `tlearn/models/builtin/` (plain files, not a package: no `__init__.py` needed)."""
    return resources.files("tlearn.models") / "builtin"


def is_builtin(name: str | None) -> bool:
    """True only for the full name with its tag, "mobilenetv2_100.tf_in1k".

    The plain architecture name "mobilenetv2_100" does NOT count: a user who asks for it may want the
    hub's default weights for that architecture (timm's own, with different preprocessing), and
    silently giving them these would change results. Surrounding spaces and case are ignored,
    because that is how a user types a name on the command line.
    """
    return name is not None and name.strip().lower() == BUILTIN_NAME


def builtin_sidecar() -> dict[str, Any]:
    """The JSON sidecar shipped with the weights: how to build the model, its preprocessing, provenance.

    Read on every call (it is small) so that callers may change the returned dict freely.
    """
    text = (_data_dir() / SIDECAR_FILE).read_text(encoding="utf-8")
    sidecar: dict[str, Any] = json.loads(text)
    return sidecar


def _scale_shape(scale: torch.Tensor, q: torch.Tensor) -> tuple[int, ...]:
    """Shape that broadcasts one scale per output channel (dim 0) over `q`."""
    return (scale.numel(), *([1] * (q.dim() - 1)))


def unpack_state_dict(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float state dict from the packed one: `<name>.q` int8 times `<name>.scale` becomes `<name>`.

    The float32 multiplication is exactly the one the packing script checked bit for bit, so the
    result is the original tensor; it runs once per tensor, vectorised (a few ms for the whole model).
    Tensors without the `.q`/`.scale` pair pass through unchanged. Shared with the packing script so
    that the two cannot drift apart.
    """
    state: dict[str, torch.Tensor] = {}
    for key, tensor in packed.items():
        if key.endswith(SCALE_SUFFIX) and key[: -len(SCALE_SUFFIX)] + Q_SUFFIX in packed:
            continue  # consumed with its `.q` partner
        if not key.endswith(Q_SUFFIX):
            state[key] = tensor
            continue
        name = key[: -len(Q_SUFFIX)]
        scale = packed.get(name + SCALE_SUFFIX)
        if scale is None or tensor.dtype != torch.int8 or scale.dtype != torch.float32:
            raise BackboneError(
                f"The built-in weights are damaged: {key!r} has no float32 scale or is not int8.",
                hint="Reinstall tlearn.",
            )
        state[name] = tensor.to(torch.float32) * scale.view(_scale_shape(scale, tensor))
    return state


def builtin_state_dict(*, with_classifier: bool = True, verify: bool = False) -> dict[str, torch.Tensor]:
    """The built-in float32 state dict for `timm.create_model("mobilenetv2_100", pad_type="same")`.

    Bit-identical to the original float file. It includes the 1000-class ImageNet classifier
    (`classifier.weight`, `classifier.bias`); pass `with_classifier=False` to drop it for a model
    built with `num_classes=0` and loaded with `strict=True`. `verify=True` also checks the digest
    recorded in the sidecar (about 30 ms more), for callers that want proof rather than trust.
    """
    with resources.as_file(_data_dir() / WEIGHTS_FILE) as path:
        packed = load_file(str(path))
    state = unpack_state_dict(packed)
    if verify:
        expected = builtin_sidecar()["float_sha256"]
        if float_digest(state) != expected:
            raise BackboneError("The built-in weights do not match their recorded digest.", hint="Reinstall tlearn.")
    if not with_classifier:
        prefix = str(builtin_sidecar()["pretrained_cfg"]["classifier"]) + "."
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return state


def float_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict's names, dtypes, shapes and bytes, independent of file format.

    A file's own hash changes when the same tensors are stored differently (packed, reordered,
    other metadata); this one does not, so it proves that restored tensors are the original ones.
    Fixed procedure: for each key in sorted order, feed
    `key.encode("utf-8") + b"\\0" + str(dtype).encode() + b"\\0" + ",".join(map(str, shape)).encode() + b"\\0"`
    (dtype as torch spells it, e.g. "torch.float32"; a 0-dim tensor has an empty shape string),
    then the tensor's raw bytes in C-contiguous order and the machine's (little-endian) byte order.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        shape = ",".join(str(d) for d in tensor.shape)
        digest.update(f"{key}\0{tensor.dtype}\0{shape}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def builtin_weights_id() -> str:
    """A short identifier of the built-in weights' content, for cache keys: changes iff the floats change."""
    return f"builtin:{BUILTIN_NAME}:{builtin_sidecar()['float_sha256'][:16]}"
