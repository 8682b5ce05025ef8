"""Runs whose stages were rerun since they trained: left out of the report with a note
(or refused when every run is), refused by similar and recommend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_lines

from pipeline.contracts import stamps
from pipeline.errors import PipelineError
from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.ratings import ratings
from pipeline.sequences import sequences
from pipeline.split import split
from pipeline.split_ratings import split_ratings
from pipeline.synth import generate
from pipeline.walks import walks
from recsys_stream.__main__ import main
from recsys_stream.core import lineage
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.recommend import recommend
from recsys_stream.report import current_runs, finished_runs, report
from recsys_stream.similar import similar

TINY = dict(epochs=1, dim=4, batch_size=256, eval_sample=500)
MF = TrainConfig.defaults("pairs", model="mf", labels="binary", **TINY)
MF_COMMAND = "--model mf --labels binary --epochs 1 --dim 4 --batch-size 256 --eval-sample 500"


def ids(path: Path) -> dict[str, str]:
    return stamps(pq.ParquetFile(path))


def short(value: str) -> str:
    return f"{value[:8]}…"


def copied(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / data.name))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """1,500 synthetic products through parse, pairs, split (seed 1) and walks, with an mf
    run ("mf") and a skip-gram run ("walker") trained on them."""
    data = tmp_path_factory.mktemp("stale-pairs")
    raw = data / "raw" / "catalog.json.gz"
    generate(raw, 1500, fmt="py", quiet=True)
    parse(raw, data, workers=1, quiet=True)
    build_pairs(data, quiet=True)
    split(data, seed=1, quiet=True)
    walks(data, walks_per_node=2, length=5, quiet=True)
    train(data, MF, name="mf", quiet=True, threads=1)
    train(data, TrainConfig(model="skipgram", **TINY), name="walker", quiet=True, threads=1)
    return data


@pytest.fixture(scope="module")
def resplit(catalog, tmp_path_factory) -> tuple[Path, str, str]:
    """The catalog split again with seed 2, an mf run ("fresh") trained on the new split;
    with the old and new split ids."""
    data = copied(catalog, tmp_path_factory.mktemp("resplit"))
    old = ids(data / "train.parquet")["split_id"]
    split(data, seed=2, quiet=True)
    train(data, MF, name="fresh", quiet=True, threads=1)
    return data, old, ids(data / "train.parquet")["split_id"]


def test_the_report_leaves_out_runs_of_an_earlier_split_and_tables_a_fresh_one(resplit, capsys):
    data, old, new = resplit
    changed = f"trained on split {short(old)}, the current split is {short(new)}"
    notes = [
        f"run mf left out: {changed} (rerun its training)",
        f"run walker left out: {changed} (rerun `python -m pipeline walks`, then its training)",
    ]
    assert main(["report", str(data)]) == 0
    assert capsys.readouterr().err.splitlines() == [f"note: {note}" for note in notes]
    lines = (data / "report.md").read_text().splitlines()
    assert [f"- {note}" for note in notes] == [line for line in lines if line.startswith("- run")]
    tabled = {line.split(" | ")[0] for line in lines if line.startswith("| ") and " | " in line}
    assert {"| fresh", "| mf", "| walker"} & tabled == {"| fresh"}
    kept, _ = current_runs(data, finished_runs(data))  # what the figures are drawn from
    assert list(kept) == ["fresh"]


def test_similar_refuses_a_run_of_an_earlier_split_and_answers_a_fresh_one(resplit):
    data, old, new = resplit
    changed = f"trained on split {short(old)}, the current split is {short(new)}"
    with pytest.raises(PipelineError) as refused:
        similar(data / "runs" / "mf", ["anything"])
    assert str(refused.value) == (
        f"{data / 'runs' / 'mf'}: {changed}; rerun "
        f"`python -m recsys_stream train {data} --name mf {MF_COMMAND}`"
    )
    with pytest.raises(PipelineError, match=f"walker: {changed}; rerun `python -m pipeline walks`"):
        similar(data / "runs" / "walker", ["anything"])
    assert similar(data / "runs" / "fresh", ["NOPE"]).unknown  # answered: not refused


def test_a_pairs_rerun_refuses_a_report_whose_every_run_is_stale(catalog, tmp_path, capsys):
    data = copied(catalog, tmp_path)
    old = ids(data / "vocab.parquet")["pairs_id"]
    build_pairs(data, min_also_bought=5, quiet=True)
    new = ids(data / "vocab.parquet")["pairs_id"]
    changed = f"trained on pairs {short(old)}, the current pairs are {short(new)}"
    assert main(["report", str(data)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {data / 'runs'}: every run was trained on stage files rerun since: "
        f"mf {changed} (rerun `python -m pipeline split`, then its training); "
        f"walker {changed} (rerun `python -m pipeline split`, `python -m pipeline walks`, "
        "then its training)"
    ]
    assert not (data / "report.md").exists()
    assert main(["similar", str(data / "runs" / "mf"), "anything"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {data / 'runs' / 'mf'}: {changed}; rerun `python -m pipeline split`, then "
        f"`python -m recsys_stream train {data} --name mf {MF_COMMAND}`"
    ]


def test_a_walks_rerun_leaves_out_only_the_skip_gram_run(catalog, tmp_path):
    data = copied(catalog, tmp_path)
    old = ids(data / "walks.parquet")["walks_id"]
    walks(data, walks_per_node=2, length=5, seed=7, quiet=True)
    new = ids(data / "walks.parquet")["walks_id"]
    changed = f"trained on walks {short(old)}, the current walks are {short(new)}"
    lines = report(data, quiet=True).read_text().splitlines()
    assert [line for line in lines if line.startswith("- run")] == [
        f"- run walker left out: {changed} (rerun its training)"
    ]
    assert sum(line.startswith("| mf |") for line in lines) == 2  # results and settings
    with pytest.raises(PipelineError, match=f"walker: {changed}; rerun `python -m recsys"):
        similar(data / "runs" / "walker", ["anything"])


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    """60 users' ratings of 40 movies split by time (seed 1) into sequences, with an
    mf_bias run ("rater") and a next-item lstm run ("lstm-next") trained on them."""
    folder = tmp_path_factory.mktemp("stale-ratings")
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 61):
        for item in range(user % 7, 40, 3):
            lines.append(f"{user},{100 + item},{1 + (user + item) % 5},{user * 1000 + item}")
    ratings(write_lines(folder / "ratings.csv", lines), folder, quiet=True)
    split_ratings(folder, by="time", seed=1, quiet=True)
    sequences(folder, max_length=5, quiet=True)
    rater = TrainConfig.defaults("ratings", epochs=1, dim=4)
    train(folder, rater, name="rater", quiet=True, threads=1)
    next_item = TrainConfig.defaults("next-item", model="lstm", epochs=1, dim=4, hidden="4")
    train(folder, next_item, name="lstm-next", quiet=True, threads=1)
    return folder


def test_a_ratings_split_rerun_refuses_the_report_recommend_and_similar(rated, tmp_path):
    data = copied(rated, tmp_path)
    old = ids(data / "ratings-train.parquet")["split_id"]
    split_ratings(data, by="time", seed=2, quiet=True)
    new = ids(data / "ratings-train.parquet")["split_id"]
    changed = f"trained on split {short(old)}, the current split is {short(new)}"
    with pytest.raises(PipelineError) as refused:
        report(data, quiet=True)
    assert str(refused.value) == (
        f"{data / 'runs'}: every run was trained on stage files rerun since: "
        f"lstm-next {changed} (rerun `python -m pipeline sequences`, then its training); "
        f"rater {changed} (rerun its training)"
    )
    rater = data / "runs" / "rater"
    with pytest.raises(PipelineError) as refused:
        recommend(rater, "5")
    assert str(refused.value) == (
        f"{rater}: {changed}; rerun "
        f"`python -m recsys_stream train {data} --name rater --model mf_bias --epochs 1 --dim 4`"
    )
    with pytest.raises(PipelineError, match=f"rater: {changed}; rerun `python -m recsys_stream"):
        similar(rater, ["100"])
    lstm = data / "runs" / "lstm-next"
    with pytest.raises(PipelineError) as refused:
        recommend(lstm, "5")
    assert str(refused.value) == (
        f"{lstm}: {changed}; rerun `python -m pipeline sequences`, then `python -m "
        f"recsys_stream train {data} --name lstm-next --model lstm --task next-item "
        "--epochs 1 --dim 4 --hidden 4`"
    )
    fresh = TrainConfig.defaults("ratings", epochs=1, dim=4)
    train(data, fresh, name="fresh", quiet=True, threads=1)
    lines = report(data, quiet=True).read_text().splitlines()
    assert [line for line in lines if line.startswith("- run")] == [
        f"- run lstm-next left out: {changed} (rerun `python -m pipeline sequences`, then its "
        "training)",
        f"- run rater left out: {changed} (rerun its training)",
    ]
    tabled = {line.split(" | ")[0] for line in lines if line.startswith("| ")}
    assert {"| fresh", "| rater", "| lstm-next"} & tabled == {"| fresh"}
    assert recommend(data / "runs" / "fresh", "5").items


def test_a_sequences_rerun_leaves_out_only_the_sequence_run(rated, tmp_path):
    data = copied(rated, tmp_path)
    old = ids(data / "next-train.parquet")["sequences_id"]
    sequences(data, max_length=3, quiet=True)
    new = ids(data / "next-train.parquet")["sequences_id"]
    lines = report(data, quiet=True).read_text().splitlines()
    assert [line for line in lines if line.startswith("- run")] == [
        f"- run lstm-next left out: trained on sequences {short(old)}, the current sequences "
        f"are {short(new)} (rerun its training)"
    ]
    assert any(line.startswith("| rater | mf_bias |") for line in lines)
    assert "## Next item" not in lines


def test_a_ratings_split_in_another_layout_deletes_the_old_files_and_their_runs_go_stale(
    rated, tmp_path
):
    data = copied(rated, tmp_path)
    split_ratings(data, folds=3, seed=1, quiet=True)
    folded = ids(data / "ratings-train-fold2.parquet")["split_id"]
    fold = TrainConfig.defaults("ratings", epochs=1, dim=4, fold=2)
    train(data, fold, name="f2", quiet=True, threads=1)
    assert sorted(p.name for p in data.glob("ratings-*.parquet")) == [
        f"ratings-{part}-fold{k}.parquet" for part in ("train", "val") for k in (1, 2, 3)
    ]
    split_ratings(data, seed=1, quiet=True)  # plain again: the folds' files go
    assert sorted(p.name for p in data.glob("ratings-*.parquet")) == [
        "ratings-train.parquet",
        "ratings-val.parquet",
    ]
    new = ids(data / "ratings-train.parquet")["split_id"]
    changed = f"trained on split {short(folded)}, the current split is {short(new)}"
    assert str(lineage.change(data / "runs" / "f2")) == changed
    train(data, TrainConfig.defaults("ratings", epochs=1, dim=4), name="fresh", quiet=True)
    kept, _ = current_runs(data, finished_runs(data))
    assert list(kept) == ["fresh"]
