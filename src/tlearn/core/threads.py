"""How many threads torch uses for a block of work.

Small tensor operations (a linear head on 1,000 feature vectors, an L-BFGS step) finish faster on one
thread than on several: splitting them costs more than it saves, and when other programs keep the
cores busy, threads that wait for each other at every operation slow them down by an order of
magnitude (measured here: 65 ms per L-BFGS step on 2 threads under load, 0.8 ms on 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
