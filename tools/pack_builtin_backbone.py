"""Pack the built-in MobileNetV2 into the package: int8 + per-channel scales, restored bit for bit.

    python tools/pack_builtin_backbone.py [--src ../shared/weights/mobilenetv2_100.tf_in1k.safetensors]

The source is a float32 timm state dict converted from TensorFlow Lite's int8 MobileNetV2, so every
convolution and linear weight is exactly `int8 * scale[out_channel]` in float32. This script finds
those int8 values and scales, proves that `q.float() * scale` gives back every original bit, and
writes into `src/tlearn/models/builtin/`:

    mobilenetv2_100.tf_in1k.int8.safetensors   `<name>.q` int8 + `<name>.scale` float32, the rest as is
    mobilenetv2_100.tf_in1k.json               sidecar: how to build the model, preprocessing, provenance,
                                               and the digest of the float tensors (`float_digest`)
    NOTICE.md                                  where the weights come from and how they were repacked

`LICENSE` (the Apache License 2.0, unchanged) must already be there; the script checks its hash.
Nothing is written unless the restored state dict is bit-identical to the source, and the written
file is read back and checked again. Needs tlearn installed (the dev venv has it editable): the
restoring code and the digest are the package's own, so the script and the package cannot disagree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tlearn.models.builtin import (
    BUILTIN_ARCH,
    BUILTIN_NAME,
    Q_SUFFIX,
    SCALE_SUFFIX,
    SIDECAR_FILE,
    WEIGHTS_FILE,
    float_digest,
    unpack_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "src" / "tlearn" / "models" / "builtin"
DEFAULT_SRC = ROOT.parent / "shared" / "weights" / f"{BUILTIN_NAME}.safetensors"
MAX_SHIPPED_BYTES = 5_000_000
# SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the licence text as the ASF publishes it.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
NEIGHBOUR_STEPS = 2  # float32 neighbours of each candidate scale tried on either side
FORMAT = "int8 per-output-channel: name.q int8, name.scale float32; other tensors as stored"
DIGEST_METHOD = (
    "tlearn.models.builtin.float_digest: SHA-256 over the keys in sorted order; for each key, "
    "key (UTF-8) NUL dtype (torch spelling, e.g. 'torch.float32') NUL shape (comma-separated, '' for 0-dim) NUL, "
    "then the tensor's raw C-contiguous little-endian bytes"
)


@dataclass(frozen=True)
class Quantized:
    """A float32 tensor as int8 values (same shape) and one float32 scale per output channel (dim 0)."""

    q: torch.Tensor
    scale: torch.Tensor


@dataclass(frozen=True)
class PackResult:
    """The tensors to write, and which names went int8 and which stayed as they were."""

    packed: dict[str, torch.Tensor]
    quantized: tuple[str, ...]
    as_is: tuple[str, ...]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so -0.0 differs from 0.0 and NaN payloads count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def try_scale(w2: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values for rows `w2` (C, K) at `scale` (C,), and which rows restore bit for bit.

    A zero scale (an all-zero channel) divides by one instead, giving q = 0; the check decides.
    """
    valid = torch.isfinite(scale) & (scale >= 0)
    divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
    qf = torch.round(w2 / divisor[:, None])
    in_range = ((qf >= -128) & (qf <= 127)).all(dim=1)
    q = qf.clamp(-128, 127).to(torch.int8)
    restored = q.to(torch.float32) * scale[:, None]
    exact = (restored.view(torch.int32) == w2.view(torch.int32)).all(dim=1)
    return q, valid & in_range & exact


def candidate_scales(absmax: torch.Tensor) -> Iterator[torch.Tensor]:
    """Scales to try per channel, most likely first.

    TF's symmetric scheme gives scale = max|w| / 127; a channel whose largest |q| is not 127 (or is
    128) has scale = max|w| / d for another d, and float32 rounding of the division may land an ulp
    or two away from the scale that was used, so each candidate's neighbours are tried as well.
    An all-zero channel gets 0 from the first candidate.
    """
    up, down = torch.tensor(math.inf), torch.tensor(0.0)
    for d in (127, 128, *range(126, 0, -1)):
        base = absmax / d
        yield base
        above, below = base, base
        for _ in range(NEIGHBOUR_STEPS):
            above, below = torch.nextafter(above, up), torch.nextafter(below, down)
            yield above
            yield below


def quantize_exact(w: torch.Tensor) -> Quantized | None:
    """`w` as int8 x per-output-channel scale if that restores every bit, else None (store it as is)."""
    if w.dtype != torch.float32 or w.dim() < 2 or w.shape[0] == 0 or w[0].numel() < 2:
        return None  # nothing to gain for vectors and tiny rows (one scale per element)
    if not torch.isfinite(w).all():
        return None
    w2 = w.contiguous().reshape(w.shape[0], -1)
    q = torch.zeros(w2.shape, dtype=torch.int8)
    scale = torch.full((w2.shape[0],), math.nan, dtype=torch.float32)
    todo = torch.ones(w2.shape[0], dtype=torch.bool)
    for candidate in candidate_scales(w2.abs().amax(dim=1)):
        rows = todo.nonzero().squeeze(1)
        q_rows, exact = try_scale(w2[rows], candidate[rows])
        hit = rows[exact]
        q[hit], scale[hit], todo[hit] = q_rows[exact], candidate[hit], False
        if not todo.any():
            break
    if todo.any():
        return None
    result = Quantized(q.reshape(w.shape).contiguous(), scale.contiguous())
    restored = unpack_state_dict({"w" + Q_SUFFIX: result.q, "w" + SCALE_SUFFIX: result.scale})["w"]
    return result if bits_equal(restored, w) else None


def pack_state_dict(state: dict[str, torch.Tensor]) -> PackResult:
    clashes = [k for k in state if k.endswith((Q_SUFFIX, SCALE_SUFFIX))]
    if clashes:
        raise SystemExit(f"Names that the packed format reserves: {clashes}")
    packed: dict[str, torch.Tensor] = {}
    quantized: list[str] = []
    as_is: list[str] = []
    for key in sorted(state):
        found = quantize_exact(state[key])
        if found is None:
            packed[key] = state[key].contiguous()
            as_is.append(key)
        else:
            packed[key + Q_SUFFIX], packed[key + SCALE_SUFFIX] = found.q, found.scale
            quantized.append(key)
    return PackResult(packed, tuple(quantized), tuple(as_is))


def check_restores(original: dict[str, torch.Tensor], restored: dict[str, torch.Tensor], digest: str) -> None:
    """Stop unless `restored` is `original` bit for bit (keys, dtypes, shapes, bytes) with `digest`."""
    if set(original) != set(restored):
        raise SystemExit(f"Keys differ: {sorted(set(original) ^ set(restored))[:10]}")
    wrong = [k for k in original if not bits_equal(original[k], restored[k])]
    if wrong:
        raise SystemExit(f"{len(wrong)} tensors do not restore bit for bit: {wrong[:10]}")
    if float_digest(restored) != digest:
        raise SystemExit("The restored state dict's digest differs from the original's.")


def check_timm_fits(state: dict[str, torch.Tensor], create_kwargs: dict[str, Any]) -> None:
    """The state dict loads with strict=True into the timm model the sidecar describes."""
    import timm

    model = timm.create_model(BUILTIN_ARCH, pretrained=False, **create_kwargs)
    model.load_state_dict(state, strict=True)


def sidecar(shared: dict[str, Any], src: Path, result: PackResult, digest: str, weights_sha: str) -> dict[str, Any]:
    cfg = dict(shared["pretrained_cfg"])
    cfg["license"] = shared["license"]["timm_license_tag"]
    classifier = cfg["classifier"]
    return {
        "name": BUILTIN_NAME,
        "architecture": shared["architecture"],
        "tag": shared["tag"],
        "create_model_kwargs": {"pad_type": "same"},
        "included_classifier": {
            "included": True,
            "keys": [k for k in sorted(unpack_state_dict(result.packed)) if k.startswith(classifier + ".")],
            "num_classes": cfg["num_classes"],
            "note": (
                "tlearn builds the model without a classifier (num_classes=0); the file still holds the "
                "1000-class ImageNet classifier, which may be dropped (builtin_state_dict(with_classifier=False)) "
                "or kept by building the model with num_classes=1000 (ImageNet class i is line i + 1 of the "
                "TF-slim labels, whose line 0 is 'background'; the labels are not shipped)."
            ),
        },
        "pretrained_cfg": cfg,
        "preprocessing_notes": shared.get("preprocessing_notes", ""),
        "num_parameters": shared.get("num_parameters"),
        "format": FORMAT,
        "weights_file": WEIGHTS_FILE,
        "weights_file_sha256": weights_sha,
        "float_sha256": digest,
        "float_sha256_method": DIGEST_METHOD,
        "provenance": {
            "source": shared["source"],
            "license": shared["license"],
            "conversion": shared["conversion"],
            "verification": shared["verification"],
            "float_file": {
                "name": src.name,
                "safetensors_sha256": shared["safetensors_sha256"],
                "size_bytes": src.stat().st_size,
            },
            "repacking": {
                "tool": "tools/pack_builtin_backbone.py",
                "note": (
                    "The float32 file above was repacked losslessly: every tensor that is exactly int8 x one "
                    "float32 scale per output channel is stored as name.q (int8) and name.scale (float32), "
                    "the others as they were; q.float() * scale restores every float bit for bit, which "
                    "float_sha256 (equal to the float file's) proves."
                ),
                "int8_tensors": len(result.quantized),
                "stored_as_is": len(result.as_is),
                "bit_exact": True,
            },
        },
    }


def notice(shared: dict[str, Any], src: Path, result: PackResult, digest: str) -> str:
    source = shared["source"]
    return f"""# Built-in backbone: {BUILTIN_NAME}

`{WEIGHTS_FILE}` holds an ImageNet-1k MobileNetV2 1.0 for timm's `{BUILTIN_ARCH}`
(`pad_type="same"`). It is licensed under the Apache License 2.0 (see `LICENSE` beside this file).

## Source

- Repository: `{source["repository"]}` (https://github.com/{source["repository"]}), Apache License 2.0
- Commit: `{source["commit"]}`
- File: `{source["file"]}` (TensorFlow Lite, int8 post-training-quantized MobileNetV2 1.0 224)
- SHA-256 of that file: `{source["sha256"]}` ({source["size_bytes"]} bytes, git blob `{source["git_blob_sha"]}`)

## Changes

1. Converted to timm's layout: the TFLite int8 weights times their per-output-channel scales became
   float32 tensors, BatchNorm is folded (weight 1, running mean 0, running variance 1 - eps, bias =
   the folded bias), and the background logit of the 1001 outputs was dropped (1000 classes). The
   float32 state dict is `{src.name}` (SHA-256 `{shared["safetensors_sha256"]}`).
2. Repacked losslessly for the package with `tools/pack_builtin_backbone.py`: {len(result.quantized)} weight
   tensors are stored as int8 values (`<name>.q`) plus one float32 scale per output channel
   (`<name>.scale`); the other {len(result.as_is)} tensors (biases, BatchNorm tensors, counters) as they were.

## Exactness

`q.float() * scale` in float32 restores every float tensor bit for bit. The digest of the restored
state dict (`tlearn.models.builtin.float_digest`: SHA-256 over sorted keys, each with its dtype,
shape and raw bytes) equals that of the float32 file:

    {digest}
"""


def write_safetensors(packed: dict[str, torch.Tensor], path: Path, digest: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # One metadata entry: safetensors writes several in random order, and the file should be reproducible.
    about = json.dumps({"name": BUILTIN_NAME, "format": FORMAT, "float_sha256": digest}, sort_keys=True)
    save_file(packed, str(tmp), metadata={"tlearn": about})
    tmp.chmod(0o644)  # safetensors creates the file private; it is shipped, so readable like the others
    tmp.replace(path)


def shipped_bytes() -> int:
    return sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="float32 state dict (.safetensors)")
    args = parser.parse_args(argv)
    src: Path = args.src
    shared = json.loads(src.with_suffix(".json").read_text(encoding="utf-8"))
    if shared["architecture"] != BUILTIN_ARCH or f"{shared['architecture']}.{shared['tag']}" != BUILTIN_NAME:
        raise SystemExit(f"{src} is not {BUILTIN_NAME}")
    if sha256_file(src) != shared["safetensors_sha256"]:
        raise SystemExit(f"{src} does not have the SHA-256 its sidecar records")
    license_file = OUT_DIR / "LICENSE"
    if not license_file.is_file() or sha256_file(license_file) != APACHE_2_SHA256:
        raise SystemExit(f"{license_file} must be the unchanged Apache License 2.0 text")

    original = load_file(str(src))
    digest = float_digest(original)
    result = pack_state_dict(original)
    check_restores(original, unpack_state_dict(result.packed), digest)
    create_kwargs = {"pad_type": "same", "num_classes": shared["pretrained_cfg"]["num_classes"]}
    check_timm_fits(unpack_state_dict(result.packed), create_kwargs)

    weights = OUT_DIR / WEIGHTS_FILE
    write_safetensors(result.packed, weights, digest)
    start = time.perf_counter()
    reread = unpack_state_dict(load_file(str(weights)))
    restore_ms = (time.perf_counter() - start) * 1000
    check_restores(original, reread, digest)

    side = sidecar(shared, src, result, digest, sha256_file(weights))
    (OUT_DIR / SIDECAR_FILE).write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
    (OUT_DIR / "NOTICE.md").write_text(notice(shared, src, result, digest), encoding="utf-8")

    total = shipped_bytes()
    print(f"int8 tensors: {len(result.quantized)}, stored as is: {len(result.as_is)}, all bit-exact")
    print(f"float_sha256: {digest}")
    print(f"{weights.name}: {weights.stat().st_size} bytes; shipped total {total} bytes (source {src.stat().st_size})")
    print(f"restore (read + unpack): {restore_ms:.1f} ms")
    if total >= MAX_SHIPPED_BYTES:
        print(f"shipped files are {total} bytes, over the {MAX_SHIPPED_BYTES} budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
