"""pipeline sequences: each user's runs in time order, against a brute-force reference."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_lines
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.sequences as sequences_module
from pipeline.contracts import NEXT_EVAL, NEXT_TRAIN, SEQUENCES_TRAIN, SEQUENCES_VAL
from pipeline.errors import PipelineError
from pipeline.ratings import ratings
from pipeline.sequences import sequences
from pipeline.split_ratings import split_ratings

FILES = (SEQUENCES_TRAIN, SEQUENCES_VAL, NEXT_TRAIN, NEXT_EVAL)


def reference(rows, max_length: int) -> dict[str, list]:
    """The four files' rows, one user at a time in plain Python.

    ``rows``: (user, item, rating, timestamp, part) with part 0 train, 1 val.
    """
    by_user = collections.defaultdict(list)
    for user, item, rating, stamp, part in rows:
        by_user[user].append((stamp, part, item, rating))
    out = {name: [] for name in FILES}
    for user, history in by_user.items():
        history.sort()
        seq = [(item, rating, stamp) for stamp, _, item, rating in history]
        train = [h for h, (_, part, _, _) in zip(seq, history) if part == 0]
        val_count = len(seq) - len(train)
        assert seq[: len(train)] == train  # the time split puts the latest in val
        end = len(train)
        while end > 0:  # train runs of L from the latest
            out[SEQUENCES_TRAIN].append((user, tuple(train[max(0, end - max_length) : end]), None))
            end -= max_length
        for first in range(len(train), len(train) + val_count, max_length):
            last = min(first + max_length, len(seq))
            row = tuple(seq[max(0, first - max_length) : last])
            out[SEQUENCES_VAL].append((user, row, last - first))
        if len(seq) >= 3:
            history_items, end = seq[:-2], len(seq) - 2
            while True:  # runs of L + 1 from the latest, overlapping by one
                start = max(0, end - max_length - 1)
                if end - start >= 2:
                    out[NEXT_TRAIN].append((user, tuple(history_items[start:end]), None))
                if start == 0:
                    break
                end -= max_length
            out[NEXT_EVAL].append((user, tuple(i for i, _, _ in seq[:-1]), seq[-1][0]))
    return {name: sorted(values, key=repr) for name, values in out.items()}


def rows_of(table: pa.Table, name: str) -> list:
    """A file's rows in the reference's shape."""
    found = []
    for row in table.to_pylist():
        if name == NEXT_EVAL:
            found.append((row["user"], tuple(row["items"]), row["target"]))
            continue
        steps = tuple(zip(row["items"], row["ratings"], row["timestamps"]))
        found.append((row["user"], steps, row.get("targets")))
    return sorted(found, key=repr)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """1,000 ratings of 60 users (1 to 40 each), timestamps with ties, split by time."""
    folder = tmp_path_factory.mktemp("sequences")
    rng = np.random.default_rng(5)
    lines = []
    for user in range(60):
        items = rng.choice(80, int(rng.integers(1, 41)), replace=False)
        for item in items:
            lines.append(f"{user}\t{item}\t{rng.integers(1, 6)}\t{rng.integers(0, 15)}")
    rng.shuffle(lines)
    ratings(write_lines(folder / "u.data", lines), folder, quiet=True)
    split_ratings(folder, by="time", quiet=True)
    return folder


def split_rows(folder: Path) -> list:
    rows = []
    for part, name in enumerate(("ratings-train.parquet", "ratings-val.parquet")):
        table = pq.read_table(folder / name, columns=["user", "item", "rating", "timestamp"])
        rows += [(*row.values(), part) for row in table.to_pylist()]
    return rows


@pytest.mark.parametrize("max_length", [2, 3, 7, 50])
def test_files_equal_the_brute_force_reference(dataset, max_length):
    stats = sequences(dataset, max_length=max_length, quiet=True)
    expected = reference(split_rows(dataset), max_length)
    for name in FILES:
        assert rows_of(pq.read_table(dataset / name), name) == expected[name], name
    train = pq.read_table(dataset / "ratings-train.parquet").num_rows
    val = pq.read_table(dataset / "ratings-val.parquet").num_rows
    assert stats["files"][SEQUENCES_TRAIN]["positions"] == train
    assert stats["files"][SEQUENCES_VAL]["targets"] == val
    assert stats["files"][NEXT_EVAL]["rows"] == len(expected[NEXT_EVAL])


def test_no_val_rating_is_in_its_own_history_and_runs_are_in_time_order(dataset):
    sequences(dataset, max_length=4, quiet=True)
    for row in pq.read_table(dataset / SEQUENCES_VAL).to_pylist():
        context = len(row["items"]) - row["targets"]
        assert 0 <= context <= 4 and 1 <= row["targets"] <= 4
        assert len(set(row["items"])) == len(row["items"])  # each item once: no target seen before
        assert row["timestamps"] == sorted(row["timestamps"])
    for row in pq.read_table(dataset / NEXT_TRAIN).to_pylist():
        assert 2 <= len(row["items"]) <= 5  # L + 1 items: L transitions at most


def test_same_input_same_bytes_and_buckets_change_nothing(dataset, tmp_path, monkeypatch):
    sequences(dataset, max_length=5, quiet=True)
    first = {name: (dataset / name).read_bytes() for name in FILES}
    sequences(dataset, max_length=5, quiet=True)
    assert first == {name: (dataset / name).read_bytes() for name in FILES}
    monkeypatch.setattr(sequences_module, "BUCKET_ROWS", 100)  # 10 user buckets
    sequences(dataset, max_length=5, quiet=True)
    expected = reference(split_rows(dataset), 5)
    for name in FILES:
        assert rows_of(pq.read_table(dataset / name), name) == expected[name]


def test_one_line_errors(dataset, tmp_path):
    with pytest.raises(PipelineError, match="--max-length must be an integer of at least 2"):
        sequences(dataset, max_length=1, quiet=True)
    with pytest.raises(PipelineError, match=r"ratings-train\.parquet: not found"):
        sequences(tmp_path, quiet=True)
    other = tmp_path / "random"
    other.mkdir()
    for name in ("ratings.parquet", "users.parquet", "items.parquet"):
        (other / name).write_bytes((dataset / name).read_bytes())
    split_ratings(other, by="random", quiet=True)
    with pytest.raises(PipelineError, match=r"split random, not by time.*--by time"):
        sequences(other, quiet=True)
    assert not any((other / name).exists() for name in FILES)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 30), st.integers(1, 5), st.integers(0, 4)),
        max_size=120,
        unique_by=lambda r: (r[0], r[1]),
    ),
    st.integers(2, 6),
    st.floats(0.05, 0.6),
)
def test_any_history_matches_the_reference(ratings_rows, max_length, val_prop):
    """Runs of a user bucket, from any ratings with ties, equal the reference's."""
    rows = []
    by_user = collections.defaultdict(list)
    for user, item, rating, stamp in ratings_rows:
        by_user[user].append((stamp, item, rating))
    for user, history in by_user.items():  # a time split: each user's latest share is val
        history.sort()
        held = int(np.floor(len(history) * val_prop + 0.5))
        for position, (stamp, item, rating) in enumerate(history):
            rows.append((user, item, float(rating), stamp, int(position >= len(history) - held)))
    columns = list(zip(*rows)) if rows else [[]] * 5
    table = pa.table(
        [pa.array(c, t) for c, t in zip(columns, sequences_module._WORK.types)],
        schema=sequences_module._WORK,
    )
    if not rows:
        return
    found = sequences_module._bucket_runs(table, max_length)
    expected = reference(rows, max_length)
    for name in FILES:
        assert rows_of(found[name], name) == expected[name], name
