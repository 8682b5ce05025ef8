"""The pair models' steps: three implementations of one objective.

Both compute :func:`recsys_stream.core.losses.objective` (each pair's loss
against targets its weight makes, shared or per-row negatives, L2 on the
touched rows) and return the batch's mean loss without the L2 term:

- :class:`~recsys_stream.pairs.kernel_step.KernelStep`, for models whose score
  is a pair layout, the default for plain tables: the
  objective's gradients and the lazy Adam in compiled loops
  (:mod:`recsys_stream.core.kernels`).
- :class:`FusedStep`, for the same models, the kernel's reference and the
  default with side information: closed-form
  gradients in torch operations (:mod:`recsys_stream.pairs.fused`) and the
  lazy Adam on the touched rows (:mod:`recsys_stream.core.optim`).
- :class:`AutogradStep`, for any pair model: ``loss.backward()`` through the
  model's ``logits``, with :class:`~recsys_stream.core.steps.SparseDenseAdam`.
  Slower, general.
"""

from __future__ import annotations

import torch

from recsys_stream.core.config import TrainConfig
from recsys_stream.core.losses import LOSSES, Loss, objective_terms
from recsys_stream.core.optim import DistinctRows, Gradients, GradientStep, LazyAdam, OptimizerState
from recsys_stream.core.steps import SparseDenseAdam, Step, choose_step
from recsys_stream.pairs.fused import gradients, layout_parameters
from recsys_stream.pairs.kernel_step import KernelStep
from recsys_stream.pairs.models import PairModel
from recsys_stream.pairs.stream import Batch


class PairStep:
    """One optimisation step of ``model`` on a batch; see the module doc."""

    kind: str

    def __init__(self, model: PairModel, loss: Loss, l2: float, max_weight: float):
        self.model, self.loss, self.l2, self.max_weight = model, loss, l2, max_weight

    def targets(self, batch: Batch) -> torch.Tensor:
        return self.loss.targets(batch.weight, batch.others.shape, self.max_weight)


class FusedStep(GradientStep, PairStep):
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


class AutogradStep(OptimizerState, PairStep):
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


def make_step(model: PairModel, config: TrainConfig, max_weight: float) -> Step:
    """The step ``config.step`` names; ``auto``: for a model with a layout, the kernel, or
    the torch fused step with side information, whose vectors the kernel leaves to torch
    operations and where the torch step measured faster end to end (skip-gram, 20k
    products, 2026-12-07: 211k-234k against the kernel's 193k-213k walk tokens a second;
    with plain tables and shared negatives the kernel won, 378k-395k against 284k-324k,
    and 276k-292k against 229k-235k at 100k products)."""
    loss, layout = LOSSES[config.labels], model.layout()
    side_info = layout is not None and not KernelStep.plain_layout(layout)
    order = ("fused", "kernel") if side_info else ("kernel", "fused")
    steps = {"kernel": KernelStep, "fused": FusedStep, "autograd": AutogradStep}
    builders = {
        kind: (lambda step=steps[kind]: step(model, loss, config.l2, max_weight))
        for kind in (*order, "autograd")
    }
    return choose_step(model, config, builders)
