"""The training step's thread count (torch's intra-op threads, a kernel step's lanes),
chosen from measured step times.

torch runs its operators on an OpenMP team whose threads spin at every
barrier. On a quiet 2-core machine a second thread speeds the training step
by about half. Beside other busy processes, a team member that loses its
core leaves the other spinning at each of a step's barriers until the
scheduler brings it back: measured here, the trainer then ran 3 to 25 times
slower than on one thread. OMP_WAIT_POLICY=passive (sleep at barriers
instead of spinning) removed the collapse, which confirms the cause, but
cost a third of the quiet speed. So the trainer measures instead: it runs
windows of steps at its current count and, now and then, a short trial at
the other, and keeps whichever moves more samples a second. A window that
runs far slower than the current count did before ends at once, and so does
a trial as soon as it is clearly losing (1.5 times slower). Trials that lose
come ever more rarely, and never sooner than the time they cost allows
(BUDGET): a step on two threads beside spinning processes can take 14 times
as long, so even a one-step trial is costly; the time it lost sets how long
the next one waits. So the cost of looking stays small both when the machine
is quiet and when it is busy.

The step gives the same bits at any thread count (its products and sums run
along one row at a time; tested), so the choice changes only the speed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch

WINDOW = 32  # steps between decisions
TRIAL = 8  # steps of a trial of the other count
MAX_WAIT = 64  # windows between trials at most, after trials that lost
GAIN = 1.05  # a trial must beat the current count by this much to replace it
COLLAPSE = 3.0  # running this many times slower than before ends a window early
GIVE_UP = 1.5  # a trial this many times slower than the current count ends early: it lost
BUDGET = 0.02  # the share of the time that losing trials may cost, at most


class ThreadTuner:
    """Call :meth:`step_done` after each step; it sets torch's thread count.

    ``fixed`` 0 tries one thread and torch's own count (the cores it may use);
    another value runs that many threads throughout. It starts on one thread,
    which cannot collapse, and tries the other after a first window of TRIAL steps.
    """

    def __init__(self, fixed: int = 0, apply: Callable[[int], None] | None = None):
        # sets the thread count: torch's, and a kernel step's lanes
        self.apply = apply or (lambda count: torch.set_num_threads(count))
        self.counts = [fixed] if fixed else sorted({1, torch.get_num_threads()})
        self.current = self.threads = self.counts[0]
        self.rate: dict[int, float] = {}  # samples a second, last measured per count
        self.wait = self.windows = 1  # windows between trials, and since the last
        self.history: list[tuple[int, int]] = []  # (threads, samples/s) per window or trial
        self.steps_at = dict.fromkeys(self.counts, 0)  # steps run at each count
        self._begin(self.current, TRIAL)  # a short first look at one thread

    def step_done(self, samples: int) -> None:
        """Count a finished step of ``samples``; end a window or trial when due."""
        self.steps_at[self.threads] += 1
        if len(self.counts) == 1:
            return
        self.samples += samples
        self.steps += 1
        elapsed = time.perf_counter() - self.started
        known = self.rate.get(self.current)
        limit = COLLAPSE if self.threads == self.current else GIVE_UP
        collapsed = known is not None and elapsed > limit * self.samples / known
        if self.steps >= self.length or collapsed:
            self._end(self.samples / elapsed, collapsed)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the block's time out of the window or trial under way.

        Learning-curve points and checkpoints run between steps; counted, they
        would make whichever count happened to be running look slower.
        """
        paused_at = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - paused_at

    def _end(self, rate: float, collapsed: bool) -> None:
        threads = self.threads
        self.rate[threads] = rate
        self.history.append((threads, round(rate)))
        if threads != self.current:  # a trial
            known = self.rate[self.current]
            if rate > GAIN * known:
                self.current, self.wait = threads, 1
            else:
                lost = self.samples / rate - self.samples / known  # seconds
                window = WINDOW * self.samples / self.steps / known  # seconds
                affordable = math.ceil(lost / BUDGET / window)
                self.wait = min(max(2 * self.wait, affordable), MAX_WAIT)
            self.windows = 0
        else:
            self.windows += 1
        if collapsed and threads == self.current > self.counts[0]:
            self.windows = self.wait  # the machine got busier: look at one thread now
        if self.windows >= self.wait:
            self._begin(next(c for c in self.counts if c != self.current), TRIAL)
        else:
            self._begin(self.current, WINDOW)

    def _begin(self, threads: int, steps: int) -> None:
        self.apply(threads)
        self.threads, self.length = threads, steps
        self.samples, self.steps, self.started = 0, 0, time.perf_counter()
