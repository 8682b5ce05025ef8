"""Whether a run was trained on its dataset's current stage files: its lineage, checked.

A run's model.pt records the lineage ids of the files it trained on
(``Run.identity``: pairs_id and split_id, a skip-gram run's walks_id;
ratings_id and split_id; a sequence run's ratings_id and sequences_id), and
each stage file carries its own in its Parquet metadata. A stage rerun with
other options or another seed writes new ids, and a run trained before it no
longer describes the files beside it: the report leaves it out with a note,
``similar`` and ``recommend`` refuse it. Only Parquet footers are read.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contracts import made_by, stamps
from pipeline.errors import PipelineError
from recsys_stream.core import runs
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.tasks import task_class

SHOWN = 8  # characters of an id a message shows


@dataclass(frozen=True)
class Change:
    """A stage rerun since a run trained: its id then and now, the stage files still made
    from the old one (to rerun first), and the command that trains the run again."""

    stage: str  # "pairs", "split", "walks", "ratings" or "sequences"
    trained: str
    current: str
    reruns: tuple[str, ...]  # the stale stages' commands, in stage order
    training: str

    def __str__(self) -> str:
        verb = "is" if self.stage == "split" else "are"
        return (
            f"trained on {self.stage} {_short(self.trained)}, "
            f"the current {self.stage} {verb} {_short(self.current)}"
        )

    def steps(self, training: str) -> str:
        """What to rerun: the stale stages, then ``training``."""
        stages = "".join(f"`{command}`, " for command in self.reruns)
        return f"rerun {stages}{'then ' if stages else ''}{training}"


def change(run: str | os.PathLike, saved: dict | None = None) -> Change | None:
    """What changed under ``run`` since it trained, or None.

    The first stage of the run's lineage (in stage order, its task's ``links``)
    whose file now carries another id than the one the run trained on. A file
    that is missing tells nothing and is passed over (loading the run says
    what is missing); so is a run without model.pt. ``saved``: model.pt's
    contents, when the caller has read them already.
    """
    if saved is None:
        path = Path(run) / runs.MODEL
        if not path.is_file():
            return None
        saved = runs.load_torch(path)
    config = TrainConfig.from_dict(saved["config"])
    kind = runs.saved_kind(saved, config)
    links = task_class(kind).links(runs.dataset_of(run), config)
    now = {key: _ids(file) for _, file, key in links}
    trained = {key: saved[key] for _, _, key in links if key in saved}
    last = links[-1][2]  # the id of the file the run read
    own = now[last]
    if own and own.get(last) == trained.get(last):
        # that file is the one it trained on: its stamps give the ids upstream of it
        # that the run did not record (a sequence run's split_id)
        trained = {**{key: own[key] for _, _, key in links if key in own}, **trained}
    for index, (stage, _, key) in enumerate(links):
        current = now[key].get(key)
        if current is None or trained.get(key) in (None, current):
            continue
        reruns = tuple(
            dict.fromkeys(
                made_by(file)
                for _, file, later in links[index + 1 :]
                if now[later] and now[later].get(key) != current
            )
        )
        return Change(stage, trained[key], current, reruns, _training(run, kind, config))
    return None


def require_current(run: str | os.PathLike, saved: dict | None = None) -> None:
    """Refuse, in one line naming what changed and what to rerun, a run whose stage files
    were rewritten since it trained: its ids would index other products or users, or it
    would answer for another split than the dataset's."""
    found = change(run, saved)
    if found:
        raise PipelineError(f"{run}: {found}; {found.steps(f'`{found.training}`')}")


def _ids(path: Path) -> dict[str, str]:
    """A stage file's stamps, from its footer alone; empty when there is no file."""
    if not path.is_file():
        return {}
    try:
        return stamps(pq.ParquetFile(path))
    except (OSError, pa.ArrowInvalid) as exc:
        raise PipelineError(f"{path}: not a readable Parquet file ({exc})") from None


def _training(run: str | os.PathLike, kind: str, config: TrainConfig) -> str:
    """The command that trains ``run`` again: its name, model (and task) and the
    settings that differ from its kind's defaults."""
    defaults = TrainConfig.defaults(kind, model=config.model).to_dict()
    options = {"model": config.model}  # with the task, it decides the defaults
    if kind in ("sequences", "next-item"):
        options["task"] = config.task
    options |= {key: value for key, value in config.to_dict().items() if value != defaults[key]}
    flags = "".join(f" --{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in options.items())
    data = os.path.normpath(Path(run) / os.pardir / os.pardir)
    name = Path(run).resolve().name
    return f"python -m recsys_stream train {shlex.quote(data)} --name {shlex.quote(name)}{flags}"


def _short(value: str) -> str:
    return value if len(value) <= SHOWN else f"{value[:SHOWN]}…"
