"""What an end-to-end phase trains: the unfrozen stages with discriminative learning rates, and the head.

The optimizer is built anew in the phase that uses it, because what trains changes between phases
(the Keras guide's "recompile after changing trainable", made explicit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tlearn.core import distributed
from tlearn.core.precision import grad_scaler
from tlearn.models.backbones import Stage
from tlearn.models.classifier import Classifier
from tlearn.training.config import FinetuneConfig
from tlearn.training.epoch import Step
from tlearn.training.schedules import make_scheduler


def param_groups(
    classifier: Classifier, stages: Sequence[Stage], *, lr: float, decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """One group per unfrozen stage (the last at `lr`, each earlier one x`decay`), the head at `lr`.

    Biases and normalisation weights get no weight decay (the usual AdamW practice). Everything not
    in a group is frozen (requires_grad False).
    """
    named = dict(classifier.trunk.backbone.named_parameters())
    for p in classifier.parameters():
        p.requires_grad_(False)
    groups: list[dict[str, Any]] = []
    for depth, stage in enumerate(reversed(stages)):
        params = [named[n] for n in stage.params if n in named]
        groups += _split_decay(params, lr=lr * decay**depth, weight_decay=weight_decay, name=stage.name)
    groups += _split_decay(list(classifier.head.parameters()), lr=lr, weight_decay=weight_decay, name="head")
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def _split_decay(params: list[nn.Parameter], *, lr: float, weight_decay: float, name: str) -> list[dict[str, Any]]:
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name} (no decay)"})
    return groups


def make_step(
    net: nn.Module,
    groups: list[dict[str, Any]] | list[nn.Parameter],
    ft: FinetuneConfig,
    *,
    train_modules: Sequence[nn.Module],
    epochs: int,
    steps_per_epoch: int,
    class_weight: torch.Tensor | None,
    precision: str = "fp32",
    lr: float | None = None,
) -> Step:
    """AdamW over `groups` (parameter groups, or plain parameters at `lr`), its schedule over `epochs`,
    the gradient scaler where fp16 needs one, and the class weights on the training device."""
    optimizer = (
        torch.optim.AdamW(groups, lr=lr, weight_decay=ft.weight_decay) if lr is not None else torch.optim.AdamW(groups)
    )
    scheduler = make_scheduler(
        optimizer,
        ft.schedule,
        epochs=epochs,
        steps_per_epoch=max(1, steps_per_epoch),
        warmup_epochs=ft.warmup_epochs,
        decay_after=ft.decay_after,
    )
    dev = distributed.device()
    return Step(
        net=net,
        train_modules=tuple(train_modules),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=grad_scaler(precision, dev),
        weight=class_weight.to(dev) if class_weight is not None else None,
        label_smoothing=ft.label_smoothing,
        precision=precision,
    )
