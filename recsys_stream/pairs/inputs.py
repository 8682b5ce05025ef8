"""The trainer's inputs, opened and checked to belong together before anything trains.

train.parquet, val.parquet and vocab.parquet must share their lineage (one
split of one vocabulary's pairs), hold ids inside the vocabulary and finite
weights; any other file is refused in one line naming it. One pass over
train.parquet, a row group at a time, gives the products' train degrees and
the largest weight and checks what the row groups' statistics could not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.contracts import (
    TRAIN,
    TRAIN_SCHEMA,
    VAL,
    VAL_SCHEMA,
    VOCAB,
    VOCAB_SCHEMA,
    check_ids,
    check_lineage,
    made_by,
    require,
    stamps,
    vocabulary_size,
)
from pipeline.errors import PipelineError
from recsys_stream.pairs.evaluate import Validation


@dataclass
class TrainingData:
    """A dataset directory's training inputs, checked."""

    directory: Path
    vocab_size: int
    train_rows: int
    degree: np.ndarray  # train pairs each product is in
    max_weight: float  # the largest train pair weight
    val: Validation
    split_id: str
    pairs_id: str
    negative_protocol: str  # how split drew the val negatives

    @property
    def train(self) -> Path:
        return self.directory / TRAIN

    @property
    def vocab(self) -> Path:
        return self.directory / VOCAB


def open_training_data(data_dir: str | os.PathLike) -> TrainingData:
    """Open and check ``data_dir``'s train, val and vocab files; see the module doc."""
    directory = Path(data_dir)
    paths = {name: directory / name for name in (TRAIN, VAL, VOCAB)}
    train = require(paths[TRAIN], TRAIN_SCHEMA)
    val_file = require(paths[VAL], VAL_SCHEMA)
    vocab = require(paths[VOCAB], VOCAB_SCHEMA)
    split_id = check_lineage("split_id", paths[TRAIN], paths[VAL])
    pairs_id = check_lineage("pairs_id", paths[TRAIN], paths[VOCAB])
    size = vocabulary_size(vocab, paths[VOCAB])
    if train.metadata.num_rows == 0:
        raise PipelineError(f"{paths[TRAIN]}: no pairs to train on")
    degree, max_weight = _scan_train(train, paths[TRAIN], size)
    val = _load_val(val_file, paths[VAL], size)
    return TrainingData(
        directory=directory,
        vocab_size=size,
        train_rows=train.metadata.num_rows,
        degree=degree,
        max_weight=max_weight,
        val=val,
        split_id=split_id,
        pairs_id=pairs_id,
        negative_protocol=stamps(val_file).get("negatives", "unrecorded"),
    )


def _scan_train(parquet: pq.ParquetFile, path: Path, size: int) -> tuple[np.ndarray, float]:
    """Train degrees and the largest weight, checking ids and weights on the way."""
    ids_checked = check_ids(parquet, path, ["src", "dst"], size)
    degree = np.zeros(size, dtype=np.int64)
    max_weight = 0.0
    for index in range(parquet.num_row_groups):
        group = parquet.read_row_group(index, columns=["src", "dst", "weight"])
        src, dst, weight = (group.column(name).to_numpy() for name in ("src", "dst", "weight"))
        if not ids_checked:
            _check_range(path, size, src, dst)
        _check_weights(path, weight)
        degree += np.bincount(src, minlength=size)
        degree += np.bincount(dst, minlength=size)
        max_weight = max(max_weight, float(weight.max(initial=0.0)))
    return degree, max_weight


def _load_val(parquet: pq.ParquetFile, path: Path, size: int) -> Validation:
    val = Validation.load(path)
    if not check_ids(parquet, path, ["src", "dst"], size):
        _check_range(path, size, val.src, val.dst)
    _check_weights(path, parquet.read(columns=["weight"]).column("weight").to_numpy())
    return val


def _check_range(path: Path, size: int, *columns: np.ndarray) -> None:
    for ids in columns:
        if len(ids) and (ids.min() < 0 or ids.max() >= size):
            raise PipelineError(
                f"{path}: ids outside the vocabulary of {size:,} products; rerun `{made_by(path)}`"
            )


def _check_weights(path: Path, weight: np.ndarray) -> None:
    if not np.isfinite(weight).all():
        raise PipelineError(f"{path}: NaN or infinite weights; rerun `{made_by(path)}`")
