"""What the one training loop needs from a kind of dataset: a task, and the run it leaves.

The loop (:mod:`recsys_stream.core.train`) streams batches, steps, records
learning-curve points, checkpoints, resumes, stops early and tunes threads
the same way for every dataset; a task supplies what differs: the model and
its step, the stream of batches, the metrics of a curve point and the run's
final files, and, for a finished run, how to load its model and which stage
files it depends on. Each kind registers its task class in ``TASKS`` by its
``kind``: :class:`~recsys_stream.pairs.task.PairTask` trains product pairs
(and skip-gram over walks), :class:`~recsys_stream.ratings.task.RatingTask`
user-item ratings, and :mod:`recsys_stream.sequences.task` sequence models
on each user's ratings in time order (the next rating, or the next item). A
run records its kind in model.pt; whatever loads a run asks the run
(:mod:`recsys_stream.core.trained`).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from torch import nn
from torch.utils.data import IterableDataset

from pipeline.contracts import TRAIN
from pipeline.errors import PipelineError
from recsys_stream.core.config import KINDS, TrainConfig, hidden_sizes
from recsys_stream.core.registry import Registry
from recsys_stream.core.steps import Step

# The packages whose task module registers a kind, imported on first use.
KIND_PACKAGES = ("pairs", "ratings", "sequences")


class Task:
    """A dataset opened for training, with its model, step and stream built."""

    kind: str  # the key in TASKS, recorded in the run's model.pt and summary.json
    models: Registry  # the models it trains
    headline: tuple[str, ...]  # the summary's entries the command line prints
    config: TrainConfig
    directory: Path  # the dataset's
    model: nn.Module
    step: Step
    stream: IterableDataset
    rows: int  # rows an epoch streams (the schedule's steps follow from it)
    batch_size: int  # rows a step takes: --batch-size, or chosen (config.batch_for)
    samples: int  # samples an epoch, as the loss counts them (the progress bar's total)
    identity: dict[str, str]  # what a run's checkpoint and model must match (Run.identity)
    default_name: str  # the run's name unless --name gives one
    metrics: tuple[str, ...]  # a curve point's columns, from ``score``
    monitor: str  # the metric early stopping watches, one of ``metrics``
    higher_is_better: bool
    # Whether the step's result is the same on any number of threads; when it is
    # not, --threads 0 trains on one (the thread tuner would change the result).
    thread_invariant: bool = True

    def score(self, step: int) -> dict[str, float | None]:
        """The metrics of the model after ``step`` steps, on the fixed validation probe."""
        raise NotImplementedError

    def finish(self, run) -> dict:
        """Write the run's final files but summary.json; return the summary's task entries."""
        raise NotImplementedError

    @classmethod
    def load(cls, run: Path, saved: dict, config: TrainConfig) -> nn.Module:
        """The trained model of ``run`` from its model.pt (``saved``), in eval mode;
        refused in one line when its ids do not fit the dataset's files."""
        raise NotImplementedError

    @classmethod
    def links(cls, data: Path, config: TrainConfig) -> list[tuple[str, Path, str]]:
        """(stage, file, id) of each stage a run of this kind depends on, in stage order:
        the file that holds the id now (``core.lineage``)."""
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("kind of task", key="kind")


def task_class(kind: str) -> type[Task]:
    """The task class of ``kind`` (one of ``config.KINDS``)."""
    for package in KIND_PACKAGES:
        importlib.import_module(f"recsys_stream.{package}.task")
    return TASKS[kind]


def model_names() -> list[str]:
    """Every model any kind trains, in the kinds' order (mf and mf_bias train on pairs
    and on ratings: named once)."""
    return list(dict.fromkeys(name for kind in KINDS for name in task_class(kind).models))


def check_model_options(config: TrainConfig) -> None:
    """Refuse, in one line, what the config's own checks cannot know without the models:
    a --model no kind trains, --task next-item for a model that is not a sequence
    model, several --hidden layers for a sequence model (one recurrent layer)."""
    names = model_names()
    if config.model not in names:
        raise PipelineError(f"--model must be one of {', '.join(names)}, got {config.model!r}")
    sequence = task_class("sequences").models
    if config.task != "rating" and config.model not in sequence:
        raise PipelineError(
            f"--task {config.task} trains {' or '.join(sequence)}, not {config.model}"
        )
    if config.model in sequence and len(hidden_sizes(config.hidden)) != 1:
        raise PipelineError(f"--hidden must be one size for {config.model}, got {config.hidden!r}")


def open_task(kind: str, data_dir: str | os.PathLike, config: TrainConfig) -> Task:
    """The task of a ``kind`` of dataset, opened with its model, step and stream."""
    return task_class(kind)(data_dir, config)


def dataset_kind(data_dir: str | os.PathLike) -> str:
    """ "pairs" for a directory with train.parquet, "ratings" for one with ratings files."""
    directory = Path(data_dir)
    if (directory / TRAIN).is_file():
        return "pairs"
    if any(directory.glob("ratings-train*.parquet")):
        return "ratings"
    raise PipelineError(
        f"{directory}: nothing to train on: no {TRAIN} (`python -m pipeline split`) and no "
        "ratings-train.parquet (`python -m pipeline split-ratings`)"
    )


def task_kind(data_dir: str | os.PathLike, model: str | None, task: str | None) -> str:
    """The kind of task a model trains on a dataset (one of ``config.KINDS``, whose
    defaults it takes): its files decide, and on ratings a sequence model
    (``--model lstm``) makes it "sequences", or "next-item"."""
    kind = dataset_kind(data_dir)
    if model not in task_class("sequences").models:
        return kind
    if kind != "ratings":
        raise PipelineError(
            f"--model {model} trains on ratings (`python -m pipeline sequences`), not on {kind}"
        )
    return "next-item" if task == "next-item" else "sequences"


def check_model(kind: str, config: TrainConfig, registry: Registry) -> None:
    """Refuse, in one line, a model that does not train on this kind of dataset."""
    if config.model not in registry:
        raise PipelineError(
            f"--model {config.model} does not train on {kind}; one of {', '.join(registry)}"
        )


def check_memory(rows: int, config: TrainConfig, what: str) -> None:
    """Refuse, in one line, a dim or batch size whose tables cannot fit in memory.

    ``rows``: the embedding rows of all tables (products, or users and items).
    """
    needed = training_bytes(rows, config)
    available = available_memory()
    if available and needed > available:
        raise PipelineError(
            f"--dim {config.dim} and --batch-size {config.batch_size} need about "
            f"{needed / 2**30:.1f} GiB for {what}; {available / 2**30:.1f} GiB is available"
        )


def training_bytes(rows: int, config: TrainConfig) -> int:
    """About the memory training takes beside the runtime: ``rows`` embedding rows with
    their two Adam moments, and a batch's temporaries."""
    tables = rows * (config.dim + 1) * 4 * 3  # weights and two Adam moments
    batch = config.batch_size * (config.negatives + 2) * config.dim * 4 * 8  # temporaries
    return tables + batch + rows * 16


def available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
