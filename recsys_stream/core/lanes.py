"""Run a kernel phase over the fixed lanes of a batch, on one thread or two.

A kernel step (``core.kernels``) splits each phase's work into LANES fixed
shares; this runs them on the thread count the thread tuner sets. The
shares and the order their results are combined in never change, so the
count changes the speed only. The kernels release the GIL; a phase's
threads meet by joining a future (the waiting thread sleeps, it never spins,
so a busy machine costs a two-thread step no more than its context
switches, and the tuner falls back to one thread where that is faster).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from recsys_stream.core.kernels import LANES

Result = TypeVar("Result")


class Lanes:
    """The lanes of a kernel step; ``threads`` (1 to LANES) run them."""

    def __init__(self) -> None:
        self.threads = 1
        self._pool: ThreadPoolExecutor | None = None

    def set_threads(self, threads: int) -> None:
        self.threads = max(1, min(threads, LANES))

    def run(self, work: Callable[[int, int, int], Result], size: int) -> list[Result]:
        """``work(lane, begin, end)`` over each lane's share of ``range(size)``, in lane order."""
        bounds = [size * lane // LANES for lane in range(LANES + 1)]
        if self.threads == 1:
            return [work(lane, bounds[lane], bounds[lane + 1]) for lane in range(LANES)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(LANES - 1, thread_name_prefix="lane")
        futures = [
            self._pool.submit(work, lane, bounds[lane], bounds[lane + 1])
            for lane in range(1, LANES)
        ]
        first = work(0, bounds[0], bounds[1])
        return [first, *(future.result() for future in futures)]
