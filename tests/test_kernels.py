"""The compiled kernel steps against their torch reference, and against themselves.

:class:`KernelStep` and :class:`KernelRatingStep` compute the fused steps'
objective and lazy Adam update in compiled loops; here, for every pair
variant with a layout (side information included), both losses and both
kinds of negatives, their losses, weights and Adam moments match the torch
fused step's within float tolerance over several steps; their gradients
(the data-parallel path) match the fused gradients; and one thread and two
give the same bits, because the lanes a batch is split into are fixed.
"""

from __future__ import annotations

import pytest
import torch

from recsys_stream.core.config import TrainConfig
from recsys_stream.core.losses import LOSSES
from recsys_stream.core.optim import DistinctRows
from recsys_stream.pairs.fused import gradients
from recsys_stream.pairs.kernel_step import KernelStep
from recsys_stream.pairs.steps import FusedStep, make_step
from recsys_stream.ratings.fused import FusedRatingStep, KernelRatingStep
from recsys_stream.ratings.models import build_rating_model
from recsys_stream.ratings.stream import RatingBatch
from tests.test_models import VARIANTS, fresh, random_batch
from tests.test_rating_models import config as rating_config

LAID_OUT = [kind for kind in VARIANTS if fresh(kind).layout() is not None]


@pytest.fixture(params=LAID_OUT)
def kind(request) -> str:
    return request.param


@pytest.fixture(params=[0, 5], ids=["negatives-per-row", "shared-negatives"])
def shared(request) -> int:
    return request.param


@pytest.mark.parametrize("labels", sorted(LOSSES))
def test_the_kernel_makes_the_fused_steps_update(kind, labels, shared):
    model, reference = fresh(kind), fresh(kind)
    kernel = KernelStep(model, LOSSES[labels], 0.01, 2.0)
    fused = FusedStep(reference, LOSSES[labels], 0.01, 2.0)
    for seed in range(6):
        batch = random_batch(seed, shared=shared)
        assert kernel(batch, 0.05) == pytest.approx(fused(batch, 0.05), rel=1e-5)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=1e-5, rtol=1e-4)
    for name, moments in fused.optimizer.moments.items():
        torch.testing.assert_close(kernel.optimizer.moments[name], moments, atol=1e-7, rtol=1e-4)
    assert kernel.optimizer.steps == fused.optimizer.steps == 6


def test_the_kernels_gradients_are_the_fused_gradients(kind, shared):
    """The half a data-parallel step exchanges: each parameter's rows and their sums."""
    model = fresh(kind)
    batch, loss = random_batch(2, shared=shared), LOSSES["binary"]
    found = KernelStep(model, loss, 0.1, 2.0).gradients(batch)
    expected = gradients(
        model.layout(),
        batch.anchor,
        batch.others,
        loss.targets(batch.weight, batch.others.shape, 2.0),
        loss,
        0.1,
        DistinctRows(40),
        batch.shared,
        batch.shared_weight,
    )
    assert found.loss == pytest.approx(expected.loss, rel=1e-6)
    assert found.rows.keys() == expected.rows.keys()
    for name, (rows, grad) in expected.rows.items():
        got_rows, got_grad = found.rows[name]
        order = torch.argsort(got_rows)
        assert torch.equal(got_rows[order], rows), name
        torch.testing.assert_close(got_grad[order], grad, atol=1e-7, rtol=1e-5)


def test_one_thread_and_two_give_the_same_bits(kind, shared):
    models = [fresh(kind, vocab=400), fresh(kind, vocab=400)]
    steps = [KernelStep(model, LOSSES["continuous"], 0.01, 2.0) for model in models]
    steps[1].set_threads(2)
    for seed in range(4):
        batch = random_batch(seed, vocab=400, size=300, shared=shared)
        assert steps[0](batch, 0.05) == steps[1](batch, 0.05)
    for a, b in zip(*(model.state_dict().values() for model in models)):
        assert torch.equal(a, b)


def rating_model(name: str):
    return build_rating_model(name, 30, 50, 1.0, 5.0, rating_config(name, l2=0.3, init_std=0.3))


@pytest.mark.parametrize("name", ["mf", "mf_bias"])
def test_the_rating_kernel_makes_the_fused_rating_steps_update(name):
    model, reference = rating_model(name), rating_model(name)
    kernel = KernelRatingStep(model, model.layout())
    fused = FusedRatingStep(reference, reference.layout())
    for number in range(6):
        batch = rating_batch(number)
        assert kernel(batch, 0.05) == pytest.approx(fused(batch, 0.05), rel=1e-5)
        if number == 0:  # the first gradients, in the moments, agree to float precision
            for table, moments in fused.optimizer.moments.items():
                torch.testing.assert_close(kernel.optimizer.moments[table], moments)
    # A gradient that cancels to 1e-8 is as small as Adam's eps: summed in another
    # order it moves its weight by up to a few thousandths of the learning rate.
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=5e-4, rtol=1e-4)


def rating_batch(seed: int, size: int = 64) -> RatingBatch:
    generator = torch.Generator().manual_seed(seed)
    return RatingBatch(
        torch.randint(0, 30, (size,), generator=generator),
        torch.randint(0, 50, (size,), generator=generator),
        torch.randint(1, 6, (size,), generator=generator).float(),
    )


@pytest.mark.parametrize("name", ["mf", "mf_bias"])
def test_the_rating_kernels_gradients_are_the_fused_gradients(name):
    """The half a data-parallel rating step exchanges."""
    model = rating_model(name)
    batch = rating_batch(3)
    found = KernelRatingStep(model, model.layout()).gradients(batch)
    expected = FusedRatingStep(model, model.layout()).gradients(batch)
    assert found.loss == pytest.approx(expected.loss, rel=1e-6)
    assert found.rows.keys() == expected.rows.keys()
    for table, (rows, grad) in expected.rows.items():
        got_rows, got_grad = found.rows[table]
        order = torch.argsort(got_rows)  # the kernel's in first-touch order
        assert torch.equal(got_rows[order], rows), table
        torch.testing.assert_close(got_grad[order], grad, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", ["mf", "mf_bias"])
def test_the_rating_kernel_gives_the_same_bits_on_one_thread_and_two(name):
    models = [rating_model(name), rating_model(name)]
    steps = [KernelRatingStep(model, model.layout()) for model in models]
    steps[1].set_threads(2)
    for seed in range(4):
        batch = rating_batch(seed, size=500)
        assert steps[0](batch, 0.05) == steps[1](batch, 0.05)
    for a, b in zip(*(model.state_dict().values() for model in models)):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kind", "shared_negatives", "chosen"),
    [
        ("mf_bias", 0, "kernel"),
        ("skipgram", 0, "kernel"),
        ("mf_bias", 32, "kernel"),  # shared negatives too
        ("mf_bias+side", 0, "fused"),  # the torch step is faster with side information
    ],
)
def test_auto_takes_the_kernel_where_it_is_the_faster_step(kind, shared_negatives, chosen):
    config = TrainConfig(shared_negatives=shared_negatives)
    assert make_step(fresh(kind), config, 2.0).kind == chosen
