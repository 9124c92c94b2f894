"""Numeric precision: on a GPU, training steps run in mixed precision (bf16 where supported, else fp16
with a gradient scaler); everything else runs in float32.

Frozen layers compute in float32 everywhere, as the saved model does: what a head or the top stages
learn from is then what the bundle computes at prediction time (a frozen bottom in bf16 made the
fine-tuned top score up to 6 points lower in the bundle than in training).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def cuda_dtype(precision: str) -> torch.dtype | None:
    """The autocast type on a GPU: None for "fp32"; bf16 where the GPU has it, else fp16 (with a grad scaler)."""
    if precision == "fp32":
        return None
    return torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16


def train_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for training steps: on a GPU bf16 (or fp16) unless --precision fp32; on the CPU none."""
    dtype = cuda_dtype(precision) if device.type == "cuda" else None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler where training runs in fp16 (a GPU without bf16); None elsewhere."""
    if device.type == "cuda" and cuda_dtype(precision) == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None
