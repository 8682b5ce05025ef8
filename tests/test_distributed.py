"""Data-parallel training under torchrun: the summed gradient, replicas that never
diverge, the same AUC as one process, resume on another number of processes, Spark's
TorchDistributor, and one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from planted import write_planted

from pipeline import ratings as ratings_module
from pipeline.errors import PipelineError
from pipeline.ratings import ratings
from pipeline.split_ratings import split_ratings
from pipeline.synth_ratings import generate_ratings
from recsys_stream.__main__ import main
from recsys_stream.core import distributed, runs
from recsys_stream.core.spark_launcher import train_on_spark
from recsys_stream.core.train import train

pytestmark = pytest.mark.slow  # starts torchrun

WORKER = Path(__file__).parent / "distributed_worker.py"
TRAIN = {"epochs": 2, "lr": 0.05, "batch_size": 256, "eval_every": 20, "eval_sample": 2000}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """15,000 pairs in row groups of 1,000: each of two ranks streams about half."""
    return write_planted(
        tmp_path_factory.mktemp("planted"), products=1500, pairs=15000, row_group=1000
    )


def torchrun(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", str(WORKER), *map(str, args)]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_ranks_sum_to_the_gradient_of_the_union_of_their_batches(tmp_path):
    torchrun("gradients", tmp_path)
    found = torch.load(tmp_path / "gradients.pt")
    # the samples of 30 and 50 anchors, each with its positive and 3 negatives
    assert found["samples"] == found["union_samples"] == (30 + 50) * 4
    assert found["loss"] == pytest.approx(found["union_loss"], rel=1e-6)
    assert found["summed"].keys() == found["union"].keys() == {"left", "bias", "global_bias"}
    for name, (rows, values) in found["union"].items():
        assert torch.equal(found["summed"][name][0], rows)
        torch.testing.assert_close(found["summed"][name][1], values, rtol=1e-5, atol=1e-7)


def test_two_ranks_keep_identical_replicas_and_reach_one_process_auc(planted, tmp_path):
    torchrun("train", tmp_path, planted)
    zero, one = (torch.load(tmp_path / f"rank-{rank}.pt") for rank in (0, 1))
    assert zero.keys() == one.keys()
    for name in zero:
        assert torch.equal(zero[name], one[name]), name  # bit-identical, never synced
    two = json.loads((planted / "runs" / "ranks" / runs.SUMMARY).read_text())
    assert two["processes"] == 2 and two["epochs"] == 2
    assert 0 < two["exchange_transfer_seconds"] < two["train_seconds"]
    # a rank's 128 anchors with 6 others each touch at most 896 rows: their 32 floats,
    # bias and ids; and the global bias
    most = 2 * (128 * 7 * (8 + 4 * 32 + 8 + 4) + 12) / 1e6
    assert most / 4 < two["exchange_mb_per_step"] < most
    one_process = train(planted, name="one", quiet=True, options={"model": "mf_bias", **TRAIN})
    # the batches one process trains on, each split between the ranks
    assert two["steps"] == one_process["steps"]
    assert two["samples"] == one_process["samples"]  # every train pair, once an epoch
    assert two["auc_all"] == pytest.approx(one_process["auc_all"], abs=0.002)
    assert two["auc_all"] > two["popularity_auc"] + 0.05


def test_two_ranks_on_a_file_of_one_row_group_train_as_one_process(tmp_path):
    data = write_planted(tmp_path, products=1500, pairs=15000, row_group=20000)
    assert pq.ParquetFile(data / "train.parquet").num_row_groups == 1
    common = ["train", str(data), "--model", "mf_bias", "--epochs", "2", "--lr", "0.05"]
    common += ["--batch-size", "256", "--eval-sample", "2000", "--quiet"]
    assert main([*common, "--name", "two", "--nproc", "2"]) == 0
    assert main([*common, "--name", "one"]) == 0
    two, one = (json.loads((data / "runs" / n / runs.SUMMARY).read_text()) for n in ("two", "one"))
    assert two["processes"] == 2 and two["steps"] == one["steps"]
    assert two["auc_all"] == pytest.approx(one["auc_all"], abs=0.002)


def test_a_two_process_checkpoint_resumes_on_one(planted):
    options = ["--model", "mf", "--epochs", "1", "--lr", "0.05", "--batch-size", "256"]
    options += ["--eval-every", "20", "--eval-sample", "2000", "--name", "moved"]
    common = ["train", str(planted), *options]
    assert main([*common, "--nproc", "2", "--quiet"]) == 0
    first = json.loads((planted / "runs" / "moved" / runs.SUMMARY).read_text())
    assert first["processes"] == 2 and first["epochs"] == 1
    resumed = train(
        planted,
        name="moved",
        resume=True,
        quiet=True,
        options={"model": "mf", **TRAIN, "epochs": 2},
    )
    assert resumed["processes"] == 1 and resumed["parts"] == 2 and resumed["epochs"] == 2
    assert resumed["steps"] > first["steps"] and resumed["auc_all"] > first["popularity_auc"]


def test_two_processes_train_a_fused_rating_model_as_one_does(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "ratings.csv"
    generate_ratings(raw, users=500, items=300, ratings=60_000, seed=1, quiet=True)
    monkeypatch.setattr(ratings_module, "ROW_GROUP_ROWS", 4096)  # a train file of 12 groups
    ratings(raw, tmp_path, quiet=True)
    split_ratings(tmp_path, quiet=True)
    common = ["train", str(tmp_path), "--model", "mf_bias", "--epochs", "6", "--quiet"]
    common += ["--batch-size", "256", "--lr", "0.01", "--l2", "0.02", "--dim", "16"]
    assert main([*common, "--name", "two", "--nproc", "2"]) == 0
    assert main([*common, "--name", "one"]) == 0
    two, one = (
        json.loads((tmp_path / "runs" / name / runs.SUMMARY).read_text()) for name in ("two", "one")
    )
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["rmse"] == pytest.approx(one["rmse"], abs=0.01)
    assert two["rmse"] < 0.75 * two["global_mean_rmse"]  # as test_rating_models asks
    capsys.readouterr()
    assert main(["train", str(tmp_path), "--model", "embedding_net", "--nproc", "2"]) == 2
    assert capsys.readouterr().err == (
        "error: --nproc 2: only models with a fused step train on several processes; "
        "--model embedding_net with --step auto trains on one\n"
    )


@pytest.mark.xdist_group("spark")
def test_torch_distributor_on_local_spark_returns_rank_zero_summary(spark, planted):
    summary = train_on_spark(planted, 2, {"model": "mf_bias", **TRAIN}, name="spark")
    assert summary["run"] == "spark" and summary["processes"] == 2
    assert summary["auc_all"] > summary["popularity_auc"] + 0.05
    written = json.loads((planted / "runs" / "spark" / runs.SUMMARY).read_text())
    assert written["auc_all"] == summary["auc_all"] and written["steps"] == summary["steps"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--batch-size", "255"], "--batch-size 255 is the step's rows over all 2 processes"),
        (["--step", "autograd"], "--nproc 2: only models with a fused step train on several"),
        (["--nproc", "0"], "--nproc must be 1 or more, got 0"),
    ],
)
def test_what_several_processes_cannot_train_is_refused_in_one_line(
    planted, options, message, capsys
):
    assert main(["train", str(planted), "--nproc", "2", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_one_process_needs_no_process_group():
    ranks, created = distributed.start()
    assert (ranks.rank, ranks.world, ranks.lead, created) == (0, 1, True, False)
    assert ranks.total(3.5) == 3.5 and list(distributed.lockstep([1, 2], ranks)) == [1, 2]
    with pytest.raises(PipelineError, match="make it a multiple of 3"):
        distributed.check_batch(256, 3)
