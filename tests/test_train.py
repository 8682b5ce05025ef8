"""The trainer: exact gradients and updates, the stream's coverage, schedule, resume, outputs."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from planted import write_planted
from torch.utils.data import DataLoader

from pipeline.errors import PipelineError
from recsys_stream.core import tables
from recsys_stream.core.config import TrainConfig, batch_for
from recsys_stream.core.losses import LOSSES
from recsys_stream.core.schedule import learning_rate
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run
from recsys_stream.pairs import smoothing
from recsys_stream.pairs.inputs import open_training_data
from recsys_stream.pairs.models import build_model
from recsys_stream.pairs.sampling import NegativeSampler
from recsys_stream.pairs.steps import FusedStep
from recsys_stream.pairs.stream import Batch, PairStream

FAST = dict(epochs=2, lr=0.05, batch_size=256, eval_every=20, eval_sample=2000)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_planted(
        tmp_path_factory.mktemp("planted"), products=1500, pairs=15000, row_group=1000
    )


@pytest.mark.parametrize("schedule", ["cosine-restarts", "cosine", "constant"])
def test_learning_rate_schedules(schedule):
    lrs = [[learning_rate(schedule, 0.1, e, s, 10, 3) for s in range(10)] for e in range(3)]
    if schedule == "cosine-restarts":
        assert [epoch[0] for epoch in lrs] == [0.1, 0.1, 0.1]  # back to base each epoch
        assert all(epoch[9] < 0.003 for epoch in lrs)
    elif schedule == "cosine":
        assert lrs[0][0] == 0.1 and lrs[1][0] < 0.1 and lrs[2][9] < 0.001
        flat = [lr for epoch in lrs for lr in epoch]
        assert flat == sorted(flat, reverse=True)
    else:
        assert {lr for epoch in lrs for lr in epoch} == {0.1}


def stream_over(planted, batch_size=100, negatives=2, seed=5, shared=0):
    degree = (
        np.bincount(
            pq.read_table(planted / "train.parquet").column("src").to_numpy(), minlength=1500
        )
        + 1
    )
    return PairStream(
        planted / "train.parquet",
        batch_size,
        NegativeSampler(degree, 0.75),
        negatives,
        seed,
        shuffle_groups=2,
        shared=shared,
    )


def positives_of(batches) -> list[tuple[int, int]]:
    pairs = []
    for batch in batches:
        a, b = batch.anchor.numpy(), batch.others[:, 0].numpy()
        pairs += list(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))
    return pairs


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shared", [0, 16])
# 3 workers on 2 cores is on purpose: DataLoader's warning about it is expected.
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_stream_sees_every_pair_once_per_epoch(planted, workers, shared):
    table = pq.read_table(planted / "train.parquet")
    expected = sorted(zip(table.column("src").to_pylist(), table.column("dst").to_pylist()))
    stream = stream_over(planted, shared=shared)
    for epoch in range(2):
        stream.set_epoch(epoch)
        loader = DataLoader(stream, batch_size=None, num_workers=workers if workers > 1 else 0)
        seen = positives_of(loader)
        assert sorted(seen) == expected


def test_stream_order_is_seeded_and_changes_by_epoch(planted):
    stream = stream_over(planted)
    first = positives_of(stream)
    assert positives_of(stream) == first  # same epoch, same seed: same order
    stream.set_epoch(1)
    assert positives_of(stream) != first
    assert positives_of(stream_over(planted, seed=6)) != first


def test_shared_negatives_are_drawn_once_a_batch_and_weigh_k_over_n(planted):
    batches = list(stream_over(planted, batch_size=100, negatives=2, shared=16))
    for batch in batches:
        assert batch.others.shape == (len(batch.anchor), 1) and batch.shared.shape == (16,)
        assert batch.shared_weight == 2 / 16
        assert len(batch) == 3 * len(batch.anchor)  # the samples the objective counts
    assert len({tuple(b.shared.tolist()) for b in batches}) == len(batches)  # drawn anew
    again = list(stream_over(planted, batch_size=100, negatives=2, shared=16))
    assert all(torch.equal(a.shared, b.shared) for a, b in zip(batches, again))  # seeded


def test_shared_draws_follow_degree_power():
    degree = np.array([0, 1, 10, 100, 1000])
    drawn = NegativeSampler(degree, 0.75).draw(np.random.default_rng(0), 100_000)
    shares = np.bincount(drawn, minlength=5) / drawn.size
    np.testing.assert_allclose(shares, degree**0.75 / (degree**0.75).sum(), atol=0.01)


def test_training_with_shared_negatives_learns_and_repeats_itself(planted):
    config = TrainConfig(shared_negatives=32, **FAST)
    summary = train(planted, config, name="shared", quiet=True)
    assert summary["auc_seen"] > summary["popularity_auc_seen"] and summary["auc_all"] > 0.75
    assert summary["step"] == "kernel"  # --step auto's choice with shared negatives too
    train(planted, config, name="shared-again", quiet=True)
    first, second = (load_run(planted / "runs" / n)[0] for n in ("shared", "shared-again"))
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_negatives_avoid_the_pair_and_follow_degree_power():
    degree = np.array([0, 1, 10, 100, 1000])
    sampler = NegativeSampler(degree, 0.75)
    rng = np.random.default_rng(0)
    anchor = np.full(20000, 3)
    positive = np.full(20000, 4)
    drawn = sampler.negatives(rng, anchor, positive, 5)
    assert not np.isin(drawn, [3, 4]).any()
    shares = np.bincount(drawn.ravel(), minlength=5) / drawn.size
    expected = degree[:3] ** 0.75 / (degree[:3] ** 0.75).sum()
    np.testing.assert_allclose(shares[:3], expected, atol=0.01)
    assert shares[0] == 0


def test_large_tables_on_advised_pages_train_and_save_like_plain_ones(monkeypatch, tmp_path):
    batch = Batch(torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 0]]), torch.ones(2))
    trained = []
    for threshold in (1 << 60, 0):  # plain torch.zeros, then anonymous mmap for every table
        monkeypatch.setattr(tables, "HUGE_PAGES_FROM", threshold)
        assert tables.zeros(3, 2).abs().sum() == 0
        model = build_model("mf_bias", 4, 3, 0.1, seed=1)
        step = FusedStep(model, LOSSES["binary"], 1e-3, 1.0)
        for _ in range(3):
            step(batch, 0.1)
        torch.save(model.state_dict(), tmp_path / "model.pt")
        trained.append(torch.load(tmp_path / "model.pt", weights_only=True))
    for name, plain in trained[0].items():
        torch.testing.assert_close(trained[1][name], plain, rtol=0, atol=0)


@pytest.mark.parametrize("vocab", [2, 7, 5000])
def test_guide_table_draws_equal_binary_search(vocab):
    rng = np.random.default_rng(vocab)
    degree = rng.pareto(1.0, vocab) * (rng.random(vocab) < 0.8)  # some products have no mass
    degree[0] = 1.0
    sampler = NegativeSampler(degree, 0.75)
    u = rng.random((4000, 3))
    u.flat[:4] = [0.0, np.nextafter(1.0, 0.0), sampler.cdf[-1], sampler.cdf[vocab // 2]]
    expected = np.minimum(np.searchsorted(sampler.cdf, u, side="right"), vocab - 1)
    np.testing.assert_array_equal(sampler._inverse_cdf(u), expected)


def test_batches_hold_pair_weights_and_the_losses_make_targets_of_them(planted):
    table = pq.read_table(planted / "train.parquet")
    weight = dict(
        zip(
            zip(table.column("src").to_pylist(), table.column("dst").to_pylist()),
            table.column("weight").to_pylist(),
        )
    )
    batch = next(iter(stream_over(planted)))
    assert batch.others.shape == (100, 3) and len(batch) == 300
    pairs = zip(batch.anchor.tolist(), batch.others[:, 0].tolist(), batch.weight.tolist())
    assert all(w == weight[(min(a, b), max(a, b))] for a, b, w in pairs)
    continuous = LOSSES["continuous"].targets(batch.weight, batch.others.shape, 2.2)
    assert (continuous[:, 1:] == 0).all()
    expected = 0.9 + 0.1 * batch.weight / 2.2
    torch.testing.assert_close(continuous[:, 0], expected)
    binary = LOSSES["binary"].targets(batch.weight, batch.others.shape, 2.2)
    assert (binary[:, 0] == 1).all() and (binary[:, 1:] == 0).all()


@pytest.mark.parametrize(
    ("model", "labels", "floor"),
    [("mf_bias", "binary", 0.8), ("mf_bias", "continuous", 0.75), ("mf", "binary", 0.58)],
)
def test_variants_learn(planted, model, labels, floor):
    summary = train(planted, TrainConfig(model=model, labels=labels, **FAST), quiet=True)
    assert summary["auc_all"] > floor
    if model == "mf_bias":  # plain MF needs more data than this to beat popularity
        assert summary["auc_seen"] > summary["popularity_auc_seen"]
    assert summary["epoch_start_lr"] == [0.05, 0.05]  # restarted, never stuck at 0


def test_run_directory_contents(planted):
    summary = train(planted, TrainConfig(**FAST), name="contents", quiet=True)
    run = planted / "runs" / "contents"
    for name in [
        "model.pt",
        "checkpoint.pt",
        "metrics.csv",
        "pr.csv",
        "roc.csv",
        "summary.json",
        "embeddings.parquet",
    ]:
        assert (run / name).is_file(), name
    assert json.loads((run / "summary.json").read_text())["auc_all"] == summary["auc_all"]
    assert summary["negative_protocol"] == "products"  # as val.parquet records it
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == sorted(int(r["epoch"]) for r in rows)
    assert {r["epoch"] for r in rows} == {"0", "1", "2"} and all(r["auc_all"] for r in rows)
    assert rows[0]["step"] == "0" and rows[0]["loss"] == ""  # the untrained model's point
    embeddings = pq.read_table(run / "embeddings.parquet")
    assert embeddings.num_rows == 1500 and embeddings.column("asin")[7].as_py() == "P000000007"
    model, config, _ = load_run(run)
    vector = np.array(embeddings.column("vector")[7].as_py(), dtype=np.float32)
    np.testing.assert_allclose(model.embedding.weight[7].detach().numpy(), vector)
    assert pq.read_schema(run / "embeddings.parquet").metadata[b"split_id"] == b"planted-split"
    assert config == TrainConfig(**FAST)
    pr = list(csv.DictReader(open(run / "pr.csv")))
    assert len(pr) == 101 and float(pr[0]["recall"]) == 1.0


def test_resume_refuses_other_settings(planted):
    train(planted, TrainConfig(**{**FAST, "epochs": 1}), name="other", quiet=True)
    with pytest.raises(PipelineError, match="other settings"):
        train(planted, TrainConfig(**{**FAST, "dim": 8}), name="other", resume=True, quiet=True)


def test_model_is_refused_with_another_vocabulary(planted, tmp_path):
    other = write_planted(tmp_path / "other", products=1500, pairs=15000, seed=9)
    train(other, TrainConfig(**{**FAST, "epochs": 1}), name="x", quiet=True)
    (other / "vocab.parquet").write_bytes((planted / "vocab.parquet").read_bytes())
    with pytest.raises(PipelineError, match="another vocabulary"):
        load_run(other / "runs" / "x")


def test_bad_inputs_are_one_line_errors(planted, tmp_path):
    with pytest.raises(PipelineError, match=r"nothing to train on: no train\.parquet"):
        train(tmp_path, TrainConfig(), quiet=True)
    with pytest.raises(PipelineError, match=r"need about .* GiB"):
        train(planted, TrainConfig(dim=10**9), quiet=True)
    with pytest.raises(PipelineError, match="--dim must be at least 1"):
        TrainConfig(dim=0)
    empty = write_planted(tmp_path / "empty", products=200, pairs=500)
    table = pq.read_table(empty / "train.parquet")
    pq.write_table(table.slice(0, 0), empty / "train.parquet")
    with pytest.raises(PipelineError, match="no pairs to train on"):
        train(empty, TrainConfig(), quiet=True)


def test_smoothing_changes_only_the_final_vectors(planted):
    plain = train(planted, TrainConfig(**{**FAST, "smoothing": 0.0}), name="plain", quiet=True)
    smooth = train(planted, TrainConfig(**FAST), name="smooth", quiet=True)
    assert plain["auc_all"] == plain["auc_all_unsmoothed"] == smooth["auc_all_unsmoothed"]
    assert smooth["auc_all"] > smooth["auc_all_unsmoothed"]  # clusters: neighbours agree
    raw = load_run(planted / "runs" / "plain")[0].embedding.weight
    final = load_run(planted / "runs" / "smooth")[0].embedding.weight
    degree = open_training_data(planted).degree
    expected = smoothing.smooth(raw, planted / "train.parquet", degree, TrainConfig().smoothing)
    assert torch.equal(final, expected)


# Weights after two epochs on a fixed planted set, hashed: the model protocol,
# the loss module and the steps reshaped the trainer without changing a bit.
# Hashed with torch's AVX2 kernels: its AVX-512 ones sum in another order (on an
# AVX-512 machine mf_bias-binary's digest differs), so the training runs in a
# process told to use AVX2 (ATEN_CPU_CAPABILITY), on any machine that has it;
# the compiled kernel, whose sums along a row the compiler vectorises for the
# processor, is compiled for Haswell's AVX2 (NUMBA_CPU_NAME) likewise. Even so
# some library under torch follows the processor whatever ATEN_CPU_CAPABILITY
# says (MKL's settings changed the bits, but none gave the AVX2 host's), and on
# its vendor too: an Intel host with AVX-512 gave a second set of digests
# (2026-12-07), an AMD EPYC with AVX-512 the AVX2 host's. So each case has the
# digests of the hosts seen, and a run must give one of them: a change of
# result gives neither.
GOLDEN_BY_HOST = {
    "AVX2": {
        ("fused", "mf", "binary"): "4b9e2e8097a37435",
        ("fused", "mf", "continuous"): "44aac46450617739",
        ("fused", "mf_bias", "binary"): "f787d028a68d08ac",
        ("fused", "mf_bias", "continuous"): "9dc7826015f06f2b",
        ("kernel", "mf", "binary"): "0d0e4bdf0e12bece",
        ("kernel", "mf", "continuous"): "9ebaa93068fd924a",
        ("kernel", "mf_bias", "binary"): "66dc1158c8053d82",
        ("kernel", "mf_bias", "continuous"): "1b1cdda838cfe6f7",
    },
    "Intel AVX-512": {
        ("fused", "mf", "binary"): "64bc0ba725818677",
        ("fused", "mf", "continuous"): "d00187617cf7bb29",
        ("fused", "mf_bias", "binary"): "7b5a842fa02aaf64",
        ("fused", "mf_bias", "continuous"): "c3b72ab456e33581",
        ("kernel", "mf", "binary"): "2b5ab8c636fbf0db",
        ("kernel", "mf", "continuous"): "087d8fa0e098aa0e",
        ("kernel", "mf_bias", "binary"): "7b860d9449f8fbd0",
        ("kernel", "mf_bias", "continuous"): "5efd071ca5cd6af5",
    },
}
GOLDEN = {case: {host[case] for host in GOLDEN_BY_HOST.values()} for case in GOLDEN_BY_HOST["AVX2"]}
HOST = torch.backends.cpu.get_cpu_capability()
GOLDEN_RUN = """
import hashlib, sys
from pathlib import Path
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.trained import load_run
from recsys_stream.core.train import train
data, step, model, labels = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
config = TrainConfig(
    model=model, labels=labels, step=step, epochs=2, batch_size=128, eval_every=25,
    eval_sample=1000,
)
train(data, config, name="golden", quiet=True)
state = load_run(data / "runs" / "golden")[0].state_dict().values()
print(hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in state)).hexdigest())
"""


@pytest.mark.skipif(HOST not in ("AVX2", "AVX512"), reason="no AVX2")
@pytest.mark.parametrize(("step", "model", "labels"), sorted(GOLDEN))
def test_mf_weights_match_their_golden_checksums(tmp_path, step, model, labels):
    data = write_planted(tmp_path, products=800, pairs=8000, row_group=1000)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "NUMBA_CPU_NAME": "haswell"}
    done = subprocess.run(
        [sys.executable, "-c", GOLDEN_RUN, str(data), step, model, labels],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip()[:16] in GOLDEN[(step, model, labels)]


def test_batch_size_zero_takes_the_largest_power_of_two_that_gives_800_steps_an_epoch():
    auto = TrainConfig()
    assert auto.batch_size == 0  # the default on product pairs
    assert batch_for(auto, 10_000_000) == 2048  # large catalogs keep 2,048
    assert batch_for(auto, 1_638_400) == 2048  # exactly 800 steps
    assert batch_for(auto, 1_638_399) == 1024
    assert batch_for(auto, 204_914) == 256  # the real 2014 Digital Music sample
    assert batch_for(auto, 35_744) == 32  # the real 2018 Magazine sample
    assert batch_for(auto, 5) == 1
    assert batch_for(TrainConfig(batch_size=100), 35_744) == 100  # a given size wins


def test_a_run_records_the_batch_size_it_chose_and_steps_by_it(planted):
    config = TrainConfig(epochs=1, eval_sample=1000)
    summary = train(planted, config, name="auto-batch", quiet=True)
    rows = open_training_data(planted).train_rows
    assert summary["config"]["batch_size"] == 0
    assert summary["batch_size"] == batch_for(config, rows) < 2048
    assert summary["steps"] == math.ceil(rows / summary["batch_size"])
