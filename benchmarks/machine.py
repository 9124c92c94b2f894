"""What every benchmark records of the machine it ran on: absolute figures are that machine's."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from tlearn.core.threads import cpu_flags

# The widest SIMD a CPU has, widest first: int8 kernels need VNNI to pay, and float kernels run wider with AVX-512.
SIMD = (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX2 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def machine() -> str:
    """The CPU's model name, its widest SIMD and the cores this process may use, e.g. "AMD EPYC, AVX2, 2 cores"."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = cpu_flags() or frozenset()
    simd = next((label for flag, label in SIMD if flag in flags), None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ", ".join(p for p in (name or platform.processor() or platform.machine(), simd, f"{cores} cores") if p)
