"""Synthetic ratings with planted structure, in MovieLens' or Amazon's file format.

For tests, the demo and benchmarks at Amazon scale (Books 2018: about 8M users,
2M items, 20M+ ratings), where the real files cannot be downloaded here.

- Each user and item has planted factors (``DIM`` of them) and a bias; a
  rating is ``MEAN + b_user + b_item + <p_user, q_item> + noise``, rounded to
  whole stars and clipped to 1..5. A model that learns the factors predicts
  well below the RMSE of the global mean.
- Activity is heavy-tailed: a user's share of the ratings and an item's
  popularity are Pareto distributed, so a few users rate a lot and a few
  items are rated by many (as in every real ratings file).
- A user rates distinct items, at increasing timestamps from a start of
  their own.
- ``sequential``: a user's history has a planted order that only its past
  reveals (for sequence models). The items stand on a ring; each user walks
  it with a stride of their own (1 to ``STRIDES``), so the next item follows
  from the last one and the user's stride, which the earlier steps show; a
  share ``JUMP`` of the ratings are popularity draws off the walk. And a
  user's mood, drawn anew every ``MOOD_SPAN`` ratings, shifts their ratings:
  the last few ratings foretell the next, which no per-user bias can.

Users are made a chunk at a time (their factors from a generator seeded by
the seed and the chunk), items once; lines are written a chunk at a time, so
memory holds the items and one chunk whatever the size. The same seed and
sizes give the same file.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.cli import check_seed
from pipeline.errors import PipelineError
from pipeline.files import atomic_output
from pipeline.options import QuietOptions, argument, option, seed_option
from pipeline.progress import progress
from pipeline.synth import open_output

FORMATS = ("movielens-csv", "amazon")
DIM = 8
MEAN = 3.6
NOISE = 0.5
BIAS = 0.4
ACTIVITY_TAIL = 1.5  # Pareto index of user activity and item popularity
START = 1_300_000_000  # unix seconds: 2011
SPAN = 200_000_000  # seconds over which users start rating
USER_CHUNK = 100_000
STRIDES = 6  # sequential: a user's stride along the ring of items, 1..STRIDES
JUMP = 0.2  # sequential: share of ratings drawn by popularity instead
MOOD_SPAN = 10  # sequential: ratings a mood lasts
MOOD = 0.8  # sequential: std of a mood's shift of the ratings


@dataclass(frozen=True, kw_only=True)
class SynthRatingsOptions(QuietOptions):
    """The arguments of ``python -m pipeline synth-ratings``: :func:`generate_ratings`'s."""

    out: str = argument("output file; gzipped when it ends in .gz")
    users: int = option(parse=int, low=1)
    items: int = option(parse=int, low=1)
    ratings: int = option(help="about this many", parse=int, low=1)
    fmt: str = option("movielens-csv", choices=FORMATS, flag="--format")
    seed: int = seed_option()
    sequential: bool = option(
        False, "plant an order in each user's history that sequence models can learn"
    )


def generate_ratings(
    out: str | os.PathLike,
    users: int,
    items: int,
    ratings: int,
    fmt: str = SynthRatingsOptions.fmt,
    seed: int = SynthRatingsOptions.seed,
    sequential: bool = SynthRatingsOptions.sequential,
    quiet: bool = SynthRatingsOptions.quiet,
) -> dict:
    """Write about ``ratings`` ratings of ``users`` users on ``items`` items to ``out``
    (gzipped when it ends in .gz); return what was written."""
    for name, value in (("--users", users), ("--items", items), ("--ratings", ratings)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PipelineError(f"{name} must be a positive integer, got {value!r}")
    if ratings > users * items // 2:
        raise PipelineError(f"--ratings {ratings} is more than half of users x items")
    if fmt not in FORMATS:
        raise PipelineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    seed = check_seed(seed)
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 0])
    item_factors = rng.normal(0, 1 / np.sqrt(DIM), (items, DIM)).astype(np.float32)
    item_bias = rng.normal(0, BIAS, items).astype(np.float32)
    popularity = rng.pareto(ACTIVITY_TAIL, items) + 1
    cumulative = np.cumsum(popularity / popularity.sum())
    activity = rng.pareto(ACTIVITY_TAIL, users) + 1  # each user's share, before scaling
    wanted = np.maximum(1, np.round(activity / activity.sum() * ratings)).astype(np.int64)
    wanted = np.minimum(wanted, items // 2)
    out = Path(out)
    written = 0
    with (
        atomic_output(out) as tmp,
        open_output(tmp, out.suffix == ".gz") as file,
        progress(users, "users", f"synth-ratings {out.name}", quiet) as bar,
    ):
        if fmt == "movielens-csv":
            file.write(b"userId,movieId,rating,timestamp\n")
        for first in range(0, users, USER_CHUNK):
            chunk_rng = np.random.default_rng([seed, 1, first // USER_CHUNK])
            count = wanted[first : first + USER_CHUNK]
            frame = _chunk(chunk_rng, first, count, cumulative, item_factors, item_bias, sequential)
            file.write(_render(frame, fmt))
            written += frame.height
            bar.update(len(count))
    return {
        "out": str(out),
        "format": fmt,
        "users": users,
        "items": items,
        "ratings": written,
        "seed": seed,
        "sequential": sequential,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _chunk(
    rng, first, count, cumulative, item_factors, item_bias, sequential=False
) -> pl.DataFrame:
    """The ratings of users first..first+len(count)-1: distinct items a user, in time order."""
    user = np.repeat(np.arange(first, first + len(count)), count)
    item = np.minimum(np.searchsorted(cumulative, rng.random(len(user))), len(cumulative) - 1)
    if sequential:
        item = np.where(
            rng.random(len(user)) < JUMP, item, _walks(rng, user - first, count, len(cumulative))
        )
    distinct = np.unique(user.astype(np.int64) * len(cumulative) + item, return_index=True)[1]
    user, item = user[np.sort(distinct)], item[np.sort(distinct)]  # a repeated draw is dropped
    factors = rng.normal(0, 1 / np.sqrt(DIM), (len(count), DIM)).astype(np.float32)
    bias = rng.normal(0, BIAS, len(count)).astype(np.float32)
    local = user - first
    score = MEAN + bias[local] + item_bias[item]
    score += np.einsum("ij,ij->i", factors[local], item_factors[item]) * 2
    score += rng.normal(0, NOISE, len(user))
    if sequential:  # a mood a user's MOOD_SPAN ratings at a time
        rank = np.arange(len(user)) - np.searchsorted(user, user, side="left")
        spans = -(-np.bincount(local, minlength=len(count)) // MOOD_SPAN)
        first_span = np.cumsum(spans) - spans
        score += rng.normal(0, MOOD, spans.sum())[first_span[local] + rank // MOOD_SPAN]
    stars = np.clip(np.round(score), 1, 5).astype(np.int8)
    start = START + rng.integers(0, SPAN, len(count))
    step = rng.integers(60, 30 * 86_400, len(user))
    # each user's timestamps: their start plus the running sum of their steps
    running = np.cumsum(step)
    before = np.concatenate([[0], running])[np.searchsorted(user, user, side="left")]
    stamp = start[local] + running - before
    return pl.DataFrame({"user": user, "item": item, "rating": stars, "timestamp": stamp})


def _walks(rng, local: np.ndarray, count: np.ndarray, items: int) -> np.ndarray:
    """Each rating's item on its user's walk around the ring of ``items``: a start of
    their own, then steps of their stride, now and then one more or one less
    (``local``: each rating's user in the chunk, grouped)."""
    stride = rng.integers(1, STRIDES + 1, len(count))
    start = rng.integers(0, items, len(count))
    step = stride[local] + rng.choice([-1, 0, 0, 0, 1], len(local))
    running = np.cumsum(step)
    before = np.concatenate([[0], running])[np.searchsorted(local, local, side="left")]
    return (start[local] + running - before) % items


def _render(frame: pl.DataFrame, fmt: str) -> bytes:
    """The chunk's lines in ``fmt``."""
    if fmt == "movielens-csv":
        buffer = io.BytesIO()
        frame.write_csv(buffer, include_header=False)
        return buffer.getvalue()
    line = pl.concat_str(
        pl.lit('{"reviewerID": "A'),
        pl.col("user"),
        pl.lit('", "asin": "B'),
        pl.col("item"),
        pl.lit('", "overall": '),
        pl.col("rating"),
        pl.lit('.0, "unixReviewTime": '),
        pl.col("timestamp"),
        pl.lit("}\n"),
    )
    return "".join(frame.select(line).to_series().to_list()).encode()
