"""The training step's protocol, ``step(batch, lr) -> loss``, and what every kind shares.

A step updates its model from one batch at a learning rate and returns the
batch's mean data loss (without the L2 term); it holds its optimizer state,
saved in checkpoints. Each kind builds its own (``pairs.steps``,
``ratings.fused``); what they share is here:

- :class:`GradientStep` (``core.optim``): gradients in closed form, then the
  lazy Adam on the touched rows, for models with a layout; its cost does not
  depend on the vocabulary size.
- :class:`SparseDenseAdam`: the lazy Adam on a model's sparse tables'
  touched rows (their gradients come sparse from ``nn.Embedding(sparse=True)``)
  and AdamW on its dense parameters, for steps through ``backward()``.
- :class:`TermsStep`: ``backward()`` through a model's ``terms(batch)`` (its
  loss and penalty): the autograd step of rating and sequence models.
- :func:`choose_step`: a compiled step (the kernel of ``core.kernels`` or a
  torch fused step, as the kind prefers) where the model has a layout,
  unless ``--step`` says otherwise, refused in one line where it has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.optim import LazyAdam, OptimizerState


class Step(Protocol):
    """One optimisation step of a model on a batch; see the module doc."""

    kind: str  # "kernel", "fused" or "autograd"

    def __call__(self, batch, lr: float) -> float:
        """Update the model from ``batch`` at learning rate ``lr``; the batch's mean loss."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


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


class TermsStep(OptimizerState):
    """A rating or sequence model's step: ``backward()`` through its ``terms(batch)``,
    the same optimizers."""

    kind = "autograd"

    def __init__(self, model):
        self.model = model
        self.optimizer = SparseDenseAdam(model.tables(), model.dense())

    def __call__(self, batch: object, lr: float) -> float:
        """Update the model from ``batch`` at ``lr``; the batch's mean data loss."""
        self.model.zero_grad(set_to_none=True)
        data, penalty = self.model.terms(batch)
        (data + penalty).backward()
        self.optimizer.step(lr)
        return data.item()


def choose_step(model, config: TrainConfig, builders: dict[str, Callable[[], Step]]) -> Step:
    """The step ``config.step`` names, built by its factory in ``builders`` (by kind:
    ``kernel``, ``fused``, ``autograd``). ``auto``: when ``model`` has a layout, the first
    of ``builders``' compiled steps (the kind orders them, fastest first), else autograd;
    a step the model or its kind does not have is refused in one line."""
    kind = config.step
    has_layout = model.layout() is not None
    if kind == "auto":
        compiled = [k for k in builders if k != "autograd" and has_layout]
        kind = compiled[0] if compiled else "autograd"
    if kind not in builders or (kind != "autograd" and not has_layout):
        raise PipelineError(f"--model {config.model} has no {kind} step; use --step autograd")
    return builders[kind]()
