"""The trainer: exact gradients and updates, the stream's coverage, schedule, resume, outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from planted import write_planted
from torch.utils.data import DataLoader

from pipeline.errors import PipelineError
from recsys_stream import smoothing, tables
from recsys_stream import stream as stream_module
from recsys_stream.config import TrainConfig
from recsys_stream.fused import LazyAdam, gradients
from recsys_stream.inputs import open_training_data
from recsys_stream.models import build_model
from recsys_stream.runs import load_model
from recsys_stream.sampling import NegativeSampler
from recsys_stream.schedule import learning_rate
from recsys_stream.stream import PairStream
from recsys_stream.train import train

FAST = dict(epochs=2, lr=0.05, batch_size=256, eval_every=20, eval_sample=2000)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_planted(
        tmp_path_factory.mktemp("planted"), products=1500, pairs=15000, row_group=1000
    )


def autograd_loss(model, anchor, others, target, binary, l2):
    """The loss as the models define it, for autograd to differentiate."""
    a = anchor.repeat_interleave(others.shape[1])
    b, y = others.reshape(-1), target.reshape(-1)
    p = model(a, b)
    data = F.binary_cross_entropy(p, y) if binary else (p - y).square().mean()
    e = model.embedding
    return data + l2 * (e(a).square().sum(1) + e(b).square().sum(1)).mean()


def random_batch(generator, vocab=40, batch=16, k=3):
    anchor = torch.randint(0, vocab, (batch,), generator=generator)
    others = torch.randint(0, vocab, (batch, 1 + k), generator=generator)
    return anchor, others, torch.rand(batch, 1 + k, generator=generator)


@pytest.mark.parametrize("kind", ["mf", "mf_bias"])
@pytest.mark.parametrize("binary", [True, False])
def test_fused_gradients_equal_autograd(kind, binary):
    generator = torch.Generator().manual_seed(1)
    model = build_model(kind, 40, 6, init_std=0.5, seed=3)
    if kind == "mf_bias":
        with torch.no_grad():
            model.bias.weight.normal_(generator=generator)
            model.global_bias.fill_(0.3)
    anchor, others, target = random_batch(generator)
    fused = gradients(model, anchor, others, target, binary, l2=0.1)
    autograd_loss(model, anchor, others, target, binary, 0.1).backward()
    dense = torch.zeros_like(model.embedding.weight)
    dense[fused.rows] = fused.embedding
    torch.testing.assert_close(dense, model.embedding.weight.grad)
    if kind == "mf_bias":
        dense_bias = torch.zeros_like(model.bias.weight)
        dense_bias[fused.rows] = fused.bias
        torch.testing.assert_close(dense_bias, model.bias.weight.grad)
        torch.testing.assert_close(fused.global_bias, model.global_bias.grad)


@pytest.mark.parametrize("kind", ["mf", "mf_bias"])
def test_lazy_adam_equals_sparse_adam(kind):
    generator = torch.Generator().manual_seed(2)
    fused_model = build_model(kind, 40, 6, init_std=0.5, seed=3)
    reference = build_model(kind, 40, 6, init_std=0.5, seed=3)
    tables = [reference.embedding] + ([reference.bias] if kind == "mf_bias" else [])
    for table in tables:
        table.sparse = True
    fused_opt = LazyAdam(fused_model)
    sparse_opt = torch.optim.SparseAdam([t.weight for t in tables], lr=0.05)
    # The global bias is in every sample, so dense Adam is the lazy one.
    dense = [reference.global_bias] if kind == "mf_bias" else []
    dense_opt = torch.optim.Adam(dense, lr=0.05) if dense else None
    for step in range(6):
        anchor, others, target = random_batch(generator)
        target = (target < 0.3).float() if step % 2 else target
        fused_opt.step(gradients(fused_model, anchor, others, target, step % 2, 0.01), lr=0.05)
        reference.zero_grad()
        autograd_loss(reference, anchor, others, target, step % 2, 0.01).backward()
        sparse_opt.step()
        if dense_opt:
            dense_opt.step()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(fused_model.state_dict()[name], value, atol=1e-6, rtol=1e-5)


def test_step_touches_only_the_batch_rows():
    model = build_model("mf_bias", 1000, 8, init_std=0.1, seed=0)
    before = model.embedding.weight.detach().clone()
    anchor, others = torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 6]])
    LazyAdam(model).step(gradients(model, anchor, others, torch.ones(2, 2), True, 0.1), 0.1)
    changed = (model.embedding.weight != before).any(1).nonzero().flatten().tolist()
    assert changed == [1, 2, 3, 4, 5, 6]


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


def stream_over(planted, batch_size=100, negatives=2, seed=5, max_weight=None):
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
        max_weight=max_weight,
    )


def positives_of(batches) -> list[tuple[int, int]]:
    pairs = []
    for batch in batches:
        a, b = batch.anchor.numpy(), batch.others[:, 0].numpy()
        pairs += list(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))
    return pairs


@pytest.mark.parametrize("workers", [1, 2, 3])
# 3 workers on 2 cores is on purpose: DataLoader's warning about it is expected.
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_stream_sees_every_pair_once_per_epoch(planted, workers):
    table = pq.read_table(planted / "train.parquet")
    expected = sorted(zip(table.column("src").to_pylist(), table.column("dst").to_pylist()))
    stream = stream_over(planted)
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
    batch = (torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 0]]), torch.tensor([[1.0, 0], [1, 0]]))
    trained = []
    for threshold in (1 << 60, 0):  # plain torch.zeros, then anonymous mmap for every table
        monkeypatch.setattr(tables, "HUGE_PAGES_FROM", threshold)
        assert tables.zeros(3, 2).abs().sum() == 0
        model = build_model("mf_bias", 4, 3, 0.1, seed=1)
        optimizer = LazyAdam(model)
        for _ in range(3):
            optimizer.step(gradients(model, *batch, binary=True, l2=1e-3), lr=0.1)
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


def test_batches_hold_labels_and_continuous_targets(planted):
    table = pq.read_table(planted / "train.parquet")
    weight = dict(
        zip(
            zip(table.column("src").to_pylist(), table.column("dst").to_pylist()),
            table.column("weight").to_pylist(),
        )
    )
    batch = next(iter(stream_over(planted, max_weight=2.2)))
    assert batch.others.shape == (100, 3) and len(batch) == 300
    assert (batch.target[:, 1:] == 0).all()
    for a, b, t in zip(batch.anchor.tolist(), batch.others[:, 0].tolist(), batch.target[:, 0]):
        assert t.item() == pytest.approx(0.9 + 0.1 * weight[(min(a, b), max(a, b))] / 2.2)
    binary = next(iter(stream_over(planted)))
    assert (binary.target[:, 0] == 1).all()


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
    assert {r["epoch"] for r in rows} == {"1", "2"} and all(r["auc_all"] for r in rows)
    embeddings = pq.read_table(run / "embeddings.parquet")
    assert embeddings.num_rows == 1500 and embeddings.column("asin")[7].as_py() == "P000000007"
    model, config, _ = load_model(run)
    vector = np.array(embeddings.column("vector")[7].as_py(), dtype=np.float32)
    np.testing.assert_allclose(model.embedding.weight[7].detach().numpy(), vector)
    assert config == TrainConfig(**FAST)
    pr = list(csv.DictReader(open(run / "pr.csv")))
    assert len(pr) == 101 and float(pr[0]["recall"]) == 1.0


def test_resume_after_interruption_matches_uninterrupted(planted, monkeypatch):
    config = TrainConfig(**{**FAST, "epochs": 3})
    whole = train(planted, config, name="whole", quiet=True)

    real_iter = PairStream.__iter__

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real_iter(self)

    monkeypatch.setattr(stream_module.PairStream, "__iter__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(planted, config, name="resumed", quiet=True)
    run = planted / "runs" / "resumed"
    assert not (run / "model.pt").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(stream_module.PairStream, "__iter__", real_iter)
    resumed = train(planted, config, name="resumed", resume=True, quiet=True)
    assert resumed["epochs"] == 3 and resumed["steps"] == whole["steps"]
    assert abs(resumed["auc_all"] - whole["auc_all"]) < 0.01


def test_resume_refuses_other_settings(planted):
    train(planted, TrainConfig(**{**FAST, "epochs": 1}), name="other", quiet=True)
    with pytest.raises(PipelineError, match="other settings"):
        train(planted, TrainConfig(**{**FAST, "dim": 8}), name="other", resume=True, quiet=True)


def test_model_is_refused_with_another_vocabulary(planted, tmp_path):
    other = write_planted(tmp_path / "other", products=1500, pairs=15000, seed=9)
    train(other, TrainConfig(**{**FAST, "epochs": 1}), name="x", quiet=True)
    (other / "vocab.parquet").write_bytes((planted / "vocab.parquet").read_bytes())
    with pytest.raises(PipelineError, match="another vocabulary"):
        load_model(other / "runs" / "x")


def test_bad_inputs_are_one_line_errors(planted, tmp_path):
    with pytest.raises(PipelineError, match=r"train\.parquet: not found"):
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
    raw = load_model(planted / "runs" / "plain")[0].embedding.weight
    final = load_model(planted / "runs" / "smooth")[0].embedding.weight
    degree = open_training_data(planted).degree
    expected = smoothing.smooth(raw, planted / "train.parquet", degree, TrainConfig().smoothing)
    assert torch.equal(final, expected)
