"""Zeroed float32 tables for embeddings and their Adam moments, on huge pages.

A training step reads and writes a few thousand random rows of tables that
reach gigabytes, and on 4 KiB pages nearly every row costs a TLB miss. Linux
backs memory advised MADV_HUGEPAGE with 2 MiB pages (this machine's
transparent huge pages are "madvise" only): at two million products that
took the fused step from 3.0M to 4.2M samples/s. Small tables, and systems
without the advice, get plain ``torch.zeros``.
"""

from __future__ import annotations

import contextlib
import math
import mmap

import torch

HUGE_PAGES_FROM = 32 << 20  # bytes; below this a table fits the TLB's reach anyway


def zeros(*shape: int) -> torch.Tensor:
    """A zeroed float32 tensor of ``shape``, on huge pages when large."""
    size = math.prod(shape) * 4
    if size < HUGE_PAGES_FROM or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.zeros(*shape)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # a kernel without transparent huge pages: 4 KiB pages
        memory.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(memory, dtype=torch.float32).view(*shape)  # anonymous memory is zero
