"""CPU speed of the default backbone (DINOv2 ViT-S/14 at 224 px) against the built-in MobileNetV2, in one process.

    flock /tmp/tlearn-heavy.lock python -m benchmarks.vit_speed [--images 96] [--steps 3]

The default's weights cannot be downloaded offline, and speed does not depend on their values: the ViT
is built with random weights, the MobileNetV2 is the built-in one. Both run at 224 px, batch 32, in
the way tlearn runs them:
- features: the frozen network once per image, eager PyTorch (channels-last, inference mode) and ONNX
  Runtime (what `extract_features` uses on a CPU where the pixels repay the export); the export is not timed;
- fine-tuning, default (`--unfreeze 2`): the frozen bottom below the cut once per image and view (as
  fine-tuning runs it: float32, ONNX Runtime on a CPU), then one AdamW step of the last two stages and the head on
  the cached activations;
- fine-tuning, whole network (`--unfreeze all`): one AdamW step of everything (BatchNorm frozen).
Prints images per second and the ViT's slowdown, and writes benchmarks/results/vit_speed.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlearn.models.backbones import BUILTIN_NAME, DEFAULT_BACKBONE, Backbone, create_backbone, set_train_mode_frozen_bn
from tlearn.models.classifier import FeatureTrunk, Normalize
from tlearn.models.cut import cut_trunk, frozen, top_input
from tlearn.training.features import Runner
from tlearn.training.top_phase import bottom_runner

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
CLASSES = 10


def timed(step: Callable[[], Any], repeats: int) -> float:
    """Seconds per call of `step`, after one warm-up call (the median of `repeats`)."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def train_step(net: nn.Module, params: list[nn.Parameter], x: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    y = torch.arange(len(x)) % CLASSES

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    return step


def measure(backbone: Backbone, *, images: int, steps: int) -> dict[str, float]:
    size = backbone.preprocessing.input_size
    prep = backbone.preprocessing
    x = torch.rand(BATCH, 3, *size).contiguous(memory_format=torch.channels_last)
    batches = max(1, images // BATCH)
    embed = nn.Sequential(Normalize(prep.mean, prep.std), FeatureTrunk(backbone.model)).eval()
    out: dict[str, float] = {}
    for engine in ("torch", "onnx"):
        runner = Runner(embed, engine)
        out[f"features_{engine}"] = BATCH / timed(lambda r=runner: r(x), batches)  # type: ignore[misc]

    head = nn.Linear(backbone.num_features, CLASSES)
    trunk = FeatureTrunk(backbone.model)
    cut = cut_trunk(trunk, backbone.stages[-2:], input_size=size)
    assert cut is not None, f"{backbone.name} has no cut below its last two stages"
    bottom = bottom_runner(cut, prep)  # as fine-tuning runs it: float32, ONNX Runtime on a CPU
    with frozen(trunk):
        acts = top_input(torch.from_numpy(bottom(x.contiguous())))  # the first call exports it: not timed
    out["bottom"] = BATCH / timed(lambda: bottom(x.contiguous()), batches)
    # What trains: the parameters of the last two stages (as --unfreeze 2 names them) and the head.
    unfrozen = {name for stage in backbone.stages[-2:] for name in stage.params}
    for name, p in backbone.model.named_parameters():
        p.requires_grad_(name in unfrozen)
    top = nn.Sequential(cut.top, head)
    set_train_mode_frozen_bn(top)
    top_params = [p for p in top.parameters() if p.requires_grad]
    out["top2_step"] = BATCH / timed(train_step(top, top_params, acts), steps)

    for p in backbone.model.parameters():
        p.requires_grad_(True)
    whole = nn.Sequential(Normalize(prep.mean, prep.std), trunk, head)
    set_train_mode_frozen_bn(whole)
    out["whole_step"] = BATCH / timed(train_step(whole, list(whole.parameters()), x), steps)
    out["activation_kb"] = acts[0].numel() * 2 / 1024  # cached as float16, per image and view
    out["cut"] = float(cut.index)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="images timed per feature engine (batches of 32)")
    parser.add_argument("--steps", type=int, default=3, help="training steps of batch 32 timed per kind")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "vit_speed.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    nets = {
        "DINOv2 ViT-S/14": create_backbone(DEFAULT_BACKBONE, weights="none", warn_random=False),
        "MobileNetV2": create_backbone(BUILTIN_NAME),
    }
    rows = {name: measure(b, images=args.images, steps=args.steps) for name, b in nets.items()}
    vit, mnv2 = rows["DINOv2 ViT-S/14"], rows["MobileNetV2"]
    labels = {
        "features_torch": "features, PyTorch (img/s)",
        "features_onnx": "features, ONNX Runtime (img/s)",
        "bottom": "fine-tune: frozen bottom, once per view (img/s)",
        "top2_step": "fine-tune: step of the last 2 stages (img/s)",
        "whole_step": "fine-tune: step of the whole network (img/s)",
    }
    print(f"224 px, batch {BATCH}, {torch.get_num_threads()} threads")
    print(f"{'':50} {'ViT-S/14':>9} {'MNv2':>9} {'ratio':>7}")
    for key, label in labels.items():
        print(f"{label:50} {vit[key]:9.1f} {mnv2[key]:9.1f} {mnv2[key] / vit[key]:6.1f}x")
    print(f"{'cached activation per image and view (KB)':50} {vit['activation_kb']:9.0f} {mnv2['activation_kb']:9.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {"input_size": 224, "batch": BATCH, "threads": torch.get_num_threads(), **rows}
    args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
