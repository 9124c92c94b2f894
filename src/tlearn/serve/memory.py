"""Memory freed by a large decode goes back to the system, so a server's size follows its work, not its history.

glibc's malloc serves blocks of 128 KB and more from their own mappings, which it unmaps when they are
freed; but after the first such free it raises that threshold to the block's size (up to 32 MB), so
Pillow's 16 MB image blocks then come from the heap, where freed memory mostly stays with the process.
Decodes that follow each other on a worker thread then pile up: four 49 MP PNGs in a row took a
server from 0.76 to 2.9 GB and left it at 1.8 GB, where one at a time needs 2.1 GB and gives it all
back. So after each decode of an image over TRIM_PIXELS (as decoded: a JPEG at its reduced scale) the
server asks glibc to give its free memory back (`malloc_trim`, `core/malloc.py` `give_back_freed_memory`):
measured, 0.4 to 15 ms after a 9 MP PNG, and nothing is kept of eight such decodes in a row.

It used to fix the mapping threshold at 4 MB instead, for the whole process. That also gave every tensor
of 4 MB or more a mapping of its own, and eager PyTorch allocates each layer's activations afresh (10 to
30 MB each for the demo's MobileNetV2 at 288 px): every layer then mapped, faulted in and unmapped its
memory, and the PyTorch engine served 2.5 to 4 times fewer requests (measured in one process, alternating:
2.2 and 5.3 requests/s against 8.8 and 14.3 at 8 clients, on a loaded machine). ONNX Runtime keeps an
arena of its own and was not affected. The CLI now fixes the threshold at 32 MB, glibc's most, for every
command (`core/malloc.py`): layers' blocks are reused, and these trims give the pixels back.
"""

from __future__ import annotations

# Decoded pixels past which a decode's memory is given back at once: a 1 MP RGB image holds 3 MB, four
# times what a phone photo decoded at reduced scale for a 288 px model does; trimming after those would
# cost more than the memory they leave.
TRIM_PIXELS = 1_000_000
