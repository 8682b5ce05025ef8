"""Random walks and the skip-gram stream: validity, transition frequencies, window pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from planted import write_planted

import pipeline.walks as walks_module
from pipeline.contracts import TRAIN_SCHEMA, stamped
from pipeline.errors import PipelineError
from pipeline.walks import Graph, walks
from recsys_stream.pairs.sampling import NegativeSampler
from recsys_stream.pairs.walk_stream import WalkStream, expected_pairs, window_pairs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("walks"), products=500, pairs=4000)


def read_walks(data: Path) -> np.ndarray:
    column = pq.read_table(data / "walks.parquet").column("walk").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1)


def edges(data: Path) -> set[tuple[int, int]]:
    table = pq.read_table(data / "train.parquet")
    src, dst = table.column("src").to_pylist(), table.column("dst").to_pylist()
    return {*zip(src, dst), *zip(dst, src)}


@pytest.mark.parametrize("weighted", [False, True])
def test_every_step_is_a_train_edge_and_every_product_with_pairs_starts_walks(planted, weighted):
    stats = walks(planted, walks_per_node=3, length=7, weighted=weighted, quiet=True)
    walked = read_walks(planted)
    train_edges = edges(planted)
    assert walked.shape == (stats["walks"], 7) and stats["steps"] == stats["walks"] * 6
    steps = zip(walked[:, :-1].ravel().tolist(), walked[:, 1:].ravel().tolist())
    assert all(step in train_edges for step in steps)
    with_pairs = {a for a, _ in train_edges}
    starts = walked[:, 0].tolist()
    assert set(starts) == with_pairs and all(starts.count(p) == 3 for p in list(with_pairs)[:50])
    metadata = pq.read_schema(planted / "walks.parquet").metadata
    assert metadata[b"stage"] == b"walks" and metadata[b"split_id"] == b"planted-split"
    assert json.loads((planted / "walks.json").read_text())["walks"] == stats["walks"]


def test_the_same_seed_gives_the_same_file(planted, tmp_path):
    walks(planted, walks_per_node=2, length=5, seed=3, quiet=True)
    first = (planted / "walks.parquet").read_bytes()
    walks(planted, walks_per_node=2, length=5, seed=3, quiet=True)
    assert (planted / "walks.parquet").read_bytes() == first
    walks(planted, walks_per_node=2, length=5, seed=4, quiet=True)
    assert (planted / "walks.parquet").read_bytes() != first


@pytest.mark.parametrize("weighted", [False, True])
def test_the_file_does_not_depend_on_the_number_of_threads(planted, monkeypatch, weighted):
    monkeypatch.setattr(walks_module, "WALK_ROWS", 128)  # many batches, in flight together
    found = []
    for threads in (1, 3):
        monkeypatch.setattr(walks_module, "WALK_THREADS", threads)
        walks(planted, walks_per_node=2, length=6, weighted=weighted, quiet=True)
        found.append((planted / "walks.parquet").read_bytes())
    assert found[0] == found[1]


def test_the_graph_does_not_depend_on_the_number_of_threads(tmp_path, monkeypatch):
    built = []
    for threads in (1, 2):  # two threads read the two row groups side by side
        monkeypatch.setattr(walks_module, "WALK_THREADS", threads)
        graph = small_graph(tmp_path, weighted=True)
        built.append([graph.indptr.tolist(), graph.indices.tolist(), graph.weights.tolist()])
    assert built[0] == built[1]
    assert built[0][1] == [1, 2, 3, 0, 0, 0, 5, 4]  # each row in the order of the file
    assert graph.row_max.tolist() == [6, 1, 3, 6, 2, 2, 0]


def small_graph(tmp_path: Path, weighted: bool) -> Graph:
    """0-1 (weight 1), 0-2 (weight 3), 0-3 (weight 6), 4-5; product 6 has no pair."""
    columns = [
        np.array([0, 0, 0, 4], np.int32),
        np.array([1, 2, 3, 5], np.int32),
        np.array([1.0, 3.0, 6.0, 2.0], np.float32),
        np.ones(4, np.uint8),
    ]
    pq.write_table(
        pa.table(columns, schema=stamped(TRAIN_SCHEMA, "split")),
        tmp_path / "train.parquet",
        row_group_size=2,
    )
    return Graph.build(tmp_path / "train.parquet", 7, tmp_path, weighted)


@pytest.mark.parametrize("weighted", [False, True])
def test_transition_frequencies_follow_the_weights(tmp_path, weighted):
    graph = small_graph(tmp_path, weighted)
    assert graph.degree.tolist() == [3, 1, 1, 1, 1, 1, 0]
    walked = graph.walk(np.zeros(60_000, np.int64), 2, np.random.default_rng(0))
    shares = np.bincount(walked[:, 1], minlength=4)[1:4] / 60_000
    expected = np.array([1, 3, 6]) / 10 if weighted else np.full(3, 1 / 3)
    np.testing.assert_allclose(shares, expected, atol=0.01)  # 6 standard errors at most
    back = graph.walk(np.array([5, 1]), 4, np.random.default_rng(0))
    assert back.tolist() == [[5, 4, 5, 4], [1, 0, back[1, 2], 0]]


def test_bad_options_are_one_line_errors(planted):
    with pytest.raises(PipelineError, match="--length must be an integer of at least 2"):
        walks(planted, length=1, quiet=True)
    with pytest.raises(PipelineError, match="--walks-per-node must be an integer of at least 1"):
        walks(planted, walks_per_node=0, quiet=True)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "walks", str(planted), "--seed", "-1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: --seed must be an integer from 0 to")


def brute_force_pairs(walks: np.ndarray, reach: np.ndarray) -> list[tuple[int, int]]:
    """word2vec's loop: each centre with the contexts inside its reduced window."""
    pairs = []
    for walk, reaches in zip(walks.tolist(), reach.tolist()):
        for i, (centre, b) in enumerate(zip(walk, reaches)):
            for j in range(max(0, i - b), min(len(walk), i + b + 1)):
                if j != i and walk[j] != centre:
                    pairs.append((centre, walk[j]))
    return sorted(pairs)


def test_window_pairs_equal_word2vecs_loop_walk_by_walk():
    # walk i holds products 100 i .. 100 i + 29, with returns
    walked = np.random.default_rng(1).integers(0, 30, (40, 9)) + 100 * np.arange(40)[:, None]
    walked = walked.astype(np.int32)
    centre, context = window_pairs(walked, 4, np.random.default_rng(2))
    reach = np.random.default_rng(2).integers(1, 5, size=walked.shape)  # the same draws
    assert sorted(zip(centre.tolist(), context.tolist())) == brute_force_pairs(walked, reach)
    # a batch cut from them holds consecutive walks' pairs: the rows it touches are few
    assert (np.diff(centre // 100) >= 0).all() and (centre // 100 == context // 100).all()


def test_the_stream_covers_its_pairs_and_expected_pairs_is_their_mean(planted):
    walks(planted, walks_per_node=4, length=10, quiet=True)
    frequency = np.bincount(read_walks(planted).ravel(), minlength=500) + 1
    stream = WalkStream(
        planted / "walks.parquet", 256, NegativeSampler(frequency, 0.75), 3, 5, 7, 2
    )
    batches = list(stream)
    pairs = sum(len(b.anchor) for b in batches)
    walked = read_walks(planted)
    # The mean counts a walk's returns to a product (A, B, A), which make no pair.
    assert (
        0.9 * expected_pairs(len(walked), 10, 5) < pairs < 1.02 * expected_pairs(len(walked), 10, 5)
    )
    for batch in batches[:5]:
        assert batch.others.shape[1] == 4 and (batch.others[:, 1:] != batch.anchor[:, None]).all()
        assert (batch.others[:, 0] != batch.anchor).all()
    shared = WalkStream(
        planted / "walks.parquet", 256, NegativeSampler(frequency, 0.75), 3, 5, 7, 2, shared=8
    )
    same_seed = list(shared)  # the windows drawn after each batch's negatives differ
    assert abs(sum(len(b.anchor) for b in same_seed) - pairs) < 0.02 * pairs  # other draws
    assert all(b.others.shape[1] == 1 and b.shared.shape == (8,) for b in same_seed)
    assert {b.shared_weight for b in same_seed} == {3 / 8}
