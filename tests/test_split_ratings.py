"""split-ratings: random, per-user temporal and K-fold splits, against brute force."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_lines

import pipeline.ratings as ratings_module
import pipeline.split_ratings as split_module
from pipeline.errors import PipelineError
from pipeline.ratings import ratings
from pipeline.split_ratings import split_ratings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """600 ratings of 40 users (1 to 30 each) on 50 items, in row groups of 64."""
    folder = tmp_path_factory.mktemp("ratings")
    rng = np.random.default_rng(3)
    lines, seen = [], set()
    for user in range(40):
        for _ in range(int(rng.integers(1, 31))):
            item = int(rng.integers(0, 50))
            if (user, item) not in seen:
                seen.add((user, item))
                lines.append(f"{user}\t{item}\t{rng.integers(1, 6)}\t{rng.integers(0, 20)}")
    rng.shuffle(lines)
    raw = write_lines(folder / "u.data", lines)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ratings_module, "ROW_GROUP_ROWS", 64)
        ratings(raw, folder, quiet=True)
    return folder


def rows(path: Path) -> list[tuple]:
    table = pq.read_table(path, columns=["user", "item", "rating", "timestamp"])
    return list(zip(*(table.column(n).to_pylist() for n in table.column_names)))


def everything(data: Path) -> list[tuple]:
    return rows(data / "ratings.parquet")


def test_random_split_holds_out_the_share_of_each_row_group(dataset):
    stats = split_ratings(dataset, val_prop=0.25, seed=5, quiet=True)
    train, val = rows(dataset / "ratings-train.parquet"), rows(dataset / "ratings-val.parquet")
    assert sorted(train + val) == sorted(everything(dataset))
    groups = pq.ParquetFile(dataset / "ratings.parquet").metadata
    sizes = [groups.row_group(g).num_rows for g in range(groups.num_row_groups)]
    assert len(sizes) > 3 and len(val) == sum(int(n * 0.25 + 0.5) for n in sizes)
    assert stats["files"]["ratings-val.parquet"]["rows"] == len(val)
    assert train != sorted(train) and train[:20] != everything(dataset)[:20]  # shuffled


def test_time_split_holds_out_each_users_latest_ratings(dataset, monkeypatch):
    monkeypatch.setattr(split_module, "BUCKET_ROWS", 100)  # several user buckets
    split_ratings(dataset, by="time", val_prop=0.2, quiet=True)
    train, val = rows(dataset / "ratings-train.parquet"), rows(dataset / "ratings-val.parquet")
    by_user = collections.defaultdict(list)
    for position, row in enumerate(everything(dataset)):
        by_user[row[0]].append((row[3], position, row))  # time, then file order
    expected_val = set()
    for ratings_of_user in by_user.values():
        ordered = [row for _, _, row in sorted(ratings_of_user)]
        held = int(len(ordered) * 0.2 + 0.5)
        expected_val.update(ordered[len(ordered) - held :])
    assert set(val) == expected_val and len(val) == len(expected_val)
    assert sorted(train + val) == sorted(everything(dataset))


def test_folds_are_disjoint_complete_and_balanced(dataset):
    stats = split_ratings(dataset, folds=4, seed=9, quiet=True)
    vals = [rows(dataset / f"ratings-val-fold{k}.parquet") for k in range(1, 5)]
    assert sorted(row for val in vals for row in val) == sorted(everything(dataset))
    for k, val in enumerate(vals, 1):
        train = rows(dataset / f"ratings-train-fold{k}.parquet")
        assert sorted(train + val) == sorted(everything(dataset))
    groups = pq.ParquetFile(dataset / "ratings.parquet").metadata.num_row_groups
    assert max(map(len, vals)) - min(map(len, vals)) <= groups
    assert stats["by"] == "folds" and len(stats["files"]) == 8


def test_order_split_holds_out_the_files_first_ratings(dataset):
    stats = split_ratings(dataset, by="order", val_prop=0.2, quiet=True)
    train, val = rows(dataset / "ratings-train.parquet"), rows(dataset / "ratings-val.parquet")
    held = int(len(everything(dataset)) * 0.2 + 0.5)
    assert sorted(val) == sorted(everything(dataset)[:held])
    assert sorted(train) == sorted(everything(dataset)[held:])
    assert stats["by"] == "order" and stats["files"]["ratings-val.parquet"]["rows"] == held


def test_ordered_folds_are_consecutive_blocks(dataset):
    stats = split_ratings(dataset, by="order", folds=4, quiet=True)
    ordered = everything(dataset)
    edges = [-(-len(ordered) * k // 4) for k in range(5)]  # row r falls in block 4r // rows
    for k in range(1, 5):
        val = rows(dataset / f"ratings-val-fold{k}.parquet")
        assert sorted(val) == sorted(ordered[edges[k - 1] : edges[k]])
    assert stats["by"] == "order" and stats["folds"] == 4


def test_movielens_100k_order_split_is_the_archives_u1():
    """recbole's ml-100k.inter keeps u.data's line order, so ``--by order`` makes mku.sh's
    u1.base and u1.test (u1.test: u.data's first 20,000 lines, sorted by user and item)."""
    recbole = pytest.importorskip(
        "recbole", reason="bench-only: make .venv/.recsys-stream-bench-installed"
    )
    raw = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
    assert raw.read_text().splitlines()[1:4] == [
        "196\t242\t3\t881250949",  # u.data's first lines
        "186\t302\t3\t891717742",
        "22\t377\t1\t878887116",
    ]
    out = Path(tempfile.mkdtemp())
    try:
        ratings(raw, out, scale="1:5", quiet=True)
        stats = split_ratings(out, by="order", val_prop=0.2, quiet=True)
        keys = {
            name: pq.read_table(out / f"{name}s.parquet").column("key").to_pylist()
            for name in ("user", "item")
        }
        test = sorted(
            (int(keys["user"][u]), int(keys["item"][i]), int(r), t)
            for u, i, r, t in rows(out / "ratings-val.parquet")
        )
    finally:
        shutil.rmtree(out)
    assert stats["files"]["ratings-train.parquet"]["rows"] == 80_000
    assert stats["files"]["ratings-val.parquet"]["rows"] == 20_000
    assert stats["files"]["ratings-val.parquet"]["unseen_items"] == 32  # items only in u1.test
    assert test[:2] == [(1, 6, 5, 887431973), (1, 10, 3, 875693118)]  # u1.test's first lines
    assert len({u for u, *_ in test}) == 459 and len({i for _, i, *_ in test}) == 1410


def test_seen_flags_match_the_train_file(dataset):
    split_ratings(dataset, val_prop=0.5, seed=1, quiet=True)
    train = pq.read_table(dataset / "ratings-train.parquet")
    val = pq.read_table(dataset / "ratings-val.parquet")
    users, items = set(train.column("user").to_pylist()), set(train.column("item").to_pylist())
    assert val.column("user_seen").to_pylist() == [
        u in users for u in val.column("user").to_pylist()
    ]
    assert val.column("item_seen").to_pylist() == [
        i in items for i in val.column("item").to_pylist()
    ]
    assert not all(val.column("item_seen").to_pylist())  # half held out: some items only in val


def test_same_seed_same_files_and_another_seed_others(dataset):
    found = []
    for seed in (4, 4, 5):
        split_ratings(dataset, seed=seed, quiet=True)
        found.append((dataset / "ratings-train.parquet").read_bytes())
    assert found[0] == found[1] != found[2]


def test_bad_options_are_one_line_errors(dataset, tmp_path):
    for options, message in [
        ({"by": "user"}, "--by must be one of random, time, order"),
        ({"val_prop": 1.0}, "--val-prop must be between 0 and 1"),
        ({"folds": 1}, "--folds must be 0 \\(no folds\\) or at least 2"),
        ({"folds": 3, "by": "time"}, "cannot be used with --by time"),
    ]:
        with pytest.raises(PipelineError, match=message):
            split_ratings(dataset, quiet=True, **options)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "split-ratings", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "ratings.parquet: not found" in done.stderr
