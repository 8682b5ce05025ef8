"""The training step, behind one interface: ``step(batch, lr) -> loss``.

Two implementations of the same objective (:func:`recsys_stream.losses.objective`);
both return the batch's mean loss without the L2 term:

- :class:`FusedStep`, for models whose score is a pair layout: closed-form
  gradients and a lazy Adam on the touched rows (:mod:`recsys_stream.fused`);
  its cost does not depend on the vocabulary size.
- :class:`AutogradStep`, for any model: ``loss.backward()`` through the
  model's ``logits``, the same lazy Adam on the sparse tables' touched rows
  (their gradients come sparse from ``nn.Embedding(sparse=True)``) and AdamW
  on the dense parameters (:class:`SparseDenseAdam`). Slower, general.
- :class:`TermsStep`, for rating and sequence models: the same, through the
  model's ``terms(batch)`` (its loss and penalty); rating models with a
  layout train by :class:`~recsys_stream.fused_ratings.FusedRatingStep`
  instead.

:func:`make_step` picks the fused one when the model has a layout, unless
told otherwise. Both hold their optimizer state, saved in checkpoints.
"""

from __future__ import annotations

import math

import torch

from pipeline.errors import PipelineError
from recsys_stream.config import TrainConfig
from recsys_stream.fused import (
    DistinctRows,
    Gradients,
    GradientStep,
    LazyAdam,
    OptimizerState,
    gradients,
    layout_parameters,
)
from recsys_stream.fused_ratings import FusedRatingStep
from recsys_stream.losses import LOSSES, Loss, objective_terms
from recsys_stream.models import PairModel
from recsys_stream.stream import Batch, RatingBatch, SequenceBatch


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


def check_finite(value: float, step: int, config: TrainConfig, what: str = "loss") -> None:
    """Stop a diverging run at once, in one line saying what to lower."""
    if not math.isfinite(value):
        raise PipelineError(
            f"training diverged at step {step} ({what} {value}); lower --lr (now {config.lr:g}) "
            f"or --init-std (now {config.init_std:g})"
        )
