"""The skeleton every stage shares: one run, from its leftovers to its stats file.

A stage opens ``with StageRun(folder, STATS) as run:``, which removes the
temporaries killed runs left in ``folder`` and starts the clock. Inside,
``run.output(name)`` gives a temporary path for an output file and
``run.work(name)`` a work folder; when the block ends without an error, every
output is renamed into place (the last taken first) and then the stats given
to ``run.finish`` are written, with the peak RSS, as the stats JSON: the file
make waits for, so it exists only for a run whose outputs all do. On an error
the temporaries are removed and no output or stats file is written.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from pipeline.files import atomic_output, clear_stale_temporaries, temporary_folder, write_json
from pipeline.memory import peak_rss_mb


class StageRun:
    """One run of a stage writing into ``folder``, its stats last as ``stats_name``."""

    def __init__(self, folder: str | os.PathLike, stats_name: str):
        self.folder, self.stats_name = Path(folder), stats_name
        self.stats: dict | None = None
        self._files = contextlib.ExitStack()

    def __enter__(self) -> StageRun:
        clear_stale_temporaries(self.folder)
        self.started = time.perf_counter()
        self._files.__enter__()
        return self

    def __exit__(self, *failure) -> bool:
        self._files.__exit__(*failure)  # renames the outputs, or removes them on an error
        if failure[0] is None and self.stats is not None:
            write_json(self.folder / self.stats_name, self.stats)
        return False

    def output(self, name: str) -> Path:
        """The temporary path of output ``name``, renamed into place when the run ends."""
        return self._files.enter_context(atomic_output(self.folder / name))

    def work(self, name: str) -> Path:
        """A work folder, named as a temporary, removed when the run ends."""
        return self._files.enter_context(temporary_folder(self.folder / name))

    @property
    def seconds(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.started

    def finish(self, stats: dict) -> dict:
        """Keep ``stats``, with the peak RSS now, to write once the outputs are in place."""
        self.stats = {**stats, "peak_rss_mb": peak_rss_mb()}
        return self.stats
