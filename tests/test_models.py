"""The contract every registered model meets, run for each entry of the registry.

Each runs plain, and MF with bias and skip-gram also with side information
(``+side``: brand, category and price vectors averaged into the product's).
A new model is checked here without a line of test code: its fused gradients
(when it has a layout) against autograd's, each step's update against
torch's own optimizers, that both steps give the same update, that a short
run learns a planted answer, and that ``similar`` never answers a product
with itself; and the contract every kind's models share
(``tests/model_contract.py``): save and load and resume bit-exact, the same
seed the same weights, the fused step training as autograd does.
"""

from __future__ import annotations

import pytest
import torch
from model_contract import ModelContract
from planted import write_planted

from pipeline.walks import walks
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.losses import LOSSES, objective, objective_terms
from recsys_stream.core.optim import DistinctRows
from recsys_stream.core.train import train
from recsys_stream.pairs.fused import gradients, layout_parameters
from recsys_stream.pairs.kernel_step import KernelStep
from recsys_stream.pairs.models import MODELS, SideTables, build_model
from recsys_stream.pairs.steps import AutogradStep, FusedStep
from recsys_stream.pairs.stream import Batch, PairStream
from recsys_stream.pairs.walk_stream import WalkStream
from recsys_stream.similar import similar

FAST = dict(epochs=2, lr=0.05, batch_size=128, eval_every=20, eval_sample=1000)


SIDE = "brand,category,price"
VARIANTS = [*sorted(MODELS), "mf_bias+side", "skipgram+side"]


@pytest.fixture(params=VARIANTS)
def kind(request) -> str:
    return request.param


def settings(kind: str) -> dict:
    """The TrainConfig fields of a variant: its model, and its side information."""
    model, _, side = kind.partition("+")
    return {"model": model, "side_info": SIDE if side else ""}


def build(kind: str, vocab: int, dim: int, init_std: float, seed: int):
    """A variant's model; with side information, two features with random codes."""
    side = None
    if kind.endswith("+side"):
        generator = torch.Generator().manual_seed(5)
        sizes = {"brand": 3, "category": 4}
        codes = {f: torch.randint(0, n, (vocab,), generator=generator) for f, n in sizes.items()}
        own_weight = 1 + torch.rand(vocab, generator=generator)  # own rows of unequal weight
        side = SideTables(sizes, codes, own_weight)
    return build_model(settings(kind)["model"], vocab, dim, init_std, seed, side)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Planted clusters, with walks for the models that learn from walks."""
    data = write_planted(
        tmp_path_factory.mktemp("planted"), products=600, pairs=6000, row_group=500
    )
    walks(data, walks_per_node=4, length=10, quiet=True)
    return data


def random_batch(seed: int, vocab: int = 40, size: int = 16, k: int = 3, shared: int = 0) -> Batch:
    """k negatives a row, or (``shared`` N) the partner only and N negatives shared at k / N."""
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randint(0, vocab, (size,), generator=generator)
    others = torch.randint(0, vocab, (size, 1 if shared else 1 + k), generator=generator)
    weight = torch.rand(size, generator=generator) * 2
    if not shared:
        return Batch(anchor, others, weight)
    return Batch(
        anchor, others, weight, torch.randint(0, vocab, (shared,), generator=generator), k / shared
    )


@pytest.fixture(params=[0, 5], ids=["negatives-per-row", "shared-negatives"])
def shared(request) -> int:
    return request.param


def fresh(kind: str, vocab: int = 40):
    model = build(kind, vocab, 6, init_std=0.5, seed=3)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # nonzero biases, so their gradients are exercised
        for table in model.tables().values():
            if table.weight.shape[1] == 1:
                table.weight.normal_(std=0.3, generator=generator)
    return model


@pytest.mark.parametrize("labels", sorted(LOSSES))
def test_fused_gradients_equal_autograd(kind, labels, shared):
    model = fresh(kind)
    if model.layout() is None:
        pytest.skip(f"{kind} has no fused step")
    batch, loss = random_batch(1, shared=shared), LOSSES[labels]
    target = loss.targets(batch.weight, batch.others.shape, 2.0)
    fused = gradients(
        model.layout(),
        batch.anchor,
        batch.others,
        target,
        loss,
        0.1,
        DistinctRows(40),
        batch.shared,
        batch.shared_weight,
    )
    terms = objective_terms(
        model, batch.anchor, batch.others, target, loss, 0.1, batch.shared, batch.shared_weight
    )
    sum(terms).backward()
    assert fused.loss == pytest.approx(terms[0].item())
    for name, param in layout_parameters(model.layout()).items():
        rows, grad = fused.rows[name]
        dense = torch.zeros_like(param)
        dense[rows] = grad
        leaf = model.global_bias if name == "global_bias" else param  # not its (1, 1) view
        torch.testing.assert_close(dense, leaf.grad.view_as(dense), atol=1e-6, rtol=1e-5)


def test_autograd_step_equals_torch_optimizers(kind, shared):
    """SparseAdam on the sparse tables, AdamW (no decay) on the dense parameters."""
    model, reference = fresh(kind), fresh(kind)
    step = AutogradStep(model, LOSSES["binary"], 0.01, 2.0)
    tables = reference.tables()
    for table in tables.values():
        table.sparse = True
    sparse = torch.optim.SparseAdam([t.weight for t in tables.values()], lr=0.05)
    dense_params = list(reference.dense().values())
    dense = torch.optim.AdamW(dense_params, lr=0.05, weight_decay=0.0) if dense_params else None
    for seed in range(6):
        batch = random_batch(seed, shared=shared)
        step(batch, 0.05)
        reference.zero_grad()
        target = LOSSES["binary"].targets(batch.weight, batch.others.shape, 2.0)
        objective(
            reference,
            batch.anchor,
            batch.others,
            target,
            LOSSES["binary"],
            0.01,
            batch.shared,
            batch.shared_weight,
        ).backward()
        sparse.step()
        if dense:
            dense.step()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=1e-6, rtol=1e-5)


def test_both_steps_make_the_same_update(kind, shared):
    model = fresh(kind)
    if model.layout() is None:
        pytest.skip(f"{kind} has no fused step")
    other = fresh(kind)
    fused = FusedStep(model, LOSSES["continuous"], 0.01, 2.0)
    autograd = AutogradStep(other, LOSSES["continuous"], 0.01, 2.0)
    for seed in range(5):
        batch = random_batch(seed, shared=shared)
        assert fused(batch, 0.05) == pytest.approx(autograd(batch, 0.05), rel=1e-5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[name], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("step_kind", [FusedStep, AutogradStep])
def test_shared_negatives_are_per_row_negatives_when_every_row_has_the_same(kind, step_kind):
    """Shared ids at weight 1 are k negatives every row has: the same objective and update."""
    if step_kind is FusedStep and fresh(kind).layout() is None:
        pytest.skip(f"{kind} has no fused step")
    rows = random_batch(7)
    negatives = rows.others[0, 1:]
    rows.others[:, 1:] = negatives
    shared = Batch(rows.anchor, rows.others[:, :1], rows.weight, negatives, 1.0)
    models = [fresh(kind), fresh(kind)]
    losses = [
        step_kind(m, LOSSES["continuous"], 0.01, 2.0)(b, 0.05)
        for m, b in zip(models, (rows, shared))
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert len(rows) == len(shared)
    for a, b in zip(*(m.state_dict().values() for m in models)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("compiled", [KernelStep, FusedStep])
def test_a_step_touches_only_the_batch_rows(kind, compiled):
    model = build(kind, 1000, 8, init_std=0.1, seed=0)
    before = {name: t.weight.detach().clone() for name, t in model.tables().items()}
    step = compiled if model.layout() is not None else AutogradStep
    batch = Batch(torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 6]]), torch.ones(2))
    step(model, LOSSES["binary"], 0.1, 1.0)(batch, 0.1)
    products = torch.arange(1, 7)
    for name, table in model.tables().items():
        changed = set((table.weight != before[name]).any(1).nonzero().flatten().tolist())
        table_of, _, feature = name.partition(".features.")
        codes = getattr(model, table_of).get_buffer(f"codes_{feature}") if feature else None
        assert changed <= set((products if codes is None else codes[products]).tolist()), name
        assert changed, name


@pytest.mark.parametrize("step", ["kernel", "autograd"])
def test_a_short_run_learns_the_planted_clusters(kind, planted, step):
    if step == "kernel" and build(kind, 2, 2, 0.1, 0).layout() is None:
        pytest.skip(f"{kind} has no kernel step")
    config = TrainConfig(**settings(kind), step=step, **{**FAST, "epochs": 4})
    summary = train(planted, config, name=f"learn-{kind}-{step}", quiet=True)
    # Popularity scores about 0.69 here, a random model 0.5; the models reach 0.83-0.90.
    assert summary["auc_all"] > summary["popularity_auc"] + 0.1


class TestPairModelContract(ModelContract):
    """Every pair model, and MF with bias and skip-gram with side information."""

    kind = "pairs"
    streams = (PairStream, WalkStream)

    @classmethod
    def variants(cls) -> list[str]:
        return VARIANTS

    @pytest.fixture
    def dataset(self, planted):
        return planted

    def settings(self, model: str, **values) -> TrainConfig:
        return TrainConfig(**settings(model), **{**FAST, **values})


def test_similar_never_answers_the_query(kind, planted):
    config = TrainConfig(**settings(kind), **{**FAST, "epochs": 1})
    train(planted, config, name=f"sim-{kind}", quiet=True)
    queries = [f"P{i:09d}" for i in (0, 7, 599)]
    for cosine in (False, True):
        result = similar(planted / "runs" / f"sim-{kind}", queries, k=20, cosine=cosine)
        for query, answer in zip(queries, result.answers):
            asins = [item.asin for item in answer.similar]
            assert len(asins) == len(set(asins)) == 20 and query not in asins
