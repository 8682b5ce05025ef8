"""Split ratings.parquet into train and val: at random, by time per user, or in K folds.

Writes, in the dataset directory:

- ``--by random`` or ``--by time``: ``ratings-train.parquet`` and
  ``ratings-val.parquet``;
- ``--folds K``: ``ratings-train-fold{k}.parquet`` and
  ``ratings-val-fold{k}.parquet`` for k = 1..K, fold k's val being the k-th
  of K disjoint parts that together hold every rating;
- ``split-ratings.json``: rows of each file, val rows whose user or item has
  no train rating, options, seconds, peak RSS.

A rerun first deletes the train and val files of an earlier split that this one
does not make (the plain split's, or folds beyond K), so no run trained on them
looks current beside it.

Train and val rows carry ``user``, ``item``, ``rating``, ``timestamp`` in a
seeded random order (a sequential read is already shuffled); val rows also
``user_seen`` and ``item_seen`` (whether that user or item has a rating in
its train file).

- ``random``: in each row group of ratings.parquet, a seeded permutation
  sends the nearest whole number to val_prop of its rows to val (the
  articles' train_test_split, a row group at a time).
- ``time``: each user's latest ratings (by timestamp, then file order) go to
  val, the nearest whole number to val_prop of that user's ratings (a user
  with one rating keeps it in train at val_prop 0.2): what a sequence model
  needs.
- ``order``: the first ratings in the raw file's order go to val, the
  nearest whole number to val_prop of them; with ``--folds K``, fold k's val
  is the k-th of K consecutive blocks. This is how MovieLens 100K's
  ``mku.sh`` cuts ``u.data`` into its published splits: u1.test is its
  first 20,000 lines (``--by order``, val_prop 0.2), u1..u5 its five blocks
  (``--by order --folds 5``).
- ``folds``: in each row group, a seeded permutation deals the rows to the K
  folds in turn, so fold sizes differ by at most one a row group.

Memory is bounded by design: one byte a rating for its part, two int32
counts a user and an item per part, and a chunk of ratings. The time split
sorts ratings a user bucket at a time (users by id modulo the buckets), and
the shuffle is a two-pass external one through bucket files.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cli import check_seed
from pipeline.contracts import (
    ENTITIES_SCHEMA,
    ITEMS,
    RATING_VAL_SCHEMA,
    RATINGS,
    RATINGS_SCHEMA,
    SPLIT_RATINGS_STATS,
    USERS,
    lineage_id,
    require,
    split_names,
    stamped,
    stamps,
)
from pipeline.errors import PipelineError
from pipeline.files import atomic_output
from pipeline.options import QuietOptions, argument, option, seed_option
from pipeline.progress import progress
from pipeline.stage import StageRun

SPLITS = ("random", "time", "order")
BUCKET_ROWS = 1 << 20  # ratings a shuffle or user bucket holds, about
ROW_GROUP_ROWS = 1 << 18
# work files of the time split: a user bucket's ratings, with their row in ratings.parquet
_BY_USER = pa.schema([("user", pa.int32()), ("timestamp", pa.int64()), ("row", pa.int64())])


_SPLIT_FILE = re.compile(r"ratings-(train|val)(-fold[1-9][0-9]*)?\.parquet")


@dataclass(frozen=True, kw_only=True)
class SplitRatingsOptions(QuietOptions):
    """The arguments of ``python -m pipeline split-ratings``: :func:`split_ratings`'s."""

    data_dir: str = argument("dataset directory holding ratings.parquet", metavar="dir")
    by: str = option(
        "random",
        "random: a seeded share of the ratings; time: each user's latest share; order: the "
        "file's first share (with --folds, consecutive blocks: MovieLens 100K's u1..u5)",
        choices=SPLITS,
    )
    val_prop: float = option(0.2, "share held out for validation", above=0, below=1)
    folds: int = option(0, "K > 1: K-fold cross-validation files instead", low=0)
    seed: int = seed_option()


def split_ratings(
    data_dir: str | os.PathLike,
    by: str = SplitRatingsOptions.by,
    val_prop: float = SplitRatingsOptions.val_prop,
    folds: int = SplitRatingsOptions.folds,
    seed: int = SplitRatingsOptions.seed,
    quiet: bool = SplitRatingsOptions.quiet,
) -> dict:
    """Split ``data_dir/ratings.parquet``; return the stats (see the module doc)."""
    data_dir = Path(data_dir)
    _check_options(by, val_prop, folds, seed)
    with StageRun(data_dir, SPLIT_RATINGS_STATS) as run:
        source = require(data_dir / RATINGS, RATINGS_SCHEMA)
        sizes = [
            require(data_dir / name, ENTITIES_SCHEMA).metadata.num_rows for name in (USERS, ITEMS)
        ]
        ratings_id = stamps(source)["ratings_id"]
        parts = max(folds, 2)  # a plain split is two parts: 0 train, 1 val
        split_id = lineage_id("split-ratings", ratings_id, by, val_prop, folds, seed)
        names = split_names(folds)
        _remove_other_splits(data_dir, names)
        work = run.work("split-ratings-work")
        if by == "order":
            part = _in_order(source.metadata.num_rows, val_prop, folds)
        elif folds:
            part = _dealt(source, folds, seed)
        elif by == "random":
            part = _random(source, val_prop, seed)
        else:
            part = _latest(source, val_prop, sizes[0], work)
        layout = "folds" if folds and by == "random" else by  # ordered folds stay "order"
        counts = _counts(source, part, parts, sizes)
        buckets = _shuffled_buckets(source, part, work, seed)
        facts = {
            "ratings_id": ratings_id,
            "split_id": split_id,
            "split_by": layout,
        }
        stats = _write(data_dir, names, buckets, seed, counts, folds, facts, quiet)
        stats.update(
            {
                "by": layout,
                "val_prop": None if folds else val_prop,
                "folds": folds,
                "seed": seed,
                "ratings": source.metadata.num_rows,
                "split_id": split_id,
                "seconds": round(run.seconds, 2),
            }
        )
        run.finish(stats)
    return run.stats


def _remove_other_splits(data_dir: Path, names: list[tuple[str, str]]) -> None:
    """Delete the train and val files of an earlier split of another layout (the plain
    split's, or folds this split does not make): runs trained on them would otherwise
    look current beside this split. Deleted first, so a killed run leaves none."""
    kept = {name for pair in names for name in pair}
    for path in data_dir.glob("ratings-*.parquet"):
        if _SPLIT_FILE.fullmatch(path.name) and path.name not in kept:
            path.unlink()


def _check_options(by: str, val_prop: float, folds: int, seed: int) -> None:
    if by not in SPLITS:
        raise PipelineError(f"--by must be one of {', '.join(SPLITS)}, got {by!r}")
    if not isinstance(val_prop, int | float) or not 0 < val_prop < 1:
        raise PipelineError(f"--val-prop must be between 0 and 1, got {val_prop!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 0 or folds == 1:
        raise PipelineError(f"--folds must be 0 (no folds) or at least 2, got {folds!r}")
    if folds and by == "time":
        raise PipelineError(
            "--folds deals ratings at random or in file order; it cannot be used with --by time"
        )
    check_seed(seed)


def _groups(source: pq.ParquetFile, columns: list[str]):
    """(row group index, first row, table) of ``source``, in order."""
    first = 0
    for group in range(source.num_row_groups):
        table = source.read_row_group(group, columns=columns)
        yield group, first, table
        first += table.num_rows


def _group_sizes(source: pq.ParquetFile) -> list[int]:
    return [source.metadata.row_group(g).num_rows for g in range(source.num_row_groups)]


def _random(source: pq.ParquetFile, val_prop: float, seed: int) -> np.ndarray:
    """Each rating's part: 1 (val) for the nearest whole share of each row group."""
    part = np.zeros(source.metadata.num_rows, dtype=np.int8)
    first = 0
    for group, rows in enumerate(_group_sizes(source)):
        order = np.random.default_rng([seed, group]).permutation(rows)
        part[first + order[: int(rows * val_prop + 0.5)]] = 1
        first += rows
    return part


def _dealt(source: pq.ParquetFile, folds: int, seed: int) -> np.ndarray:
    """Each rating's fold, 0..folds-1: each row group's rows dealt in a seeded order."""
    part = np.zeros(source.metadata.num_rows, dtype=np.int8)
    first = 0
    for group, rows in enumerate(_group_sizes(source)):
        order = np.random.default_rng([seed, group]).permutation(rows)
        part[first + order] = np.arange(rows) % folds
        first += rows
    return part


def _in_order(rows: int, val_prop: float, folds: int) -> np.ndarray:
    """Each rating's part in file order: 1 (val) for the first share of the ratings, or
    with ``folds`` the block of K consecutive ones it falls in."""
    if folds:
        return (np.arange(rows, dtype=np.int64) * folds // rows).astype(np.int8)
    part = np.zeros(rows, dtype=np.int8)
    part[: int(rows * val_prop + 0.5)] = 1
    return part


def _latest(source: pq.ParquetFile, val_prop: float, users: int, work: Path) -> np.ndarray:
    """Each rating's part: 1 (val) for each user's latest share, a user bucket at a time."""
    rows = source.metadata.num_rows
    buckets = max(1, -(-rows // BUCKET_ROWS))
    writers = [
        pq.ParquetWriter(work / f"user-bucket-{b}.parquet", _BY_USER) for b in range(buckets)
    ]
    for _, first, table in _groups(source, ["user", "timestamp"]):
        user = table.column("user").to_numpy()
        row = np.arange(first, first + len(user), dtype=np.int64)
        bucket = user % buckets
        for b in np.unique(bucket):
            take = bucket == b
            columns = [user[take], table.column("timestamp").to_numpy()[take], row[take]]
            writers[b].write_table(pa.table(columns, schema=_BY_USER))
    for writer in writers:
        writer.close()
    part = np.zeros(rows, dtype=np.int8)
    for b in range(buckets):
        table = pq.read_table(work / f"user-bucket-{b}.parquet")
        user, stamp, row = (table.column(n).to_numpy() for n in _BY_USER.names)
        order = np.lexsort((row, stamp, user))  # by user, then time, then file order
        user, row = user[order], row[order]
        count = np.bincount(user, minlength=users)
        start = np.cumsum(count) - count  # each user's first position in ``order``
        rank = np.arange(len(user)) - start[user]  # 0 for a user's earliest rating
        held = np.floor(count * val_prop + 0.5).astype(np.int64)
        part[row[rank >= count[user] - held[user]]] = 1
    return part


def _counts(source: pq.ParquetFile, part: np.ndarray, parts: int, sizes: list[int]) -> list:
    """Per part, the ratings of each user and of each item: int32 (parts, n) arrays."""
    users = np.zeros((parts, sizes[0]), dtype=np.int32)
    items = np.zeros((parts, sizes[1]), dtype=np.int32)
    for _, first, table in _groups(source, ["user", "item"]):
        which = part[first : first + table.num_rows].astype(np.int64)
        for counts, name in ((users, "user"), (items, "item")):
            ids = table.column(name).to_numpy()
            counts += (
                np.bincount(which * counts.shape[1] + ids, minlength=counts.size)
                .reshape(counts.shape)
                .astype(np.int32)
            )
    return [users, items]


def _shuffled_buckets(
    source: pq.ParquetFile, part: np.ndarray, work: Path, seed: int
) -> list[Path]:
    """The ratings with their part, each in a bucket drawn at random: bucket files,
    to be read one at a time and permuted (an external shuffle)."""
    rows = source.metadata.num_rows
    buckets = max(1, -(-rows // BUCKET_ROWS))
    schema = RATINGS_SCHEMA.append(pa.field("part", pa.int8()))
    paths = [work / f"shuffle-{b}.parquet" for b in range(buckets)]
    writers = [pq.ParquetWriter(path, schema) for path in paths]
    for group, first, table in _groups(source, RATINGS_SCHEMA.names):
        bucket = np.random.default_rng([seed, group, 1]).integers(0, buckets, table.num_rows)
        table = table.append_column("part", pa.array(part[first : first + table.num_rows]))
        for b in np.unique(bucket):
            writers[b].write_table(table.filter(pa.array(bucket == b)).cast(schema))
    for writer in writers:
        writer.close()
    return paths


def _write(data_dir, names, paths, seed, counts, folds, facts, quiet) -> dict:
    """Write every train and val file from the shuffle buckets; their rows and unseen counts.

    All files are written side by side, a bucket at a time, each renamed into
    place only when every one is complete.
    """
    users, items = counts
    schemas = [stamped(s, "split-ratings", **facts) for s in (RATINGS_SCHEMA, RATING_VAL_SCHEMA)]
    outputs = []
    for number in range(len(names)):
        held_part = number if folds else 1
        # a user or item is in train when it has a rating outside the held-out part
        user_in_train = users.sum(0) - users[held_part] > 0
        item_in_train = items.sum(0) - items[held_part] > 0
        outputs.append((held_part, user_in_train, item_in_train))
    files: dict[str, dict] = {}
    with contextlib.ExitStack() as stack, progress(len(paths), "bucket", "split", quiet) as bar:
        writers = []  # (train, val) writers of each output
        for pair in names:
            writers.append([])
            for name, schema in zip(pair, schemas):
                files[name] = {"rows": 0}
                tmp = stack.enter_context(atomic_output(data_dir / name))
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writers[-1].append(stack.enter_context(writer))
        for b, path in enumerate(paths):
            table = pq.read_table(path)
            table = table.take(np.random.default_rng([seed, b, 2]).permutation(table.num_rows))
            part = table.column("part").to_numpy()
            rows = table.drop_columns("part")
            for (held_part, user_in, item_in), (train, val), pair in zip(outputs, writers, names):
                held = part == held_part
                train.write_table(rows.filter(pa.array(~held)).cast(schemas[0]), ROW_GROUP_ROWS)
                kept = rows.filter(pa.array(held))
                user_seen = user_in[kept.column("user").to_numpy()]
                item_seen = item_in[kept.column("item").to_numpy()]
                kept = kept.append_column("user_seen", pa.array(user_seen))
                kept = kept.append_column("item_seen", pa.array(item_seen))
                val.write_table(kept.cast(schemas[1]), ROW_GROUP_ROWS)
                files[pair[0]]["rows"] += int((~held).sum())
                files[pair[1]]["rows"] += kept.num_rows
                for key, seen in (("unseen_users", user_seen), ("unseen_items", item_seen)):
                    files[pair[1]][key] = files[pair[1]].get(key, 0) + int((~seen).sum())
            bar.update(1)
    return {"files": files}
