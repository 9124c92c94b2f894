"""Memory freed by a decode goes back to the system, so a server's size follows its work, not its history.

glibc's malloc serves blocks of 128 KB and more from their own mappings, which it unmaps when they are
freed; but after the first such free it raises that threshold to the block's size (up to 32 MB), so
Pillow's 16 MB image blocks then come from the heap, where freed memory mostly stays with the process.
Decodes that follow each other on a worker thread then pile up: four 49 MP PNGs in a row took a
server from 0.76 to 2.9 GB and left it at 1.8 GB, where one at a time needs 2.1 GB and gives it all
back. Fixing the threshold at 4 MB (which also turns its raising off) keeps every image-sized block
in a mapping of its own; smaller allocations, the network's among them, are served as before.
Measured with no change in requests per second.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD = 4 * 1024 * 1024


def return_freed_memory() -> bool:
    """Set glibc's mmap threshold for this process (see the module docstring); True if it was set.

    A no-op elsewhere (macOS, Windows, musl): their allocators return large blocks by themselves or
    take no such setting.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.info("mallopt(M_MMAP_THRESHOLD) was refused: freed image memory may stay with the process")
    return done
