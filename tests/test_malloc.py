"""`keep_tensor_memory`: blocks of a network's layer sizes are reused, not mapped and faulted in anew."""

from __future__ import annotations

import subprocess
import sys

import pytest

LAYERS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from tlearn.core.malloc import keep_tensor_memory
    assert keep_tensor_memory()
sizes = np.random.default_rng(0).integers(1 << 20, 30 << 20, 200)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
live = []
for size in sizes:  # as a network's layers: each output made, an older one freed
    live.append(np.ones(int(size) // 8))
    if len(live) > 2:
        live.pop(0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", LAYERS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_layer_sized_blocks_fault_in_a_third_of_the_pages_or_fewer_once_tensor_memory_is_kept() -> None:
    default, kept = faults("default"), faults("keep")
    assert kept * 3 < default, (kept, default)  # measured: 3,833 against 36,207


def test_the_cli_keeps_tensor_memory_from_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import tlearn.cli

    calls: list[int] = []
    monkeypatch.setattr(tlearn.cli, "keep_tensor_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["tlearn", "--version"])
    with pytest.raises(SystemExit):
        tlearn.cli.main()
    assert calls == [1]
