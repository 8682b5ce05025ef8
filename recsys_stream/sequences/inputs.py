"""A sequence dataset's training inputs, opened and checked to belong together.

The files of ``pipeline sequences`` share a sequences_id; they must carry
the split_id of the ratings split beside them (a split rerun since makes
them stale) and the ratings_id of items.parquet; item ids must lie inside
the item table. One pass over the train file, a row group at a time, gives
the rating range and mean and the positions an epoch scores. Evaluation
files are read a row group at a time (:func:`eval_rows`), never whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contracts import (
    ENTITIES_SCHEMA,
    ITEMS,
    NEXT_EVAL,
    NEXT_EVAL_SCHEMA,
    NEXT_TRAIN,
    SEQUENCE_VAL_SCHEMA,
    SEQUENCES_SCHEMA,
    SEQUENCES_TRAIN,
    SEQUENCES_VAL,
    check_lineage,
    made_by,
    require,
    split_names,
    stamps,
)
from pipeline.errors import PipelineError


@dataclass
class SequenceData:
    """A sequence dataset's checked inputs for one task."""

    directory: Path
    train: Path  # sequences-train.parquet, or next-train.parquet
    evaluation: Path  # sequences-val.parquet, or next-eval.parquet
    items: int
    rows: int  # runs in the train file
    positions: int  # positions of the train file's runs
    max_length: int
    low: float  # the lowest and highest train rating
    high: float
    mean: float
    ratings_id: str
    sequences_id: str


def open_sequence_data(data_dir: str | os.PathLike, next_item: bool) -> SequenceData:
    """Open and check ``data_dir``'s sequence files for the rating or next-item task."""
    directory = Path(data_dir)
    names = (NEXT_TRAIN, NEXT_EVAL) if next_item else (SEQUENCES_TRAIN, SEQUENCES_VAL)
    train_path, eval_path = (directory / name for name in names)
    if not train_path.is_file():
        raise PipelineError(
            f"{train_path}: not found; sequence models train on `python -m pipeline sequences "
            "DIR` (after `split-ratings DIR --by time`)"
        )
    train = require(train_path, SEQUENCES_SCHEMA)
    require(eval_path, NEXT_EVAL_SCHEMA if next_item else SEQUENCE_VAL_SCHEMA)
    sequences_id = check_lineage("sequences_id", train_path, eval_path)
    split_train = directory / split_names(0)[0][0]
    if split_train.is_file():
        check_lineage("split_id", split_train, train_path)
    items_path = directory / ITEMS
    require(items_path, ENTITIES_SCHEMA)
    check_lineage("ratings_id", items_path, train_path)
    items = pq.ParquetFile(items_path).metadata.num_rows
    if train.metadata.num_rows == 0:
        raise PipelineError(f"{train_path}: no runs to train on")
    low, high, total, positions = np.inf, -np.inf, 0.0, 0
    for group in range(train.num_row_groups):
        table = train.read_row_group(group, columns=["items", "ratings"])
        _check_items(train_path, table.column("items"), items)
        ratings = pc.list_flatten(table.column("ratings")).to_numpy()
        if not np.isfinite(ratings).all():
            raise PipelineError(
                f"{train_path}: NaN or infinite ratings; rerun `{made_by(train_path)}`"
            )
        low, high = min(low, float(ratings.min())), max(high, float(ratings.max()))
        total += float(ratings.sum(dtype=np.float64))
        positions += len(ratings)
    return SequenceData(
        directory=directory,
        train=train_path,
        evaluation=eval_path,
        items=items,
        rows=train.metadata.num_rows,
        positions=positions,
        max_length=int(stamps(train)["max_length"]),
        low=low,
        high=high,
        mean=total / positions,
        ratings_id=stamps(train)["ratings_id"],
        sequences_id=sequences_id,
    )


def _check_items(path: Path, lists: pa.ChunkedArray, items: int) -> None:
    flat = pc.list_flatten(lists).to_numpy()
    if len(flat) and (flat.min() < 0 or flat.max() >= items):
        raise PipelineError(f"{path}: ids outside the {items:,} items; rerun `{made_by(path)}`")


def eval_rows(
    path: Path, columns: list[str], sample: int | None = None, seed: int = 0
) -> Iterator[pa.Table]:
    """An evaluation file's rows, a row group at a time: all of them, or a fixed seeded
    sample of ``sample`` rows (all when fewer), in file order."""
    parquet = pq.ParquetFile(path)
    rows = parquet.metadata.num_rows
    chosen = None
    if sample is not None and sample < rows:
        chosen = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    first = 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=columns)
        if chosen is not None:
            inside = chosen[(chosen >= first) & (chosen < first + table.num_rows)] - first
            table = table.take(inside)
        first += parquet.metadata.row_group(group).num_rows
        if table.num_rows:
            yield table
