"""A finished run, loaded once: its model.pt says its kind, and its kind how to load it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from torch import nn

from pipeline.errors import PipelineError
from recsys_stream.core import lineage, runs
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.tasks import task_class


class TrainedRun(NamedTuple):
    """A finished run: its model in eval mode, its config and model.pt's metadata."""

    model: nn.Module
    config: TrainConfig
    saved: dict

    @property
    def kind(self) -> str:
        return runs.saved_kind(self.saved, self.config)


def load_run(run: str | os.PathLike, current: bool = False) -> TrainedRun:
    """``run``'s model, config and metadata, read once. ``current``: first refuse, in one
    line, a run whose stage files were rerun since it trained (``lineage``)."""
    path = Path(run) / runs.MODEL
    if not path.is_file():
        raise PipelineError(f"{path}: not found (it is made by `python -m recsys_stream train`)")
    saved = runs.load_torch(path)
    config = TrainConfig.from_dict(saved["config"])
    if current:
        lineage.require_current(run, saved)
    model = task_class(runs.saved_kind(saved, config)).load(Path(run), saved, config)
    return TrainedRun(model, config, saved)
