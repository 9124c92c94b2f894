"""Numeric precision: bf16 / fp16 autocast where it is native and helps, fp32 elsewhere.

Frozen layers may run in bf16 on CPUs that have native bf16 kernels (emulated bf16 is slower); on a
GPU, training runs in mixed precision (bf16 where supported, else fp16 with a gradient scaler).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def bf16_supported() -> bool:
    """Does this CPU run bfloat16 matrix kernels natively (AVX-512 BF16 / AMX)? Emulated bf16 is slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(precision: str, device: torch.device | None = None) -> contextlib.AbstractContextManager[Any]:
    """Reduced precision for frozen layers: "bf16", or "auto" (on the CPU, bf16 where it is native; on a
    GPU, bf16 where supported, else fp16); "fp32" runs in full precision."""
    if device is not None and device.type == "cuda":
        dtype = cuda_dtype(precision)
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    on = precision == "bf16" or (precision == "auto" and bf16_supported())
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


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
