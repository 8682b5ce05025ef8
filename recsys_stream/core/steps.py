"""The training step, behind one interface: ``step(batch, lr) -> loss``.

Two implementations of the same objective (:func:`recsys_stream.core.losses.objective`);
both return the batch's mean loss without the L2 term:

- :class:`FusedStep`, for models whose score is a pair layout: closed-form
  gradients and a lazy Adam on the touched rows (:mod:`recsys_stream.core.fused`);
  its cost does not depend on the vocabulary size.
- :class:`AutogradStep`, for any model: ``loss.backward()`` through the
  model's ``logits``, the same lazy Adam on the sparse tables' touched rows
  (their gradients come sparse from ``nn.Embedding(sparse=True)``) and AdamW
  on the dense parameters (:class:`SparseDenseAdam`). Slower, general.
- :class:`TermsStep`, for rating and sequence models: the same, through the
  model's ``terms(batch)`` (its loss and penalty); rating models with a
  layout train by :class:`~recsys_stream.ratings.fused.FusedRatingStep`
  instead.

:func:`make_step` picks the fused one when the model has a layout, unless
told otherwise. Both hold their optimizer state, saved in checkpoints.
"""

from __future__ import annotations

import math

import torch

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.fused import (
    DistinctRows,
    Gradients,
    GradientStep,
    LazyAdam,
    OptimizerState,
    gradients,
    layout_parameters,
)
from recsys_stream.core.losses import LOSSES, Loss, objective_terms
from recsys_stream.pairs.models import PairModel
from recsys_stream.pairs.stream import Batch
from recsys_stream.ratings.fused import FusedRatingStep
from recsys_stream.ratings.stream import RatingBatch
from recsys_stream.sequences.stream import SequenceBatch


class Step:
    """One optimisation step of ``model`` on a batch; see the module doc."""

    kind: str

    def __init__(self, model: PairModel, loss: Loss, l2: float, max_weight: float):
        self.model, self.loss, self.l2, self.max_weight = model, loss, l2, max_weight

    def targets(self, batch: Batch) -> torch.Tensor:
        return self.loss.targets(batch.weight, batch.others.shape, self.max_weight)

    def __call__(self, batch: Batch, lr: float) -> float:
        """Update the model from ``batch`` at learning rate ``lr``; the batch's mean loss."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class FusedStep(GradientStep, Step):
    kind = "fused"

    def __init__(self, model: PairModel, loss: Loss, l2: float, max_weight: float):
        super().__init__(model, loss, l2, max_weight)
        self.layout = model.layout()
        params = layout_parameters(self.layout)
        self.optimizer = LazyAdam(params)
        self.distinct = DistinctRows(max(p.shape[0] for p in params.values()))

    def gradients(self, batch: Batch) -> Gradients:
        return gradients(
            self.layout,
            batch.anchor,
            batch.others,
            self.targets(batch),
            self.loss,
            self.l2,
            self.distinct,
            batch.shared,
            batch.shared_weight,
        )


class SparseDenseAdam:
    """A model's optimizers: the lazy Adam on its sparse tables' touched rows, AdamW on
    the dense parameters; gradients come from ``backward()``."""

    def __init__(self, tables: dict[str, torch.nn.Embedding], dense: dict[str, torch.nn.Parameter]):
        self.tables = tables
        for table in tables.values():
            table.sparse = True  # gradients of the touched rows only
        self.sparse = LazyAdam({name: table.weight for name, table in tables.items()})
        dense = list(dense.values())
        self.dense = torch.optim.AdamW(dense, weight_decay=0.0) if dense else None

    def step(self, lr: float) -> None:
        rows = {}
        for name, table in self.tables.items():
            if table.weight.grad is not None:
                grad = table.weight.grad.coalesce()
                rows[name] = (grad.indices()[0], grad.values())
        self.sparse.step(rows, lr)
        if self.dense:
            for group in self.dense.param_groups:
                group["lr"] = lr
            self.dense.step()

    def state_dict(self) -> dict:
        return {
            "sparse": self.sparse.state_dict(),
            "dense": self.dense.state_dict() if self.dense else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.sparse.load_state_dict(state["sparse"])
        if self.dense:
            self.dense.load_state_dict(state["dense"])


class AutogradStep(OptimizerState, Step):
    kind = "autograd"

    def __init__(self, model: PairModel, loss: Loss, l2: float, max_weight: float):
        super().__init__(model, loss, l2, max_weight)
        self.optimizer = SparseDenseAdam(model.tables(), model.dense())

    def __call__(self, batch: Batch, lr: float) -> float:
        self.model.zero_grad(set_to_none=True)
        data, penalty = objective_terms(
            self.model,
            batch.anchor,
            batch.others,
            self.targets(batch),
            self.loss,
            self.l2,
            batch.shared,
            batch.shared_weight,
        )
        (data + penalty).backward()
        self.optimizer.step(lr)
        return data.item()


class TermsStep(OptimizerState):
    """A rating or sequence model's step: ``backward()`` through its ``terms(batch)``,
    the same optimizers."""

    kind = "autograd"

    def __init__(self, model):
        self.model = model
        self.optimizer = SparseDenseAdam(model.tables(), model.dense())

    def __call__(self, batch: RatingBatch | SequenceBatch, lr: float) -> float:
        """Update the model from ``batch`` at ``lr``; the batch's mean data loss."""
        self.model.zero_grad(set_to_none=True)
        data, penalty = self.model.terms(batch)
        (data + penalty).backward()
        self.optimizer.step(lr)
        return data.item()


STEPS = {"fused": FusedStep, "autograd": AutogradStep}


def make_step(model: PairModel, config: TrainConfig, max_weight: float) -> Step:
    """The step ``config.step`` names; ``auto``: fused when the model has a layout."""
    kind = config.step
    if kind == "auto":
        kind = "fused" if model.layout() is not None else "autograd"
    if kind == "fused" and model.layout() is None:
        raise PipelineError(f"--model {config.model} has no fused step; use --step autograd")
    return STEPS[kind](model, LOSSES[config.labels], config.l2, max_weight)


def make_rating_step(model, config: TrainConfig):
    """A rating model's step: fused when its prediction has a layout, unless told otherwise."""
    layout = model.layout()
    kind = config.step
    if kind == "auto":
        kind = "fused" if layout is not None else "autograd"
    if kind == "fused" and layout is None:
        raise PipelineError(f"--model {config.model} has no fused step; use --step autograd")
    return FusedRatingStep(model, layout) if kind == "fused" else TermsStep(model)


# A run has diverged when the mean loss of a window of at least STEADY_STEPS steps
# is LOSS_RISE times the part's first step's (the untrained model's, or the
# resumed one's), each step's loss taken per sample (per_sample). Not the mean of
# the first steps: --lr 1 lifts the loss at the second step already. Measured on
# the real samples (MovieLens latest-small, Digital Music) with the defaults of
# every kind of model, no window of 16 rose above 1.05 times the first step
# (skip-gram 1.04, lstm 1.02, the others at most 1.0); --lr 1 rose to 3.4 (lstm),
# 3.7 (embedding_net), 5.2 (mf_bias on ratings), 9.2 (gru, next item), 78
# (skip-gram) and 1,461 (mf on ratings) times.
STEADY_STEPS = 16
LOSS_RISE = 2.0
# ... or when a weight's magnitude reaches this. A weight of 10 moves a logit by 10
# (sigmoid(-10) = 4.5e-5) or, in two vectors, by 100: the sigmoids and gates
# saturate and stop learning. Measured with the defaults of every kind of model,
# the largest weight was 4.9 (skip-gram's output vectors, 100k synthetic catalog)
# and under 3.5 elsewhere; --lr 1 reached 10 to 37 on pairs, ratings and sequences,
# --lr 0.3 on pairs 10.4 in epoch 4 (AUC falling behind the default's).
WEIGHT_LIMIT = 10.0


class Diverged(PipelineError):
    """A diverging run, stopped; the loop adds which checkpoint is the last good one."""

    def __init__(self, step: int, cause: str, config: TrainConfig):
        super().__init__(
            f"training diverged at step {step}: {cause}; lower --lr (now {config.lr:g}) "
            f"or --init-std (now {config.init_std:g})"
        )


def check_finite(value: float, step: int, config: TrainConfig, what: str = "loss") -> None:
    """Stop a diverging run at once, in one line saying what to lower."""
    if not math.isfinite(value):
        raise Diverged(step, f"the {what} became {value}", config)


def per_sample(loss: float, batch) -> float:
    """A step's ``loss`` as a mean over its batch's samples, so that any two steps
    compare: a pair or rating step's loss is one already; a sequence batch's is its
    positions' sum over ``norm`` (stream.SequenceBatch), larger for longer runs."""
    if isinstance(batch, SequenceBatch):
        return loss * batch.norm / batch.samples
    return loss


class DivergenceWatch:
    """Stop a run that diverges, from what it does to the model, not only an infinite loss.

    :meth:`step` after each step (the loss is already a Python number), :meth:`point`
    at each learning-curve point and :meth:`compare` at an epoch's end: the mean
    per-sample loss of the steps since the last comparison (at a point, once they are
    STEADY_STEPS or more) LOSS_RISE times the part's first step's, or a weight of
    WEIGHT_LIMIT, stops it. The weights are read at the points
    only, by ``aminmax`` (no temporary: 14 ms for a table of 2.17M rows of 33, one
    thread). A loss that starts at or below zero (pmf's log-likelihood) is left to
    the weights.

    Every data-parallel rank sees the same losses and weights, so all stop at
    the same step (a rank without a batch sees the union's loss, a mean already).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig):
        self.model, self.config = model, config
        self.first: float | None = None  # the part's first step's per-sample loss
        self.window: list[float] = []  # the per-sample losses since the last comparison

    def step(self, loss: float, step: int, batch) -> None:
        """Check a step's ``loss`` on ``batch``; the part's first is what later windows
        are held to."""
        check_finite(loss, step, self.config)
        self.window.append(per_sample(loss, batch))
        if self.first is None:
            self.first = self.window[-1]

    def point(self, step: int) -> None:
        """Check the window of losses ended at ``step``, once it is STEADY_STEPS long, and
        the weights."""
        if len(self.window) >= STEADY_STEPS:
            self.compare(step)
        name, largest = self.largest_weight()
        if not largest <= WEIGHT_LIMIT:  # NaN too
            raise Diverged(step, f"a weight in {name} reached {largest:.3g}", self.config)

    def compare(self, step: int) -> None:
        """Check the window of losses ended at ``step``, whatever its length (at an
        epoch's end, so that no checkpoint holds a diverged model), and start another."""
        first, window = self.first, self.window
        self.window = []
        if not window or first is None or first <= 0:
            return
        mean = sum(window) / len(window)
        if mean > LOSS_RISE * first:
            raise Diverged(
                step,
                f"the loss rose to {mean:.4g} a sample, {mean / first:.1f}x its {first:.4g} "
                "at the first step",
                self.config,
            )

    def largest_weight(self) -> tuple[str, float]:
        """The parameter holding the largest magnitude, and that magnitude (the first
        that is not a number, if one is not)."""
        found = ("", 0.0)
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if param.numel() and param.dtype.is_floating_point:
                    low, high = torch.aminmax(param)
                    largest = max(-low.item(), high.item())
                    if math.isnan(largest):
                        return name, largest
                    if largest > found[1]:
                        found = (name, largest)
        return found
