"""The `tlearn` process and Python's garbage collector: what the imports make is never scanned again.

Importing torch, timm, torchvision, scikit-learn and scipy makes about 450,000 objects (modules,
functions, classes) that live as long as the process, and Python's collector scans every one of them
at each full collection. In `tlearn train demo` that was 8 full collections (2.0 s of a 12 s command
on a loaded 2-core machine, most of them while the imports ran, the heap growing by a quarter each
time), and then 1.4 s at exit, where the interpreter collects again while it tears the modules down.

`long_lived()` runs a command's imports with the collector off, then freezes what exists (`gc.freeze`:
it stays in memory and is never scanned); everything made later is collected as usual. At exit the
heap is frozen again: the operating system takes the memory back without Python walking it.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_exit_registered = False


@contextmanager
def long_lived() -> Iterator[None]:
    """Imports inside the block run without collections; what exists at its end is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def no_collection_at_exit() -> None:
    """Freeze the heap when the interpreter exits (once per process), before it tears the modules down."""
    global _exit_registered
    if not _exit_registered:
        atexit.register(gc.freeze)
        _exit_registered = True
