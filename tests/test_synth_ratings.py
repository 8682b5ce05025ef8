"""The synthetic ratings: readable by the ratings stage, distinct, in time order, heavy-tailed."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import PipelineError
from pipeline.ratings import ratings
from pipeline.synth_ratings import generate_ratings


@pytest.mark.parametrize("fmt, name", [("movielens-csv", "r.csv"), ("amazon", "r.json.gz")])
def test_the_ratings_stage_reads_every_line(tmp_path, fmt, name):
    made = generate_ratings(tmp_path / name, 3_000, 2_000, 30_000, fmt=fmt, seed=1, quiet=True)
    stats = ratings(tmp_path / name, tmp_path / "out", quiet=True)
    assert (stats["format"], stats["rejected"], stats["repeated"]) == (fmt, 0, 0)
    assert stats["ratings"] == made["ratings"] and 0.9 * 30_000 < made["ratings"] <= 31_000
    table = pq.read_table(tmp_path / "out" / "ratings.parquet")
    assert set(np.unique(table.column("rating").to_numpy())) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    user, stamp = table.column("user").to_numpy(), table.column("timestamp").to_numpy()
    same_user = user[1:] == user[:-1]  # the file holds each user's ratings together
    assert (np.diff(stamp)[same_user] > 0).all()
    per_user = np.sort(np.bincount(user))[::-1]
    assert per_user[: len(per_user) // 10].sum() > 0.3 * per_user.sum()  # a heavy head


def test_same_seed_same_file_and_one_line_errors(tmp_path):
    files = []
    for seed in (3, 3, 4):
        generate_ratings(tmp_path / "r.csv", 100, 50, 500, seed=seed, quiet=True)
        files.append((tmp_path / "r.csv").read_bytes())
    assert files[0] == files[1] != files[2]
    for name in ("a.json.gz", "b.json.gz"):  # no file name or time in the gzip header
        generate_ratings(tmp_path / name, 100, 50, 500, fmt="amazon", quiet=True)
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()
    with pytest.raises(PipelineError, match="--users must be a positive integer"):
        generate_ratings(tmp_path / "x.csv", 0, 5, 5, quiet=True)
    with pytest.raises(PipelineError, match="more than half of users x items"):
        generate_ratings(tmp_path / "x.csv", 10, 10, 60, quiet=True)
