"""A ratings dataset's training inputs, opened and checked to belong together.

The train and val files of one split (``pipeline split-ratings``: the plain
split, or fold K of ``--folds``) must share their split_id and, with
users.parquet and items.parquet, the ratings_id of one ``pipeline ratings``
run; ids must lie inside the user and item tables and ratings be finite.
One pass over the train file, a row group at a time, gives the rating range
and mean; the val file is held as arrays, about 18 bytes a rating.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.contracts import (
    ENTITIES_SCHEMA,
    ITEMS,
    RATING_VAL_SCHEMA,
    RATINGS_SCHEMA,
    USERS,
    check_lineage,
    made_by,
    require,
    split_names,
    stamps,
)
from pipeline.errors import PipelineError


@dataclass
class RatingVal:
    """Validation ratings as arrays."""

    user: np.ndarray  # int32
    item: np.ndarray  # int32
    rating: np.ndarray  # float32
    seen: np.ndarray  # bool: train has a rating of the user and one of the item

    def sample_rows(self, size: int, seed: int) -> np.ndarray | slice:
        """The rows of a fixed random subset of ``size`` rows (all of them when fewer)."""
        if size >= len(self.rating):
            return slice(None)
        return np.sort(np.random.default_rng(seed).choice(len(self.rating), size, replace=False))

    def sample(self, size: int, seed: int) -> RatingVal:
        """The subset :meth:`sample_rows` chooses."""
        rows = self.sample_rows(size, seed)
        return RatingVal(self.user[rows], self.item[rows], self.rating[rows], self.seen[rows])


@dataclass
class RatingData:
    """A ratings dataset's training inputs, checked."""

    directory: Path
    train: Path
    users: int
    items: int
    train_rows: int
    low: float  # the lowest and highest train rating
    high: float
    mean: float  # of the train ratings: the global-mean baseline
    val: RatingVal
    ratings_id: str
    split_id: str


def split_files(directory: Path, fold: int) -> tuple[Path, Path]:
    """The (train, val) files of the plain split (``fold`` 0) or of fold ``fold``."""
    if fold == 0:
        names = split_names(0)[0]
    else:
        names = (f"ratings-train-fold{fold}.parquet", f"ratings-val-fold{fold}.parquet")
    train, val = (directory / name for name in names)
    if not train.is_file():
        hint = (
            "`python -m pipeline split-ratings DIR` makes it"
            if fold == 0
            else f"`python -m pipeline split-ratings DIR --folds K` (K >= {fold}) makes it"
        )
        raise PipelineError(f"{train}: not found; {hint}")
    return train, val


def open_rating_data(data_dir: str | os.PathLike, fold: int = 0) -> RatingData:
    """Open and check ``data_dir``'s ratings split and id tables; see the module doc."""
    directory = Path(data_dir)
    train_path, val_path = split_files(directory, fold)
    train = require(train_path, RATINGS_SCHEMA)
    require(val_path, RATING_VAL_SCHEMA)
    split_id = check_lineage("split_id", train_path, val_path)
    sizes = []
    for name in (USERS, ITEMS):
        path = directory / name
        require(path, ENTITIES_SCHEMA)
        check_lineage("ratings_id", path, train_path)
        sizes.append(pq.ParquetFile(path).metadata.num_rows)
    if train.metadata.num_rows == 0:
        raise PipelineError(f"{train_path}: no ratings to train on")
    low, high, mean = _scan(train, train_path, *sizes)
    val = _load_val(val_path, *sizes)
    return RatingData(
        directory=directory,
        train=train_path,
        users=sizes[0],
        items=sizes[1],
        train_rows=train.metadata.num_rows,
        low=low,
        high=high,
        mean=mean,
        val=val,
        ratings_id=stamps(train)["ratings_id"],
        split_id=split_id,
    )


def _scan(parquet: pq.ParquetFile, path: Path, users: int, items: int):
    """(lowest, highest, mean) train rating, checking ids and ratings on the way."""
    low, high, total = np.inf, -np.inf, 0.0
    for index in range(parquet.num_row_groups):
        group = parquet.read_row_group(index, columns=["user", "item", "rating"])
        user, item, rating = (group.column(n).to_numpy() for n in ("user", "item", "rating"))
        _check(path, user, item, rating, users, items)
        low, high = min(low, float(rating.min())), max(high, float(rating.max()))
        total += float(rating.sum(dtype=np.float64))
    return low, high, total / parquet.metadata.num_rows


def _load_val(path: Path, users: int, items: int) -> RatingVal:
    table = pq.read_table(path, columns=["user", "item", "rating", "user_seen", "item_seen"])
    user, item, rating, user_seen, item_seen = (c.to_numpy() for c in table.columns)
    _check(path, user, item, rating, users, items)
    return RatingVal(user, item, rating, user_seen & item_seen)


def _check(path, user, item, rating, users: int, items: int) -> None:
    for ids, size, what in ((user, users, "users"), (item, items, "items")):
        if len(ids) and (ids.min() < 0 or ids.max() >= size):
            raise PipelineError(f"{path}: ids outside the {size:,} {what}; rerun `{made_by(path)}`")
    if not np.isfinite(rating).all():
        raise PipelineError(f"{path}: NaN or infinite ratings; rerun `{made_by(path)}`")
