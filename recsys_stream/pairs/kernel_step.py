"""The pair models' kernel step: the fused step's objective and update in compiled loops.

:class:`KernelStep` trains any model with a pair layout (``mf``, ``mf_bias``,
``mf_two_tables``, ``skipgram``; with or without side information, per-row or
shared negatives) with :mod:`recsys_stream.core.kernels`: the score, the loss
gradient, the row gradients and the lazy Adam of the touched rows in one pass
over the samples and one over the rows. Its optimizer state is
:class:`~recsys_stream.core.optim.LazyAdam`'s, so checkpoints move between it
and :class:`~recsys_stream.pairs.steps.FusedStep`, the torch reference the
contract tests hold it to.

Plain tables are updated inside the kernel. With side information a product's
vector is the mean of several tables' rows: the kernel computes the gradient
of each product's vector, and the step routes it to the rows the vector
averages and applies the lazy Adam to those (``gradients``, which the
data-parallel exchange also uses).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys_stream.core import kernels
from recsys_stream.core.lanes import Lanes
from recsys_stream.core.losses import Loss
from recsys_stream.core.optim import DistinctRows, Gradients, LazyAdam, row_sums
from recsys_stream.pairs.fused import layout_parameters, spread
from recsys_stream.pairs.models import PairModel
from recsys_stream.pairs.stream import Batch

LOSS_CODES = {"binary": kernels.BINARY, "continuous": kernels.CONTINUOUS}
NONE_SHARED = np.empty(0, np.int64)
BOTH = kernels.LEFT | kernels.RIGHT


class KernelStep:
    """One step of a pair model in the compiled kernel; see the module doc."""

    kind = "kernel"

    def __init__(self, model: PairModel, loss: Loss, l2: float, max_weight: float):
        self.model, self.loss, self.l2, self.max_weight = model, loss, l2, max_weight
        self.layout = layout = model.layout()
        self.params = layout_parameters(layout)
        self.optimizer = LazyAdam(self.params)
        self.shared_table = layout.right is layout.left
        self.plain = self.plain_layout(layout)
        products = _products(layout.left)
        self.dim = layout.left.embedding_dim if self.plain else layout.left.own.embedding_dim
        self.width = self.dim + 3 if self.shared_table else 2 * self.dim + 3
        self.slot = np.full(products, -1, np.int32)
        self.distinct = DistinctRows(max(p.shape[0] for p in self.params.values()))
        self.lanes = Lanes()
        self._reserve(0)

    @staticmethod
    def plain_layout(layout) -> bool:
        """Whether both sides of ``layout`` are plain tables (no side information)."""
        return isinstance(layout.left, nn.Embedding) and isinstance(layout.right, nn.Embedding)

    def set_threads(self, threads: int) -> None:
        self.lanes.set_threads(threads)

    def _reserve(self, slots: int) -> None:
        """Buffers for ``slots`` distinct rows (they grow with the batches, never shrink)."""
        if slots and slots <= len(self.rows):
            return
        self.rows = np.empty(slots, np.int64)
        self.flags = np.empty(slots, np.uint8)
        self.grads = np.zeros((kernels.LANES, slots, self.width), np.float32)
        self.vectors_left = np.empty((slots, self.dim), np.float32)
        self.vectors_right = (
            self.vectors_left if self.shared_table else np.empty((slots, self.dim), np.float32)
        )
        self.biases = np.zeros((slots, 1), np.float32)

    def _arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A parameter's weights and Adam moments as numpy views, or empty ones."""
        if name not in self.params:
            return np.empty((0, 1), np.float32), np.empty((0, 2), np.float32)
        return self.params[name].detach().numpy(), self.optimizer.moments[name].numpy()

    def __call__(self, batch: Batch, lr: float) -> float:
        """Update the model from ``batch`` at ``lr``; the batch's mean loss."""
        if not self.plain:
            gradients = self.gradients(batch)
            self.optimizer.step(gradients.rows, lr)
            return gradients.loss
        n, loss, global_grad, total = self._accumulate(batch)
        size, b1, b2, eps = (np.float32(x) for x in self.optimizer.advance(lr))
        left, left_moments = self._arrays("left")
        right, right_moments = self._arrays("left" if self.shared_table else "right")
        bias, bias_moments = self._arrays("bias")
        decay = np.float32(2 * self.l2 / total)

        def apply(_lane: int, begin: int, end: int) -> None:
            kernels.pair_apply(
                left, left_moments, right, right_moments, bias, bias_moments, self.vectors_left,
                self.vectors_right, self.biases, self.grads, self.rows, self.flags,
                self.slot, decay, begin, end, size, b1, b2, eps,
            )  # fmt: skip

        self.lanes.run(apply, n)
        if "global_bias" in self.params:
            weights, moments = self._arrays("global_bias")
            grad = np.array([[global_grad]], np.float32)
            kernels.adam_rows(
                weights, moments, np.zeros(1, np.int64), grad, 0, 1, size, b1, b2, eps
            )
        return loss

    def gradients(self, batch: Batch) -> Gradients:
        """The batch's gradients as each parameter's distinct rows and their sums, as
        :func:`~recsys_stream.pairs.fused.gradients` gives them (the rows in another
        order)."""
        n, loss, global_grad, total = self._accumulate(batch)
        per_slot = np.empty((n, self.width - 2), np.float32)
        kernels.pair_collect(
            self.vectors_left, self.vectors_right, self.grads, self.rows, self.slot, n,
            np.float32(2 * self.l2 / total), per_slot,
        )  # fmt: skip
        found = self._route(torch.from_numpy(self.rows[:n].copy()), torch.from_numpy(per_slot), n)
        if "global_bias" in self.params:
            found["global_bias"] = (torch.zeros(1, dtype=torch.long), torch.tensor([[global_grad]]))
        return Gradients(found, loss)

    def _accumulate(self, batch: Batch) -> tuple[int, float, np.float32, float]:
        """The kernel's first phases: slots, each slot's vectors, and every lane's gradients
        in its buffer. Returns the slot count, the mean loss, the global bias's gradient and
        the batch's weighted sample count."""
        anchor, others = batch.anchor.numpy(), batch.others.numpy()
        shared = batch.shared.numpy() if batch.shared is not None else NONE_SHARED
        shared_weight = batch.shared_weight if batch.shared is not None else 0.0
        target = self.loss.positive_target(batch.weight, self.max_weight).numpy()
        target = target.astype(np.float32, copy=False)
        self._reserve(anchor.size + others.size + shared.size)
        n = kernels.register_pairs(anchor, others, shared, self.slot, self.rows, self.flags)
        self._gather(n)
        total = others.size + shared_weight * anchor.size * shared.size
        global_bias = self._arrays("global_bias")[0]
        offset = global_bias[0, 0] if len(global_bias) else np.float32(0.0)
        biases = self.biases[:n, 0] if "bias" in self.params else self.biases[:0, 0]
        code, inv_total = LOSS_CODES[self.loss.name], np.float32(1 / total)

        def lane(number: int, begin: int, end: int) -> tuple[float, float]:
            return kernels.pair_lane(
                self.vectors_left, self.vectors_right, biases, offset, anchor, others, target,
                shared, np.float32(shared_weight), code, inv_total, self.slot, self.grads[number],
                begin, end,
            )  # fmt: skip

        parts = self.lanes.run(lane, len(anchor))
        loss = sum(part[0] for part in parts) / total
        global_grad = np.float32(0.0)
        for part in parts:
            global_grad += np.float32(part[1])
        return n, loss, global_grad, total

    def _gather(self, n: int) -> None:
        """Each slot's vectors and bias as the step begins: the tables' rows, or with side
        information the means of the rows each vector averages."""
        rows, flags = self.rows, self.flags
        copies = [("bias", BOTH, self.biases)] if "bias" in self.params else []
        if self.plain:
            if self.shared_table:
                copies.append(("left", BOTH, self.vectors_left))
            else:
                copies.append(("left", kernels.LEFT, self.vectors_left))
                copies.append(("right", kernels.RIGHT, self.vectors_right))

        def gather(_lane: int, begin: int, end: int) -> None:
            for name, side, out in copies:
                kernels.gather_rows(self._arrays(name)[0], rows, flags, side, begin, end, out)

        self.lanes.run(gather, n)
        if self.plain:
            return
        ids = torch.from_numpy(rows[:n])
        with torch.no_grad():
            self.vectors_left[:n] = _vectors_of(self.layout.left, ids)
            if not self.shared_table:
                self.vectors_right[:n] = _vectors_of(self.layout.right, ids)

    def _route(self, ids: torch.Tensor, per_slot: torch.Tensor, n: int) -> dict:
        """Each slot's vector gradients to the rows its vectors average, summed per row."""
        d = self.dim
        flags = torch.from_numpy(self.flags[:n].copy())
        sides = [("left", self.layout.left, per_slot[:, :d], flags > 0)]
        if not self.shared_table:
            sides = [
                ("left", self.layout.left, per_slot[:, :d], (flags & kernels.LEFT) > 0),
                ("right", self.layout.right, per_slot[:, d : 2 * d], (flags & kernels.RIGHT) > 0),
            ]
        parts: dict[str, tuple[list, list]] = {}
        for name, table, grad, touched in sides:
            spread(parts, table, name, ids[touched], grad[touched])
        found = {
            source: row_sums(self.distinct(torch.cat(rows)), torch.cat(grads))
            for source, (rows, grads) in parts.items()
        }
        if "bias" in self.params:
            found["bias"] = (ids, per_slot[:, -1:])
        return found

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def _products(table: nn.Embedding | nn.Module) -> int:
    return table.num_embeddings if isinstance(table, nn.Embedding) else table.own.num_embeddings


def _vectors_of(table: nn.Embedding | nn.Module, ids: torch.Tensor) -> np.ndarray:
    vectors = table.weight.index_select(0, ids) if isinstance(table, nn.Embedding) else table(ids)
    return vectors.numpy()
