"""Each user's ratings in time order, for sequence models: ``pipeline sequences``.

From a time split (``split-ratings --by time``: each user's latest ratings
are val), writes in the dataset directory, with L = ``max_length``:

- ``sequences-train.parquet``: each user's train ratings in time order, cut
  into runs of at most L, the latest run full (a model predicts each rating
  of a run from the ratings before it in the run);
- ``sequences-val.parquet``: each user's val ratings, L at a time, after the
  L ratings before them (train ratings, then the user's earlier val ratings);
  ``targets`` counts the trailing val ratings to predict, so no val rating is
  in its own history;
- ``next-train.parquet``: leave-one-out for next-item models: each user's
  history without its last two items, in runs of at most L + 1 items that
  overlap by one (L next-item transitions a run, each transition once);
- ``next-eval.parquet``: for each user with at least three ratings, the
  history up to and including the val target (the second last item) in
  ``items``, and the test target (the last item) in ``target``;
- ``sequences.json``: rows and positions of each file, options, seconds,
  peak RSS.

A user's ratings are ordered by timestamp, then train before val (the split
put the latest in val), then item id. Train files' rows are in a seeded
random order, the eval files' by user.

Memory is bounded by design: the ratings pass through user buckets (users by
id modulo the buckets, about ``BUCKET_ROWS`` ratings each), each sorted and
cut into runs on its own with array operations; the outputs are written a
bucket at a time, side by side, and renamed into place together.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.cli import check_seed
from pipeline.contracts import (
    NEXT_EVAL,
    NEXT_EVAL_SCHEMA,
    NEXT_TRAIN,
    RATING_VAL_SCHEMA,
    RATINGS_SCHEMA,
    SEQUENCE_VAL_SCHEMA,
    SEQUENCES_SCHEMA,
    SEQUENCES_STATS,
    SEQUENCES_TRAIN,
    SEQUENCES_VAL,
    check_lineage,
    lineage_id,
    ranges,
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

BUCKET_ROWS = 1 << 21  # ratings a user bucket holds, about
ROW_GROUP_ROWS = 1 << 13  # runs a row group holds
_WORK = pa.schema([*RATINGS_SCHEMA, ("part", pa.int8())])  # part 0 train, 1 val


@dataclass(frozen=True, kw_only=True)
class SequencesOptions(QuietOptions):
    """The arguments of ``python -m pipeline sequences``: :func:`sequences`'s."""

    data_dir: str = argument("dataset directory split by `split-ratings --by time`", metavar="dir")
    max_length: int = option(50, "ratings a training run holds", low=2)
    seed: int = seed_option()


def sequences(
    data_dir: str | os.PathLike,
    max_length: int = SequencesOptions.max_length,
    seed: int = SequencesOptions.seed,
    quiet: bool = SequencesOptions.quiet,
) -> dict:
    """Write the sequence files of ``data_dir``'s time split; return the stats."""
    data_dir = Path(data_dir)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise PipelineError(f"--max-length must be an integer of at least 2, got {max_length!r}")
    seed = check_seed(seed)
    with StageRun(data_dir, SEQUENCES_STATS) as run:
        train_path, val_path = (data_dir / name for name in split_names(0)[0])
        train, val = require(train_path, RATINGS_SCHEMA), require(val_path, RATING_VAL_SCHEMA)
        split_id = check_lineage("split_id", train_path, val_path)
        by = stamps(train).get("split_by")
        if by != "time":
            raise PipelineError(
                f"{train_path}: split {by or 'without a stamp'}, not by time; sequences need "
                "each user's latest ratings in val: rerun "
                "`python -m pipeline split-ratings DIR --by time`"
            )
        facts = {
            "ratings_id": stamps(train)["ratings_id"],
            "split_id": split_id,
            "sequences_id": lineage_id("sequences", split_id, max_length, seed),
            "max_length": str(max_length),
        }
        rows = train.metadata.num_rows + val.metadata.num_rows
        work = run.work("sequences-work")
        buckets = _user_buckets((train, val), work, max(1, -(-rows // BUCKET_ROWS)))
        files = _write(data_dir, buckets, max_length, seed, facts, quiet)
        _check_counts(files, train.metadata.num_rows, val.metadata.num_rows)
        stats = {
            "files": files,
            **facts,
            "max_length": max_length,
            "seed": seed,
            "train_ratings": train.metadata.num_rows,
            "val_ratings": val.metadata.num_rows,
            "seconds": round(run.seconds, 2),
        }
        run.finish(stats)
    return run.stats


def _user_buckets(sources, work: Path, buckets: int) -> list[Path]:
    """The train (part 0) and val (part 1) ratings in bucket files, users by id modulo."""
    paths = [work / f"users-{b}.parquet" for b in range(buckets)]
    writers = [pq.ParquetWriter(path, _WORK) for path in paths]
    for part, source in enumerate(sources):
        for group in range(source.num_row_groups):
            table = source.read_row_group(group, columns=RATINGS_SCHEMA.names)
            table = table.append_column("part", pa.array(np.full(table.num_rows, part, np.int8)))
            bucket = table.column("user").to_numpy() % buckets
            for b in np.unique(bucket):
                writers[b].write_table(table.filter(pa.array(bucket == b)).cast(_WORK))
    for writer in writers:
        writer.close()
    return paths


def _write(data_dir, buckets, max_length, seed, facts, quiet) -> dict:
    """The four files from the user buckets, a bucket at a time; their rows and positions."""
    outputs = {
        SEQUENCES_TRAIN: SEQUENCES_SCHEMA,
        SEQUENCES_VAL: SEQUENCE_VAL_SCHEMA,
        NEXT_TRAIN: SEQUENCES_SCHEMA,
        NEXT_EVAL: NEXT_EVAL_SCHEMA,
    }
    files = {name: {"rows": 0, "positions": 0} for name in outputs}
    with (
        contextlib.ExitStack() as stack,
        progress(len(buckets), "bucket", "sequences", quiet) as bar,
    ):
        writers = {}
        for name, schema in outputs.items():
            tmp = stack.enter_context(atomic_output(data_dir / name))
            schema = stamped(schema, "sequences", **facts)
            writers[name] = stack.enter_context(pq.ParquetWriter(tmp, schema, compression="zstd"))
        for b, path in enumerate(buckets):
            ratings = pq.read_table(path)
            if not ratings.num_rows:
                bar.update(1)
                continue
            for number, (name, table) in enumerate(_bucket_runs(ratings, max_length).items()):
                if name in (SEQUENCES_TRAIN, NEXT_TRAIN):  # training order: seeded, random
                    order = np.random.default_rng([seed, b, number]).permutation(table.num_rows)
                    table = table.take(order)
                writers[name].write_table(table.cast(writers[name].schema), ROW_GROUP_ROWS)
                files[name]["rows"] += table.num_rows
                files[name]["positions"] += int(
                    pc.sum(pc.list_value_length(table["items"])).as_py() or 0
                )
                if "targets" in table.column_names:
                    files[name]["targets"] = files[name].get("targets", 0) + int(
                        table.column("targets").to_numpy().sum()
                    )
            bar.update(1)
    return files


def _bucket_runs(table: pa.Table, max_length: int) -> dict[str, pa.Table]:
    """A bucket's ratings as the four files' rows (see the module doc)."""
    user, item, rating, stamp, part = (table.column(n).to_numpy() for n in _WORK.names)
    order = np.lexsort((item, part, stamp, user))  # by user, time, train first, item
    user, item, rating, stamp, part = (a[order] for a in (user, item, rating, stamp, part))
    start, stop = _segments(user)  # each user's positions
    val_start = start + np.add.reduceat(part == 0, start)  # train positions come first
    columns = {"items": item, "ratings": rating, "timestamps": stamp}

    def runs(lo, hi, extra=None):
        """Rows of the positions lo..hi-1 of each run, with ``extra`` columns."""
        index, offsets = ranges(lo, hi)
        lists = {
            name: pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[index]))
            for name, values in columns.items()
        }
        return pa.table({"user": user[lo], **lists, **(extra or {})})

    # rating runs: the train positions, L at a time from the latest
    _, lo, hi = _windows(start, val_start, max_length, max_length)
    result = {SEQUENCES_TRAIN: runs(lo, hi)}
    # val: L val ratings at a time, after the L positions before them
    owner, first, last = _windows(val_start, stop, max_length, max_length, from_start=True)
    lo = np.maximum(start[owner], first - max_length)
    result[SEQUENCES_VAL] = runs(lo, last, {"targets": pa.array((last - first).astype(np.int32))})
    # next item: users with three or more ratings; all but the last two in runs of L + 1
    held = stop - start >= 3
    _, lo, hi = _windows(start[held], stop[held] - 2, max_length + 1, max_length, minimum=2)
    result[NEXT_TRAIN] = runs(lo, hi)
    index, offsets = ranges(start[held], stop[held] - 1)
    result[NEXT_EVAL] = pa.table(
        {
            "user": user[start[held]],
            "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(item[index])),
            "target": item[stop[held] - 1],
        }
    )
    return result


def _segments(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each run of equal values in a sorted array."""
    change = np.flatnonzero(np.diff(key)) + 1
    return np.concatenate([[0], change]), np.concatenate([change, [len(key)]])


def _windows(start, stop, size: int, step: int, minimum: int = 1, from_start: bool = False):
    """(owner, lo, hi) of the windows of ``size`` positions, ``step`` apart, that cover
    each range [start, stop) of at least ``minimum`` positions: aligned at the end
    (the latest window full) or at the start; each range's windows in time order.

    With ``step`` = ``size`` - 1 (windows overlapping by one) an end-aligned
    range's earliest window still has two positions or more.
    """
    length = stop - start
    count = np.where(length >= minimum, 1 + np.maximum(0, -(-(length - size) // step)), 0)
    owner = np.repeat(np.arange(len(start)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # 0: the earliest
    if from_start:
        lo = start[owner] + k * step
        return owner, lo, np.minimum(lo + size, stop[owner])
    hi = stop[owner] - (count[owner] - 1 - k) * step
    return owner, np.maximum(hi - size, start[owner]), hi


def _check_counts(files: dict, train_ratings: int, val_ratings: int) -> None:
    """Every train rating once in the train runs, every val rating once as a target."""
    if files[SEQUENCES_TRAIN]["positions"] != train_ratings:
        raise AssertionError("sequences-train does not hold each train rating once")
    if files[SEQUENCES_VAL].get("targets", 0) != val_ratings:
        raise AssertionError("sequences-val does not hold each val rating once as a target")
