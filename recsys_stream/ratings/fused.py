"""The fused rating step: closed-form gradients of a rating layout, the lazy Adam.

Autograd through ``nn.Embedding`` ran at about 0.2M ratings/s on two cores
(MovieLens latest-small, batch 1024, dim 32); this step computes the same
gradients in a handful of tensor operations, so a step's cost is O(batch x
dim) with little overhead. A :class:`RatingLayout` is the prediction
``link(<p_user, q_item> + b_user + b_item)``, the biases the last column of
each row (or none), where the link is the identity (``mf``) or a sigmoid
stretched over the widened rating range (``mf_bias``); the objective is
:meth:`RatingModel.terms`'s: the mean
squared error plus ``l2`` times the touched rows' mean squared norms. The
contract tests check the gradients against autograd for every model with a
layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_stream.core import kernels
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.lanes import Lanes
from recsys_stream.core.optim import DistinctRows, Gradients, GradientStep, LazyAdam, row_sums
from recsys_stream.core.steps import Step, TermsStep, choose_step


@dataclass
class RatingLayout:
    """The parameters of ``link(<user[u], item[i]> + b_user + b_item)``.

    ``biased``: each row ends with its bias. ``low`` and ``high``: the
    sigmoid link's range; None for the identity link.
    """

    user: nn.Embedding
    item: nn.Embedding
    biased: bool = False
    low: float | None = None
    high: float | None = None

    def parameters(self) -> dict[str, torch.Tensor]:
        """The tables by the names :func:`rating_gradients` uses."""
        return {"user": self.user.weight, "item": self.item.weight}


@torch.no_grad()
def rating_gradients(
    layout: RatingLayout,
    user: torch.Tensor,
    item: torch.Tensor,
    rating: torch.Tensor,
    l2: float,
    distinct: DistinctRows,
) -> Gradients:
    """Gradients of the mean squared error plus the L2 term, summed per distinct row."""
    p = layout.user.weight.index_select(0, user)
    q = layout.item.weight.index_select(0, item)
    if layout.biased:
        logit = (p[:, :-1] * q[:, :-1]).sum(-1) + p[:, -1] + q[:, -1]
    else:
        logit = (p * q).sum(-1)
    count = len(rating)
    if layout.low is None:
        predicted, slope = logit, 1.0
    else:
        unit = torch.sigmoid(logit)
        span = layout.high - layout.low
        predicted, slope = unit * span + layout.low, unit * (1 - unit) * span
    error = predicted - rating
    dlogit = ((2 / count) * error * slope)[:, None]
    decay = 2 * l2 / count
    # d logit / d row: the other side's vector, and 1 for the bias
    grad_user, grad_item = dlogit * q, dlogit * p
    if layout.biased:
        grad_user[:, -1:] = dlogit
        grad_item[:, -1:] = dlogit
    found = {
        "user": row_sums(distinct(user), grad_user.add_(p, alpha=decay)),
        "item": row_sums(distinct(item), grad_item.add_(q, alpha=decay)),
    }
    return Gradients(found, float(torch.dot(error, error)) / count)


class FusedRatingStep(GradientStep):
    """A rating model's step with :func:`rating_gradients` and the lazy Adam."""

    kind = "fused"

    def __init__(self, model, layout: RatingLayout):
        self.model, self.layout = model, layout
        params = layout.parameters()
        self.optimizer = LazyAdam(params)
        self.distinct = DistinctRows(max(p.shape[0] for p in params.values()))

    def gradients(self, batch) -> Gradients:
        """The batch's gradients; its loss is the mean squared error."""
        return rating_gradients(
            self.layout, batch.user, batch.item, batch.rating, self.model.l2, self.distinct
        )


NO_FLAGS = np.empty(0, np.uint8)  # gather_rows' flags, unread under mask 0


class KernelRatingStep:
    """A rating model's step in the compiled kernel (:mod:`recsys_stream.core.kernels`):
    :func:`rating_gradients`' objective and the lazy Adam in one pass over the ratings and
    one over the touched rows. Its state is the lazy Adam's, as the fused step's."""

    kind = "kernel"

    def __init__(self, model, layout: RatingLayout):
        self.model, self.layout = model, layout
        self.params = layout.parameters()
        self.optimizer = LazyAdam(self.params)
        self.lanes = Lanes()
        self.distinct = DistinctRows(max(p.shape[0] for p in self.params.values()))
        self.arrays = {
            name: (param.detach().numpy(), self.optimizer.moments[name].numpy())
            for name, param in self.params.items()
        }
        self.slots = {name: np.full(p.shape[0], -1, np.int32) for name, p in self.params.items()}
        self.capacity = 0
        self.low = np.float32(layout.low if layout.low is not None else 0.0)
        self.span = np.float32(layout.high - layout.low if layout.low is not None else 0.0)
        self._reserve(0)

    def set_threads(self, threads: int) -> None:
        self.lanes.set_threads(threads)

    def _reserve(self, ratings: int) -> None:
        if ratings and ratings <= self.capacity:
            return
        self.capacity = ratings
        self.rows = {name: np.empty(ratings, np.int64) for name in self.params}
        self.starts = {
            name: np.empty((ratings, p.shape[1]), np.float32) for name, p in self.params.items()
        }
        self.grads = {
            name: np.zeros((kernels.LANES, ratings, p.shape[1] + 1), np.float32)
            for name, p in self.params.items()
        }

    def __call__(self, batch, lr: float) -> float:
        """Update the model from ``batch`` at ``lr``; the batch's mean squared error."""
        touched, loss, decay = self._accumulate(batch)
        constants = tuple(np.float32(x) for x in self.optimizer.advance(lr))
        for name, count in touched.items():

            def apply(_lane: int, begin: int, end: int, name: str = name) -> None:
                kernels.rating_apply(
                    *self.arrays[name], self.starts[name], self.grads[name], self.rows[name],
                    self.slots[name], decay, begin, end, *constants,
                )  # fmt: skip

            self.lanes.run(apply, count)
        return loss

    def gradients(self, batch) -> Gradients:
        """The batch's gradients as each table's distinct rows and their sums (for the
        data-parallel exchange), as :func:`rating_gradients` gives them (the rows in first
        touch order)."""
        touched, loss, decay = self._accumulate(batch)
        found = {}
        for name, count in touched.items():
            out = np.empty((count, self.starts[name].shape[1]), np.float32)
            rows = self.rows[name][:count].copy()
            kernels.rating_collect(
                self.starts[name], self.grads[name], rows, self.slots[name], count, decay, out
            )
            found[name] = (torch.from_numpy(rows), torch.from_numpy(out))
        return Gradients(found, loss)

    def _accumulate(self, batch) -> tuple[dict[str, int], float, np.float32]:
        """Slots, the touched rows as the step begins, every lane's gradients in its buffer.
        Returns each table's touched-row count, the mean squared error and the L2 term's
        factor."""
        user, item = batch.user.numpy(), batch.item.numpy()
        rating = batch.rating.numpy().astype(np.float32, copy=False)
        count = len(rating)
        self._reserve(count)
        slots, rows, grads, starts = self.slots, self.rows, self.grads, self.starts
        users, items = kernels.register_ratings(
            user, item, slots["user"], rows["user"], slots["item"], rows["item"]
        )
        touched = {"user": users, "item": items}
        for name, n in touched.items():
            kernels.gather_rows(self.arrays[name][0], rows[name], NO_FLAGS, 0, 0, n, starts[name])
        inverse = np.float32(1 / count)

        def lane(number: int, begin: int, end: int) -> float:
            return kernels.rating_lane(
                starts["user"], starts["item"], self.layout.biased, self.low, self.span, user,
                item, rating, inverse, slots["user"], slots["item"], grads["user"][number],
                grads["item"][number], begin, end,
            )  # fmt: skip

        loss = sum(self.lanes.run(lane, count)) / count
        return touched, loss, np.float32(2 * self.model.l2 / count)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def make_rating_step(model, config: TrainConfig) -> Step:
    """A rating model's step: its own when it has one (``bpmf``'s Gibbs sweeps), else the
    kernel when its prediction has a layout, unless told otherwise."""
    own = model.own_step(config)
    if own is not None:
        return own
    return choose_step(
        model,
        config,
        {
            "kernel": lambda: KernelRatingStep(model, model.layout()),
            "fused": lambda: FusedRatingStep(model, model.layout()),
            "autograd": lambda: TermsStep(model),
        },
    )
