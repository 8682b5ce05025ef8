"""A run directory: its files, and the training state checkpointed in it.

``runs/NAME/`` holds model.pt, checkpoint.pt, metrics.csv, summary.json,
embeddings.parquet and the task's own final files (pr.csv and roc.csv for
pairs, predictions.csv for ratings), and best.pt while early stopping
watches. summary.json is written last: it is the mark of a finished run
(make's target). A run that starts clears the previous run's final files
first, so a directory never mixes two runs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.contracts import EMBEDDINGS, stamped
from pipeline.errors import PipelineError
from pipeline.files import atomic_output, clear_stale_temporaries, require_space
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.tasks import task_class

MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
PR = "pr.csv"
ROC = "roc.csv"
POPULARITY_ROC = "roc_popularity.csv"
SUMMARY = "summary.json"
PREDICTIONS = "predictions.csv"
BEST = "best.pt"  # the best epoch's weights, kept by early stopping
FINAL = (SUMMARY, MODEL, PR, ROC, POPULARITY_ROC, EMBEDDINGS, PREDICTIONS)  # written at the end
CHECKPOINT_VERSION = 5  # the layout of checkpoint.pt; 5: side information's own weights


def metric_columns(metrics: tuple[str, ...]) -> list[str]:
    """metrics.csv's columns for a task whose curve points carry ``metrics``."""
    return ["step", "epoch", "lr", "loss", *metrics, "samples_per_s", "threads"]


@dataclass
class TrainState:
    """Where training is: saved in every checkpoint, restored by ``--resume``."""

    epoch: int = 0  # epochs finished
    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0  # time in training steps, over every part of the run
    wall_seconds: float = 0.0  # wall time of the earlier parts of a resumed run
    parts: int = 0  # how many times training was started (1 + resumes)
    history: list[dict] = field(default_factory=list)  # learning-curve points
    epoch_start_lr: list[float] = field(default_factory=list)
    best_epoch: int = 0  # early stopping: the epoch whose weights best.pt holds
    best_score: float | None = None
    stopped_early: bool = False


@dataclass
class Run:
    """A run's directory, the config it trains and the identity of its inputs.

    ``identity``: what the ids mean and which split trains (for pairs the
    vocabulary's hash, pairs_id and split_id; for ratings ratings_id and
    split_id). A checkpoint or model made on other inputs is refused.
    """

    directory: Path
    config: TrainConfig
    identity: dict[str, str]
    kind: str  # the task's (core.tasks.TASKS): what loads the run again

    @property
    def name(self) -> str:
        return self.directory.name

    def path(self, name: str) -> Path:
        return self.directory / name

    def start(self, keep_checkpoint: bool) -> None:
        """Make the directory and clear what an earlier run left: its final files and
        temporaries, and its checkpoint and learning curve unless resuming from them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        clear_stale_temporaries(self.directory)
        stale = FINAL if keep_checkpoint else (*FINAL, CHECKPOINT, METRICS, BEST)
        for name in stale:
            self.path(name).unlink(missing_ok=True)

    def save_checkpoint(self, model: torch.nn.Module, optimizer: dict, state: TrainState) -> None:
        save_torch(
            {
                "version": CHECKPOINT_VERSION,
                "config": self.config.to_dict(),
                "identity": self.identity,
                "model": model.state_dict(),
                "optimizer": optimizer,
                "state": dataclasses.asdict(state),
                "torch_rng": torch.get_rng_state(),  # dropout's draws continue on resume
            },
            self.path(CHECKPOINT),
        )

    def load_checkpoint(self) -> tuple[dict, str | None]:
        """The checkpoint and, when it cannot be resumed here, why not: another version,
        other inputs, other settings, or epochs that are not the start of this run's."""
        path = self.path(CHECKPOINT)
        saved = load_torch(path)
        if saved.get("version") != CHECKPOINT_VERSION:
            return saved, "made by another version of recsys-stream"
        if saved["identity"] != self.identity:
            changed = [
                key for key, value in self.identity.items() if saved["identity"].get(key) != value
            ]
            return saved, f"made on other inputs ({', '.join(changed)} differ)"
        previous = TrainConfig.from_dict(saved["config"])
        changed = [
            f"{key} {value} -> {self.config.to_dict()[key]}"
            for key, value in previous.to_dict().items()
            if key != "epochs" and value != self.config.to_dict()[key]
        ]
        if changed:
            return saved, f"made with other settings ({', '.join(changed)})"
        return saved, _not_a_start(previous.epochs, saved["state"]["epoch"], self.config)

    def save_model(self, model: torch.nn.Module, shape: dict) -> None:
        """model.pt: the weights, config, identity and ``shape`` (what rebuilds the model)."""
        save_torch(
            {
                "model": self.config.model,
                "kind": self.kind,
                "state_dict": model.state_dict(),
                "config": self.config.to_dict(),
                **shape,
                **self.identity,
            },
            self.path(MODEL),
        )

    def save_best(self, model: torch.nn.Module) -> None:
        save_torch(model.state_dict(), self.path(BEST))

    def load_best(self, model: torch.nn.Module) -> None:
        model.load_state_dict(load_torch(self.path(BEST)))


def _not_a_start(planned: int, done: int, config: TrainConfig) -> str | None:
    """Why a checkpoint of ``done`` epochs, of a run planned for ``planned``, is not the
    first epochs of a run of ``config`` that differs from it in its epochs only; None
    when it is, so that resuming it gives what training ``config`` afresh would.

    A checkpoint holding more epochs than asked for has trained past the run's end.
    Under ``--schedule cosine`` (one annealing over all epochs) each epoch's learning
    rate depends on how many there are, so epochs trained for another total are not
    this run's. The other schedules' learning rate depends on the step's place in its
    epoch or cycle only (:mod:`recsys_stream.core.schedule`): more epochs continue them.
    """
    if done > config.epochs:
        return f"is at epoch {done}, past the --epochs {config.epochs} asked for"
    if config.schedule == "cosine" and planned != config.epochs:
        return (
            f"made for --epochs {planned} under --schedule cosine, whose learning rate in "
            f"every epoch depends on --epochs ({planned} -> {config.epochs})"
        )
    return None


def saved_kind(saved: dict, config: TrainConfig) -> str:
    """The kind of task a model.pt (or summary.json) was trained by: recorded since
    2026-12-07, told by its ids before (:func:`legacy_kind`)."""
    return saved.get("kind") or legacy_kind(config, ratings="ratings_id" in saved)


def legacy_kind(config: TrainConfig, ratings: bool) -> str:
    """The kind of a run saved before runs recorded it: pairs unless it trained on
    ``ratings``; then its model (a sequence model's, or not) and task tell."""
    if not ratings:
        return "pairs"
    if config.model in task_class("sequences").models:
        return "next-item" if config.task == "next-item" else "sequences"
    return "ratings"


def run_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "runs" / name


def dataset_of(run: Path) -> Path:
    """The dataset directory a run belongs to (``DATA/runs/NAME``)."""
    return Path(run).resolve().parents[1]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_torch(obj: dict, path: Path) -> None:
    """torch.save, atomically and streamed to the file (no in-memory copy of the state).

    Saved through a file object, so the zip records are named ``archive/``
    and not after the temporary file: the same state gives the same bytes.
    A save that cannot fit is refused before it starts.
    """
    require_space(path, _tensor_bytes(obj) + (1 << 20))
    with atomic_output(path) as tmp, open(tmp, "wb") as file:
        torch.save(obj, file)


def load_torch(path: Path) -> dict:
    """torch.load of a file this code saved, memory-mapped; one line if it is not one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PipelineError(f"{path}: not a readable model file ({reason})") from None


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(value) for value in obj)
    return 0


def write_columns(path: Path, columns: dict[str, np.ndarray]) -> None:
    """A CSV of equal-length columns, values rounded to 6 decimals."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(zip(*(np.round(c, 6).tolist() for c in columns.values())))


def write_metrics(path: Path, history: list[dict], metrics: tuple[str, ...]) -> None:
    """metrics.csv: the learning-curve points, with the task's ``metrics`` columns."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, metric_columns(metrics))
        writer.writeheader()
        writer.writerows(history)


def write_embeddings(
    columns: dict[str, torch.Tensor | np.ndarray],
    ids_path: Path,
    key: str,
    path: Path,
    lineage: dict,
    rows_per_group: int = 65_536,
) -> None:
    """embeddings.parquet: id, the ``key`` column of ``ids_path`` (vocab.parquet's asin,
    items.parquet's key) and ``columns`` (rows indexed by id), a row group at a time."""
    columns = {
        name: values.detach().numpy() if isinstance(values, torch.Tensor) else values
        for name, values in columns.items()
    }
    fields = [("id", pa.int32()), (key, pa.string())]
    for name, values in columns.items():
        kind = pa.list_(pa.float32(), values.shape[1]) if values.ndim == 2 else pa.float32()
        fields.append((name, kind))
    schema = stamped(pa.schema(fields), "train", **lineage)
    ids = pq.ParquetFile(ids_path)
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in ids.iter_batches(rows_per_group, columns=["id", key]):
            rows_ids = batch.column(0).to_numpy()
            arrays = [batch.column(0), batch.column(1)]
            for values in columns.values():
                rows = values[rows_ids]
                arrays.append(
                    pa.FixedSizeListArray.from_arrays(rows.reshape(-1), rows.shape[1])
                    if rows.ndim == 2
                    else pa.array(rows)
                )
            writer.write_batch(pa.record_batch(arrays, schema=schema))
