"""Nearest neighbours: the exact blocked top-k against brute force, faiss indexes, --all tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from planted import write_planted

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run
from recsys_stream.neighbours import approximate, exact, table
from recsys_stream.neighbours.approximate import Approximate, Space
from recsys_stream.neighbours.exact import Exclusions, top_k
from recsys_stream.neighbours.table import rated_by, recommend_all, similar_all
from recsys_stream.recommend import recommend
from recsys_stream.similar import similar

REPO = Path(__file__).resolve().parents[1]


def reference(queries, candidates, k, bias=None, excluded=None):
    """Brute force in float64: each row's k best by score, then smaller id; -1 pads."""
    scores = queries.double() @ candidates.double().T
    if bias is not None:
        scores += bias.double()
    ids, values = [], []
    for row, line in enumerate(scores.numpy()):
        allowed = [j for j in range(len(line)) if j not in (excluded or {}).get(row, ())]
        ranked = sorted(allowed, key=lambda j: (-line[j], j))[:k]
        ids.append(ranked + [-1] * (k - len(ranked)))
        values.append([line[j] for j in ranked] + [-np.inf] * (k - len(ranked)))
    return np.array(ids), np.array(values)


@pytest.fixture
def small_tiles(monkeypatch):
    """Blocks of 3 queries and tiles of up to 128 candidates, ordered and bounded
    however few the queries."""
    monkeypatch.setattr(exact, "QUERY_BLOCK", 3)
    monkeypatch.setattr(exact, "TILE", 128)
    monkeypatch.setattr(exact, "ORDER_FROM", 1)


@pytest.mark.parametrize("order_from", [1, 10_000])  # tiles bounded, or in id order
def test_exact_top_k_matches_brute_force_with_ties_bias_and_exclusions(
    small_tiles, order_from, monkeypatch
):
    monkeypatch.setattr(exact, "ORDER_FROM", order_from)
    generator = torch.Generator().manual_seed(0)
    # small integers: every score is exact in float32, and many tie
    candidates = torch.randint(-2, 3, (700, 4), generator=generator).float()
    queries = torch.randint(-2, 3, (10, 4), generator=generator).float()
    bias = torch.randint(-1, 2, (700,), generator=generator).float()
    excluded = {0: [5, 17, 300], 3: [1], 9: list(range(0, 700, 2))}
    offsets = np.cumsum([0] + [len(excluded.get(row, [])) for row in range(10)])
    flat = np.concatenate([excluded.get(row, []) for row in range(10)]).astype(np.int64)
    exclusions = Exclusions(offsets.astype(np.int64), flat)
    for k in (1, 7, 40):
        want_ids, want_scores = reference(queries, candidates, k, bias, excluded)
        for threads in (1, 2):
            ids, scores = top_k(queries, candidates, k, bias, exclusions, threads=threads)
            np.testing.assert_array_equal(ids, want_ids)
            np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    ties = (want_scores[:, :-1] == want_scores[:, 1:]).sum()
    assert ties > 50  # the ties were there to break


def test_a_row_with_fewer_candidates_than_k_is_padded():
    candidates = torch.eye(3)
    ids, scores = top_k(torch.ones(2, 3), candidates, 5, exclusions=Exclusions.own(np.arange(2)))
    assert ids.tolist() == [[1, 2, -1, -1, -1], [0, 2, -1, -1, -1]]
    assert np.isneginf(scores[:, 2:]).all()


def test_exclusions_take_and_block_keep_each_querys_slice():
    exclusions = Exclusions(np.array([0, 2, 2, 5]), np.array([1, 4, 0, 3, 9]))
    taken = exclusions.take(np.array([2, 0]))
    assert taken.offsets.tolist() == [0, 3, 5] and taken.ids.tolist() == [0, 3, 9, 1, 4]
    block = exclusions.block(1, 3)
    assert block.offsets.tolist() == [0, 0, 3] and block.ids.tolist() == [0, 3, 9]


def test_the_l2_lift_orders_as_the_inner_product_plus_bias():
    generator = torch.Generator().manual_seed(1)
    space = Space(
        torch.randn(20, 6, generator=generator),
        torch.randn(300, 6, generator=generator) * torch.rand(300, 1, generator=generator),
        torch.randn(300, generator=generator),
        False,
    )
    queries, candidates = approximate.l2_rows(space)
    distance = ((queries[:, None, :] - candidates[None, :, :]) ** 2).sum(-1)
    scores = space.queries @ space.candidates.T + space.bias
    np.testing.assert_array_equal(distance.argmin(1), scores.argmax(1).numpy())


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_an_index_with_room_to_search_finds_the_exact_answer(kind, monkeypatch):
    monkeypatch.setattr(approximate, "IVF_PROBES", 10_000)  # every list
    generator = torch.Generator().manual_seed(2)
    vectors = torch.randn(500, 8, generator=generator)
    bias = torch.randn(500, generator=generator)
    space = Space(vectors, vectors, bias, False)
    index = Approximate(space, approximate.build(space, kind), kind)
    queries = np.arange(0, 500, 7)
    found, scores = index.search(queries, 10, Exclusions.own(queries))
    want_ids, want_scores = top_k(vectors[queries], vectors, 10, bias, Exclusions.own(queries))
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = write_planted(tmp_path_factory.mktemp("all"), products=300, pairs=3000, row_group=64)
    for model in ("mf", "mf_bias"):
        config = TrainConfig(model=model, labels="binary", epochs=1, batch_size=128, lr=0.05)
        train(data, config, quiet=True)
    return data / "runs"


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("name", ["mf-binary", "mf_bias-binary"])
def test_similar_all_writes_every_product_once_as_similar_answers(runs, name, tmp_path):
    out = tmp_path / "similar.parquet"
    stats = similar_all(runs / name, k=4, out=out, quiet=True)
    rows = read(out)
    assert stats["rows"] == len(rows) == 300 * 4 and stats["queries"] == 300
    assert json.loads(out.with_suffix(".json").read_text()) == stats
    assert pq.read_schema(out).names == [
        "asin", "rank", "similar_asin", "score", "title", "similar_title"
    ]  # fmt: skip
    assert [row["asin"] for row in rows[::4]] == [f"P{i:09d}" for i in range(300)]
    assert [row["rank"] for row in rows[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert all(row["asin"] != row["similar_asin"] for row in rows)
    assert rows[0]["title"].startswith("product 0 ")
    assert rows[0]["similar_title"].startswith(f"product {int(rows[0]['similar_asin'][1:])} ")
    asked = ["P000000000", "P000000123", "P000000299"]
    for answer in similar(runs / name, asked, k=4).answers:
        mine = [row for row in rows if row["asin"] == answer.asin]
        assert [row["similar_asin"] for row in mine] == [n.asin for n in answer.similar]
        np.testing.assert_allclose(
            [row["score"] for row in mine], [n.score for n in answer.similar], atol=1e-6
        )


def test_similar_all_is_the_same_file_at_any_thread_count(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(exact, "QUERY_BLOCK", 16)  # 19 blocks, shared by two threads
    similar_all(runs / "mf_bias-binary", k=5, out=tmp_path / "two.parquet", quiet=True)
    monkeypatch.setattr(exact, "THREADS", 1)
    similar_all(runs / "mf_bias-binary", k=5, out=tmp_path / "one.parquet", quiet=True)
    assert read(tmp_path / "one.parquet") == read(tmp_path / "two.parquet")


def test_similar_all_of_some_asins_and_unknown_ones(runs, tmp_path):
    out = tmp_path / "some.parquet"
    similar_all(runs / "mf-binary", k=2, out=out, asins=["P000000007", "p000000003"], quiet=True)
    assert [row["asin"] for row in read(out)] == ["P000000007"] * 2 + ["P000000003"] * 2
    with pytest.raises(PipelineError, match=r"^2 unknown ASINs of 3 asked \('NOPE', 'X'\)"):
        similar_all(runs / "mf-binary", out=out, asins=["NOPE", "P000000001", "X"])


def test_an_approximate_table_measures_its_recall_and_saves_its_index(runs, tmp_path):
    run = runs / "mf_bias-binary"
    out = tmp_path / "ann.parquet"
    stats = similar_all(run, k=5, out=out, method="ann", index="ivf", quiet=True)
    assert stats["method"] == "ann" and stats["recall_queries"] == 300
    assert stats["recall_at_k"] >= 0.95  # 300 products: the probes reach most lists
    assert stats["rows"] == 1500 and all(r["asin"] != r["similar_asin"] for r in read(out))
    saved = run / "neighbours" / "ivf.faiss"
    built = saved.stat().st_mtime_ns
    again = similar(run, ["P000000004"], k=3)  # one query answers from the saved index
    assert again.method == "ivf" and saved.stat().st_mtime_ns == built
    assert similar(run, ["P000000004"], k=3, method="exact").method == "exact"


def test_the_tiles_method_scores_a_share_of_the_tiles_and_measures_its_recall(
    runs, tmp_path, small_tiles
):
    run = runs / "mf_bias-binary"
    similar_all(run, k=5, out=tmp_path / "exact.parquet", quiet=True)
    whole = similar_all(run, 5, tmp_path / "all.parquet", "tiles", quiet=True, tile_share=1.0)
    assert whole["recall_at_k"] == 1.0 and whole["tile_share"] == 1.0
    assert read(tmp_path / "all.parquet") == read(tmp_path / "exact.parquet")
    part = similar_all(run, 5, tmp_path / "part.parquet", "tiles", quiet=True, tile_share=0.34)
    assert part["rows"] == 1500 and 0 < part["recall_at_k"] < 1
    exact_rows, part_rows = read(tmp_path / "exact.parquet"), read(tmp_path / "part.parquet")
    same = sum(a["similar_asin"] == b["similar_asin"] for a, b in zip(exact_rows, part_rows))
    assert same / 1500 <= part["recall_at_k"]  # a hit can sit at another rank
    with pytest.raises(PipelineError, match="--tile-share must be above 0 and at most 1"):
        similar_all(run, method="tiles", tile_share=0)


def test_an_index_of_another_model_is_not_reused(runs, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    for file in (runs / "mf-binary").iterdir():
        if file.is_file():
            (run / file.name).write_bytes(file.read_bytes())
    space = Space(torch.randn(300, 4), torch.randn(300, 4), None, False)
    Approximate.of_run(run, space, "hnsw")
    assert Approximate.saved(run, space, "hnsw") is not None
    (run / "model.pt").write_bytes((run / "model.pt").read_bytes() + b"\0")
    assert Approximate.saved(run, space, "hnsw") is None


def test_a_killed_export_leaves_no_table_and_a_rerun_writes_it(runs, tmp_path, monkeypatch):
    out = tmp_path / "killed.parquet"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(table, "_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        similar_all(runs / "mf-binary", out=out, quiet=True)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    similar_all(runs / "mf-binary", k=1, out=out, quiet=True)
    assert len(read(out)) == 300 and out.with_suffix(".json").exists()


def test_bad_settings_are_one_line_errors(runs, tmp_path):
    run = runs / "mf-binary"
    with pytest.raises(PipelineError, match="-k must be at least 1, got 0"):
        similar_all(run, k=0)
    with pytest.raises(PipelineError, match="unknown --method 'fast'"):
        similar_all(run, method="fast")
    with pytest.raises(PipelineError, match="unknown --index 'lsh'"):
        similar_all(run, method="ann", index="lsh")
    with pytest.raises(PipelineError):
        similar_all(tmp_path / "no-run")
    with pytest.raises(PipelineError, match="a run of a rating model"):
        recommend_all(run)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "recsys_stream", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_cli_writes_the_table_and_refuses_in_one_line(runs, tmp_path):
    run = runs / "mf-binary"
    out = tmp_path / "cli.parquet"
    done = run_cli("similar", run, "--all", "-k", "3", "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "rows=900" in done.stdout and len(read(out)) == 900
    bad = run_cli("similar", run, "--all", "-k", "0", "--quiet")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: -k must be at least 1, got 0"
    missing = run_cli("similar", tmp_path / "nothing", "--all", "--quiet")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def rating_runs(tmp_path_factory):
    """mf_bias, svdpp and embedding_net on 60 users' ratings of 40 movies."""
    from conftest import write_lines

    from pipeline.ratings import ratings
    from pipeline.split_ratings import split_ratings

    folder = tmp_path_factory.mktemp("recommend-all")
    rng = np.random.default_rng(0)
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 61):
        for item in rng.choice(40, size=int(rng.integers(5, 30)), replace=False):
            lines.append(f"{user},{100 + item},{rng.integers(1, 6)},{user * 1000 + item}")
    titles = ["movieId,title,genres"] + [f"{100 + i},Movie {i},Drama" for i in range(40)]
    ratings(
        write_lines(folder / "ratings.csv", lines),
        folder,
        titles=write_lines(folder / "movies.csv", titles),
        quiet=True,
    )
    split_ratings(folder, quiet=True)
    for model in ("mf_bias", "svdpp", "embedding_net"):
        train(folder, TrainConfig.defaults("ratings", model=model, epochs=2, dim=8), quiet=True)
    return folder / "runs"


def test_rated_by_holds_each_users_items_ascending(rating_runs):
    data = rating_runs.parent
    exclusions = rated_by(data / "ratings.parquet", 60)
    ratings_table = pq.read_table(data / "ratings.parquet")
    user, item = (ratings_table.column(c).to_numpy() for c in ("user", "item"))
    for u in range(60):
        mine = exclusions.ids[exclusions.offsets[u] : exclusions.offsets[u + 1]]
        assert mine.tolist() == sorted(item[user == u].tolist())


@pytest.mark.parametrize("name", ["mf_bias", "svdpp"])
def test_recommend_all_is_recommend_for_every_user(rating_runs, name, tmp_path):
    run = rating_runs / name
    out = tmp_path / "rec.parquet"
    stats = recommend_all(run, k=5, out=out, quiet=True)
    rows = read(out)
    assert pq.read_schema(out).names == ["user", "rank", "item", "predicted", "title"]
    assert stats["queries"] == 60 and stats["rows"] == len(rows)
    for user in ("1", "7", "60"):
        mine = [row for row in rows if row["user"] == user]
        single = recommend(run, user, k=5)
        assert [row["item"] for row in mine] == [item.key for item in single.items]
        np.testing.assert_allclose(
            [row["predicted"] for row in mine], [i.predicted for i in single.items], atol=1e-4
        )
    model = load_run(run).model
    assert model.ranking() is not None


def test_recommend_all_never_returns_a_rated_item_and_pads_short_users(rating_runs, tmp_path):
    run = rating_runs / "mf_bias"
    out = tmp_path / "every.parquet"
    stats = recommend_all(run, k=40, out=out, method="ann", index="hnsw", quiet=True)
    data = rating_runs.parent
    exclusions = rated_by(data / "ratings.parquet", 60)
    keys = pq.read_table(data / "items.parquet").column("key").to_pylist()
    rated = sum(int(n) for n in np.diff(exclusions.offsets))
    assert stats["rows"] == 60 * 40 - rated and stats["short_rows"] == rated
    users = pq.read_table(data / "users.parquet").column("key").to_pylist()
    for row in read(out):
        u = users.index(row["user"])
        mine = exclusions.ids[exclusions.offsets[u] : exclusions.offsets[u + 1]]
        assert keys.index(row["item"]) not in mine
    assert stats["recall_at_k"] == 1.0


def test_recommend_all_refuses_a_network_model(rating_runs):
    with pytest.raises(PipelineError, match="embedding_net predicts through more than a"):
        recommend_all(rating_runs / "embedding_net")


def test_tiles_out_of_reach_are_never_scored(small_tiles, monkeypatch):
    generator = torch.Generator().manual_seed(3)
    big = torch.rand(10, 4, generator=generator) + 10  # all far along the queries' side
    candidates = torch.cat([torch.randn(2000, 4, generator=generator) * 1e-3, big])
    queries = torch.rand(6, 4, generator=generator) + 1
    calls = []
    product = torch.mm

    def counted(*args, **kwargs):
        calls.append(1)
        return product(*args, **kwargs)

    monkeypatch.setattr(exact.torch, "mm", counted)
    ids, _ = top_k(queries, candidates, 5, exclusions=Exclusions.none(6), threads=1)
    want, _ = reference(queries, candidates, 5)
    np.testing.assert_array_equal(ids, want)
    assert len(calls) == 2  # two blocks of 3 queries, each scoring the big vectors' tile only


def test_recommend_cli_writes_every_users_table_or_refuses_in_one_line(rating_runs, tmp_path):
    run = rating_runs / "mf_bias"
    out = tmp_path / "rec.parquet"
    users = tmp_path / "users.txt"
    users.write_text("7\n\n60\n")
    done = run_cli("recommend", run, "--all", "--file", users, "-k", "2", "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    assert [row["user"] for row in read(out)] == ["7", "7", "60", "60"]
    for args, message in (
        (("recommend", run), "error: give one user, or --all (with --file for some users only)"),
        (("recommend", run, "--all", "--file", tmp_path / "none.txt"), "cannot read"),
        (("similar", run, "--all", "--method", "ann", "--index", "ivf", "-k", "x"), "invalid int"),
    ):
        failed = run_cli(*args, "--quiet")
        assert failed.returncode == 2 and message in failed.stderr.strip().splitlines()[-1]
        assert "Traceback" not in failed.stderr
