"""Training that would fail quietly: a diverging run, a seed out of range, too many processes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from planted import write_planted

from pipeline import cli
from pipeline.__main__ import main as pipeline_main
from pipeline.errors import PipelineError
from pipeline.ratings import ratings
from pipeline.split import shuffle_keys
from pipeline.split_ratings import split_ratings
from pipeline.synth_ratings import generate_ratings
from recsys_stream.__main__ import main as recsys_main
from recsys_stream.core import distributed, divergence, tasks
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.sequences.stream import SequenceBatch

FAST = dict(batch_size=256, eval_sample=1000)
RUN = "mf_bias-continuous"
DIVERGED = (
    r"training diverged at step \d+: {cause}; lower --lr \(now {lr}\) or --init-std "
    r"\(now 0\.01\); {checkpoint}"
)
NO_CHECKPOINT = "there is no checkpoint: it diverged in epoch 1"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_planted(tmp_path_factory.mktemp("pairs"), products=2000, pairs=20000)


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ratings")
    raw = folder / "ratings.csv"
    generate_ratings(raw, users=300, items=200, ratings=20_000, seed=1, quiet=True)
    ratings(raw, folder, quiet=True)
    split_ratings(folder, quiet=True)
    return folder


def test_lr_1_stops_where_the_weights_saturate_with_one_line_and_no_summary(pairs, capsys):
    args = ["train", str(pairs), "--lr", "1", "--epochs", "2", "--batch-size", "256"]
    assert recsys_main([*args, "--eval-sample", "1000", "--quiet"]) == 2
    stderr = capsys.readouterr().err
    cause = r"a weight in bias\.weight reached 1\d\.\d"
    pattern = DIVERGED.format(cause=cause, lr="1", checkpoint=NO_CHECKPOINT)
    assert re.fullmatch(f"error: {pattern}\n", stderr), stderr
    assert not (pairs / "runs" / RUN / "summary.json").exists()
    assert not (pairs / "runs" / RUN / "model.pt").exists()


def test_lr_1e9_stops_at_the_first_curve_point(pairs):
    with pytest.raises(PipelineError) as caught:
        train(pairs, quiet=True, options={**FAST, "lr": 1e9})
    cause = r"a weight in global_bias reached \d\.\d+e\+09"
    pattern = DIVERGED.format(cause=cause, lr=r"1e\+09", checkpoint=NO_CHECKPOINT)
    assert re.fullmatch(pattern, str(caught.value)), caught.value
    assert "step 5:" in str(caught.value)  # the first of ten points in an epoch of 53 steps
    assert not (pairs / "runs" / RUN / "summary.json").exists()


def test_a_ratings_model_whose_weights_run_away_stops(rated):
    with pytest.raises(PipelineError) as caught:
        train(rated, quiet=True, options={"model": "embedding_net", "lr": 10.0})
    cause = r"a weight in network\.1\.bias reached 10\.\d"
    pattern = DIVERGED.format(cause=cause, lr="10", checkpoint=NO_CHECKPOINT)
    assert re.fullmatch(pattern, str(caught.value)), caught.value
    assert not (rated / "runs" / "embedding_net" / "summary.json").exists()


def test_a_run_that_diverges_later_names_the_last_good_checkpoint(pairs, monkeypatch):
    options = {**FAST, "epochs": 1}
    train(pairs, quiet=True, options=options)
    monkeypatch.setattr(divergence, "WEIGHT_LIMIT", 0.0)  # epoch 2's weights diverge, by fiat
    with pytest.raises(PipelineError) as caught:
        train(pairs, resume=True, quiet=True, options={**options, "epochs": 2})
    checkpoint = pairs / "runs" / RUN / "checkpoint.pt"
    assert str(caught.value).endswith(f"; the last good checkpoint is {checkpoint} (epoch 1)")
    assert "training diverged at step 58:" in str(caught.value)  # epoch 2's first point
    assert checkpoint.is_file() and not (pairs / "runs" / RUN / "summary.json").exists()


def test_a_ratings_model_whose_loss_jumps_at_the_second_step_stops(rated):
    with pytest.raises(PipelineError) as caught:  # its weights stay under the limit
        train(rated, quiet=True, options={"model": "embedding_net", "lr": 1.0})
    cause = r"the loss rose to \d\.\d+ a sample, [3-9]\.\dx its 1\.\d+ at the first step"
    pattern = DIVERGED.format(cause=cause, lr="1", checkpoint=NO_CHECKPOINT)
    assert re.fullmatch(pattern, str(caught.value)), caught.value


def runs_of(length: int, loss: float, step: int) -> tuple[float, int, SequenceBatch]:
    """Sequence step ``step``'s loss on 8 runs of ``length``, normed as the stream norms
    it (8 runs of the file's mean of 10 positions), whose per-position mean is ``loss``;
    and its batch."""
    items = torch.zeros(8, length, dtype=torch.long)
    scored = torch.ones(8, length, dtype=torch.bool)
    batch = SequenceBatch(items, items.float(), scored, samples=8 * length, norm=80.0)
    return loss * batch.samples / batch.norm, step, batch


def test_the_loss_is_held_to_the_first_steps_per_position_whatever_the_runs_lengths():
    watch = divergence.DivergenceWatch(torch.nn.Linear(2, 1), TrainConfig())

    def steps_of(first: int, last: int, length: int, loss: float) -> None:
        for step in range(first, last + 1):
            watch.step(*runs_of(length, loss, step))

    steps_of(1, 1, 2, 1.0)  # short runs first: their loss over the norm is 0.2
    steps_of(2, 16, 50, 1.0)  # 5.0 over the norm: the same a position
    watch.point(16)
    steps_of(17, 24, 10, 2.5)
    watch.point(24)  # fewer than 16 steps: compared when the window is full
    steps_of(25, 32, 10, 2.5)
    with pytest.raises(PipelineError) as caught:
        watch.point(32)
    assert str(caught.value).startswith(
        "training diverged at step 32: the loss rose to 2.5 a sample, 2.5x its 1 at the "
        "first step; lower --lr"
    )
    steps_of(33, 34, 10, 2.5)
    with pytest.raises(PipelineError, match=r"^training diverged at step 34: the loss rose"):
        watch.compare(34)  # an epoch's end: whatever the window's length


def test_a_loss_that_starts_below_zero_is_left_to_the_weights():
    watch = divergence.DivergenceWatch(torch.nn.Linear(2, 1), TrainConfig())
    for step in range(1, 17):
        watch.step(-0.5 if step == 1 else 9.0, step, None)
    watch.point(16)  # pmf's log-likelihood may rise past 2x a negative start


# One seed range, checked where --seed is parsed.

SEED_RANGE = f"--seed must be an integer from 0 to {2**63 - 1}"
SEEDED = [
    (pipeline_main, ["synth", "/nowhere/out.json", "--products", "10"]),
    (
        pipeline_main,
        ["synth-ratings", "/nowhere/o.csv", *("--users", "2", "--items", "2", "--ratings", "2")],
    ),
    (pipeline_main, ["split", "/nowhere"]),
    (pipeline_main, ["walks", "/nowhere"]),
    (pipeline_main, ["split-ratings", "/nowhere"]),
    (pipeline_main, ["sequences", "/nowhere"]),
    (recsys_main, ["train", "/nowhere"]),
]


@pytest.mark.parametrize(("main", "args"), SEEDED, ids=[args[0] for _, args in SEEDED])
@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**63), "-1", "x"])
def test_every_seed_option_refuses_what_a_consumer_cannot_take_in_one_line(
    main, args, seed, capsys
):
    with pytest.raises(SystemExit) as caught:
        main([*args, "--seed", seed])
    assert caught.value.code == 2
    assert capsys.readouterr().err == f"error: {SEED_RANGE}, got {seed}\n"


def test_the_largest_seed_is_taken_by_every_consumer():
    from pipeline.__main__ import build_parser

    assert build_parser().parse_args(["split", "d", "--seed", str(cli.MAX_SEED)]).seed == (
        cli.MAX_SEED
    )
    TrainConfig(seed=cli.MAX_SEED)
    torch.manual_seed(cli.MAX_SEED)
    torch.Generator().manual_seed(cli.MAX_SEED)
    np.random.default_rng([cli.MAX_SEED, 1, 2])
    np.random.SeedSequence(cli.MAX_SEED).spawn(2)
    shuffle_keys(np.arange(3), np.arange(3), cli.MAX_SEED)
    with pytest.raises(PipelineError, match="--seed must be at most"):
        TrainConfig(seed=cli.MAX_SEED + 1)  # the library's callers: the same range


# --nproc: the ranks must fit in memory; more of them than cores is said.

GIB = 2**30


def test_nproc_refuses_ranks_that_do_not_fit_in_memory(pairs, monkeypatch):
    monkeypatch.setattr(tasks, "available_memory", lambda: 24 * GIB)
    each = distributed.RANK_RUNTIME_BYTES + tasks.training_bytes(2000, TrainConfig())
    with pytest.raises(PipelineError) as caught:
        distributed.check_processes(pairs, {}, 64)
    assert str(caught.value) == (
        f"--nproc 64: 64 processes of about {each / GIB:.2f} GiB each (the runtime and the "
        f"tables of 2,000 products) need {64 * each / GIB:.1f} GiB; 24.0 GiB is available, "
        f"enough for {(24 * GIB - distributed.LAUNCHER_BYTES) // each}"
    )
    distributed.check_processes(pairs, {}, 32)  # fits


def test_nproc_counts_a_ratings_sets_users_and_items(rated, monkeypatch):
    monkeypatch.setattr(tasks, "available_memory", lambda: 2 * GIB)
    with pytest.raises(PipelineError, match=r"the tables of 300 users and 200 items\) need"):
        distributed.check_processes(rated, {"model": "mf_bias"}, 4)


def test_nproc_above_the_cores_is_warned_of_in_one_line(pairs, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "_cores", lambda: 2)
    distributed.check_processes(pairs, {}, 2)
    assert capsys.readouterr().err == ""
    distributed.check_processes(pairs, {}, 4)
    assert capsys.readouterr().err == (
        "warning: --nproc 4 is more than the 2 cores this process may run on: the ranks take "
        "turns on them, and every step waits for the slowest\n"
    )
