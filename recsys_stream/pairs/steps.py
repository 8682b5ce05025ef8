"""The pair models' steps: three implementations of one objective.

Both compute :func:`recsys_stream.core.losses.objective` (each pair's loss
against targets its weight makes, shared or per-row negatives, L2 on the
touched rows) and return the batch's mean loss without the L2 term:

- :class:`~recsys_stream.pairs.kernel_step.KernelStep`, for models whose score
  is a pair layout, the default for plain tables with per-row negatives: the
  objective's gradients and the lazy Adam in compiled loops
  (:mod:`recsys_stream.core.kernels`).
- :class:`FusedStep`, for the same models, the kernel's reference and the
  default with shared negatives or side information: closed-form
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
    the torch fused step where that measured faster end to end (2026-12-07: skip-gram at
    20k products, 268k against 197k walk tokens a second with shared negatives, 161k
    against 99k with side information too): with shared negatives, whose scores the
    torch step takes as one matrix product, and with side information, whose vectors
    the kernel leaves to torch operations."""
    loss, layout = LOSSES[config.labels], model.layout()
    side_info = layout is not None and not KernelStep.plain_layout(layout)
    order = ("fused", "kernel") if config.shared_negatives or side_info else ("kernel", "fused")
    steps = {"kernel": KernelStep, "fused": FusedStep, "autograd": AutogradStep}
    builders = {
        kind: (lambda step=steps[kind]: step(model, loss, config.l2, max_weight))
        for kind in (*order, "autograd")
    }
    return choose_step(model, config, builders)
