"""similar: exact top-k under the model's score, never the query, clear unknowns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from planted import write_planted

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.neighbours import exact
from recsys_stream.similar import similar

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = write_planted(tmp_path_factory.mktemp("sim"), products=300, pairs=3000, row_group=64)
    for model in ("mf", "mf_bias"):
        train(
            data,
            TrainConfig(
                model=model,
                labels="binary",
                epochs=1,
                batch_size=128,
                eval_every=50,
                eval_sample=500,
                lr=0.05,
            ),
            quiet=True,
        )
    return data / "runs"


def brute_force(run: Path, query: int, k: int, cosine: bool) -> list[int]:
    from recsys_stream.core.trained import load_run

    model, _, _ = load_run(run)
    e = model.embedding.weight.detach().numpy().astype(np.float64)
    if cosine:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        scores = e @ e[query]
    else:
        scores = e @ e[query]
        if hasattr(model, "bias"):
            scores = scores + model.bias.weight.detach().numpy()[:, 0]
    scores[query] = -np.inf
    return np.argsort(-scores, kind="stable")[:k].tolist()


@pytest.mark.parametrize("name", ["mf-binary", "mf_bias-binary"])
@pytest.mark.parametrize("cosine", [False, True])
def test_matches_brute_force(runs, name, cosine, monkeypatch):
    monkeypatch.setattr(exact, "QUERY_BLOCK", 2)  # several query blocks
    monkeypatch.setattr(exact, "TILE", 128)  # and candidate tiles, the last one short
    queries = [f"P{i:09d}" for i in (0, 5, 17, 123, 299)]
    answers = similar(runs / name, queries, k=7, cosine=cosine).answers
    for query, answer in zip(queries, answers):
        got = [int(item.asin[1:]) for item in answer.similar]
        assert len(got) == len(set(got)) == 7
        assert int(query[1:]) not in got
        scores = [item.score for item in answer.similar]
        assert scores == sorted(scores, reverse=True)
        assert got == brute_force(runs / name, int(query[1:]), 7, cosine)
        assert answer.title.startswith(f"product {int(query[1:])} ")
        for item in answer.similar:  # titles come from several vocabulary row groups
            assert item.title.startswith(f"product {int(item.asin[1:])} ")


def test_unknown_asins_lower_case_and_a_large_k(runs):
    result = similar(runs / "mf-binary", ["P000000001", "P0000001ZZ", "p000000002"], k=3)
    known, unknown, lower = result.answers
    assert len(known.similar) == 3 and known.error is None
    assert unknown.error == "unknown ASIN" and unknown.suggestions[0].startswith("P0000001")
    assert lower.asin == "P000000002" and len(lower.similar) == 3  # any case finds it
    assert result.unknown == [unknown]
    clamped = similar(runs / "mf-binary", ["P000000001"], k=1000)
    assert (clamped.k, clamped.asked_k) == (299, 1000)  # every product but the query
    assert len(clamped.answers[0].similar) == 299
    with pytest.raises(PipelineError, match="-k must be at least 1"):
        similar(runs / "mf-binary", ["P000000001"], k=0)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "recsys_stream", "similar", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_cli_table_json_file_and_errors(runs, tmp_path):
    run = runs / "mf_bias-binary"
    table = run_cli(run, "P000000003", "-k", "4")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("\n   ") == 4 and "product 3 of cluster" in table.stdout
    queries = tmp_path / "asins.txt"
    queries.write_text("P000000003\n\nP000000004\n")
    machine = run_cli(run, "--file", queries, "--json", "-k", "2")
    assert [a["query"] for a in json.loads(machine.stdout)] == ["P000000003", "P000000004"]
    unknown = run_cli(run, "NOPE12345X")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: unknown ASIN NOPE12345X"
    assert run_cli(tmp_path / "missing-run", "P000000003").returncode == 2


def test_cli_a_mix_of_known_and_unknown_answers_the_known_and_fails(runs):
    run = runs / "mf_bias-binary"
    mixed = run_cli(run, "P000000003", "NOPE", "p000000004", "ALSONOPE", "-k", "2")
    assert mixed.returncode == 2
    assert mixed.stdout.count("\n   ") == 4  # two answers of two
    assert mixed.stderr.splitlines() == ["error: unknown ASIN NOPE", "error: unknown ASIN ALSONOPE"]
    machine = run_cli(run, "P000000003", "NOPE", "--json", "-k", "2")
    assert machine.returncode == 2
    answers = json.loads(machine.stdout)
    assert answers[1] == {
        "query": "NOPE",
        "error": "unknown ASIN",
        "similar": [],
        "suggestions": [],
    }
    clamped = run_cli(run, "P000000003", "-k", "5000")
    assert clamped.returncode == 0
    assert clamped.stderr.strip() == "note: -k 5000 is more than the other products; showing 299"
