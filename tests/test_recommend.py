"""`recommend` and `similar` on a ratings run: unrated items only, keys and titles, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_lines

from pipeline.errors import PipelineError
from pipeline.ratings import ratings
from pipeline.split_ratings import split_ratings
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.recommend import recommend
from recsys_stream.similar import similar

REPO = Path(__file__).resolve().parents[1]
ITEMS = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A trained mf_bias run on 60 users' ratings of 40 titled movies (ids 100..139)."""
    folder = tmp_path_factory.mktemp("recommend")
    rng = np.random.default_rng(0)
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 61):
        for item in rng.choice(ITEMS, size=int(rng.integers(5, 30)), replace=False):
            lines.append(f"{user},{100 + item},{rng.integers(1, 6)},{user * 1000 + item}")
    titles = ["movieId,title,genres"]
    titles += [f'{100 + i},"Movie {i}, The (2000)",Drama' for i in range(ITEMS)]
    raw = write_lines(folder / "ratings.csv", lines)
    ratings(raw, folder, titles=write_lines(folder / "movies.csv", titles), quiet=True)
    split_ratings(folder, quiet=True)
    train(folder, TrainConfig.defaults("ratings", epochs=2, dim=8), quiet=True)
    return folder / "runs" / "mf_bias"


def rated_by(run: Path, key: str) -> set[str]:
    data = run.parents[1]
    users = pq.read_table(data / "users.parquet").column("key").to_pylist()
    items = pq.read_table(data / "items.parquet").column("key").to_pylist()
    table = pq.read_table(data / "ratings.parquet")
    user = users.index(key)
    mine = table.column("user").to_numpy() == user
    return {items[i] for i in table.column("item").to_numpy()[mine]}


def test_recommendations_are_the_best_unrated_items_with_titles(run):
    for user in ("1", "7", "60"):
        result = recommend(run, user, k=ITEMS)
        rated = rated_by(run, user)
        assert result.rated == len(rated)
        keys = [item.key for item in result.items]
        assert len(keys) == ITEMS - len(rated)  # k clamped to the unrated items
        assert not set(keys) & rated and set(keys) | rated == {str(100 + i) for i in range(ITEMS)}
        scores = [item.predicted for item in result.items]
        assert scores == sorted(scores, reverse=True)
        first = result.items[0]
        assert first.title == f"Movie {int(first.key) - 100}, The (2000)"
    assert len(recommend(run, "1", k=3).items) == 3


def test_unknown_users_and_bad_k_are_one_line_errors(run):
    with pytest.raises(PipelineError, match="unknown user '999'"):
        recommend(run, "999")
    with pytest.raises(PipelineError, match="-k must be at least 1"):
        recommend(run, "1", k=0)


def test_similar_items_of_a_ratings_run_by_cosine(run):
    result = similar(run, ["100", "nope"], k=5)
    known, unknown = result.answers
    assert known.title == "Movie 0, The (2000)" and len(known.similar) == 5
    assert "100" not in [n.asin for n in known.similar]
    scores = [n.score for n in known.similar]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert unknown.error == "unknown ASIN"


def test_recommend_command_line(run):
    done = subprocess.run(
        [sys.executable, "-m", "recsys_stream", "recommend", str(run), "5", "-k", "2", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(done.stdout)
    assert answer["user"] == "5" and len(answer["items"]) == 2
    assert not {item["key"] for item in answer["items"]} & rated_by(run, "5")
