"""The fused step's parts: closed-form gradients of a pair layout and a lazy Adam.

Autograd over ``nn.Embedding`` with SparseAdam runs under 1M samples/s on two
cores, and an update of the whole table (the reference's L2 and Adam) costs
more as the vocabulary grows. Here a step costs O(batch x dim) whatever the
vocabulary size. A batch is ``anchor`` (B,) with ``others`` (B, 1 + k): the
positive partner then k negatives of each anchor, so each anchor row is read
once. The score is a :class:`~recsys_stream.pairs.models.PairLayout`'s:
<left[a], right[b]> + bias[a] + bias[b] + global bias. The update is
SparseAdam's, row for row; the tests check the gradients against autograd on
every registered model that has a layout, and the update against
``torch.optim.SparseAdam`` and ``torch.optim.Adam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_stream.core import tables
from recsys_stream.core.losses import Loss
from recsys_stream.pairs.models import PairLayout, SideEmbedding


class DistinctRows:
    """The distinct ids of a batch, sorted, and each sample's slot among them.

    A scatter into a scratch array of one slot per product finds them, and
    only the distinct ids are sorted: about three times faster than
    ``np.unique`` at a batch's 14,000 ids. Sorted rows matter to the
    optimizer, whose gathers and scatters then walk the tables in order.
    One instance serves any number of id sets, one after another.
    """

    def __init__(self, size: int):
        self.slot = np.empty(size, dtype=np.int64)  # scratch: never read before written

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.numpy()
        positions = np.arange(len(ids))
        self.slot[ids] = positions  # one occurrence of each id wins the slot
        rows = np.sort(ids[self.slot[ids] == positions])
        self.slot[rows] = np.arange(len(rows))
        return torch.from_numpy(rows), torch.from_numpy(self.slot[ids])


@dataclass
class Gradients:
    """One batch's gradients: per parameter name, its distinct rows and their sums."""

    rows: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name: (rows int64, (rows, width))
    loss: float  # the batch's mean loss, without the L2 term


@torch.no_grad()
def gradients(
    layout: PairLayout,
    anchor: torch.Tensor,
    others: torch.Tensor,
    target: torch.Tensor,
    loss: Loss,
    l2: float,
    distinct: DistinctRows,
    shared: torch.Tensor | None = None,
    shared_weight: float = 0.0,
) -> Gradients:
    """Gradients of :func:`~recsys_stream.core.losses.objective` (mean loss + its L2 term).

    Sample (i, j) pairs ``anchor[i]`` with ``others[i, j]``; ``shared``
    negatives (N,) pair with every anchor, at ``shared_weight`` each, scored
    as one (B, d) x (d, N) product, so they cost N row reads, not B x N.
    Products and sums run along one row at a time, so the result is the same
    bits whatever the number of threads. Parameter names: ``left`` (with the
    right side's rows too when the table is shared), ``right``, ``bias``,
    ``global_bias``.
    """
    bias = layout.bias.weight[:, 0] if layout.bias is not None else None
    flat = others.reshape(-1)
    ea = _vectors(layout.left, anchor)  # (B, d)
    eo = _vectors(layout.right, flat).view(*others.shape, -1)  # (B, K, d)
    logit = (eo * ea[:, None, :]).sum(-1)
    anchor_bias = bias.index_select(0, anchor)[:, None] if bias is not None else None
    if bias is not None:
        logit += anchor_bias
        logit += bias.index_select(0, flat).view(others.shape)
    if layout.global_bias is not None:
        logit += layout.global_bias
    total = logit.numel() + (shared_weight * len(anchor) * len(shared) if shared is not None else 0)
    value, dlogit = loss.value_and_grad(logit, target)
    decay = 2 * l2 / total
    if shared is not None:  # rescale the row samples' mean to the weighted mean over all
        value, dlogit = value * logit.numel() / total, dlogit * (logit.numel() / total)
    grad_anchor = (dlogit[..., None] * eo).sum(1).add_(ea, alpha=decay * others.shape[1])
    grad_others = (dlogit[..., None] * ea[:, None, :]).add_(eo, alpha=decay).view(len(flat), -1)
    per_sample = [dlogit.sum(1), dlogit.reshape(-1)]  # the bias gradients of anchors and others
    global_grad = dlogit.sum()
    ids, grads = [flat], [grad_others]
    if shared is not None:
        es = _vectors(layout.right, shared)  # (N, d)
        share = ea @ es.T  # (B, N)
        if bias is not None:
            share += anchor_bias
            share += bias.index_select(0, shared)[None, :]
        if layout.global_bias is not None:
            share += layout.global_bias
        part, dshare = loss.value_and_grad(share, torch.zeros_like(share))
        weight = shared_weight * share.numel() / total
        value, dshare = value + part * weight, dshare.mul_(weight)
        grad_anchor += (dshare @ es).add_(ea, alpha=decay * len(shared) * shared_weight)
        ids.append(shared)
        grads.append((dshare.T @ ea).add_(es, alpha=decay * len(anchor) * shared_weight))
        per_sample[0] = per_sample[0] + dshare.sum(1)
        per_sample.append(dshare.sum(0))
        # per anchor first: one sum over all B x N splits across threads, and its bits with them
        global_grad = per_sample[0].sum()
    right_ids = torch.cat(ids) if len(ids) > 1 else flat
    right_grads = torch.cat(grads) if len(grads) > 1 else grad_others
    right_name = "left" if layout.right is layout.left else "right"
    parts: dict[str, tuple[list, list]] = {}
    for name, table, rows, grad in (
        ("left", layout.left, anchor, grad_anchor),
        (right_name, layout.right, right_ids, right_grads),
    ):
        for source, source_rows, share in _sources(table, name, rows):
            found_rows, found_grads = parts.setdefault(source, ([], []))
            found_rows.append(source_rows)
            found_grads.append(grad * share if share != 1 else grad)
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    distinct_of = {}  # (ids of the row tensors): DistinctRows' answer, reused by the bias
    for source, (source_rows, source_grads) in parts.items():
        key = tuple(map(id, source_rows))
        distinct_of[key] = distinct(_joined(source_rows))
        found[source] = row_sums(distinct_of[key], _joined(source_grads))
    if bias is not None:
        key = (id(anchor), id(right_ids))
        touched = distinct_of.get(key) or distinct(torch.cat([anchor, right_ids]))
        found["bias"] = row_sums(touched, torch.cat(per_sample)[:, None])
    if layout.global_bias is not None:
        found["global_bias"] = (torch.zeros(1, dtype=torch.long), global_grad.reshape(1, 1))
    return Gradients(found, value)


def _vectors(table: nn.Embedding | SideEmbedding, ids: torch.Tensor) -> torch.Tensor:
    """The table's vectors of ``ids``: its rows, or with side information their means."""
    return table.weight.index_select(0, ids) if isinstance(table, nn.Embedding) else table(ids)


def _sources(
    table: nn.Embedding | SideEmbedding, name: str, ids: torch.Tensor
) -> list[tuple[str, torch.Tensor, float]]:
    """The parameter rows the vectors of ``ids`` average, as (name, rows, share):
    the table's own, or a side table's own and its features' (``name.feature``)."""
    if isinstance(table, nn.Embedding):
        return [(name, ids, 1.0)]
    share = 1 / (1 + len(table.features))
    codes = [(f"{name}.{f}", table.codes(f)[ids].long(), share) for f in table.features]
    return [(name, ids, share), *codes]


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors) if len(tensors) > 1 else tensors[0]


def row_sums(
    distinct: tuple[torch.Tensor, torch.Tensor], values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct rows, each row's sum of ``values``) from DistinctRows' answer."""
    rows, where = distinct
    return rows, values.new_zeros(len(rows), values.shape[1]).index_add_(0, where, values)


def layout_parameters(layout: PairLayout) -> dict[str, torch.Tensor]:
    """The layout's parameters as 2-d tables, by the names :func:`gradients` uses."""
    found = {}
    sides = [("left", layout.left)]
    if layout.right is not layout.left:
        sides.append(("right", layout.right))
    for name, table in sides:
        if isinstance(table, nn.Embedding):
            found[name] = table.weight
        else:
            found[name] = table.own.weight
            found.update({f"{name}.{f}": t.weight for f, t in table.features.items()})
    if layout.bias is not None:
        found["bias"] = layout.bias.weight
    if layout.global_bias is not None:
        found["global_bias"] = layout.global_bias.view(1, 1)
    return found


class OptimizerState:
    """A step whose state (for checkpoints) is its ``optimizer``'s."""

    optimizer: LazyAdam

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class GradientStep(OptimizerState):
    """A step in two halves: its batch's gradients in closed form, then the lazy Adam
    update (apart, so that data-parallel ranks can sum the gradients in between)."""

    def gradients(self, batch) -> Gradients:
        raise NotImplementedError

    def __call__(self, batch, lr: float) -> float:
        """Update the model from ``batch`` at ``lr``; the batch's mean loss."""
        grads = self.gradients(batch)
        self.optimizer.step(grads.rows, lr)
        return grads.loss


class LazyAdam:
    """Adam on the touched rows only (torch.optim.SparseAdam's update), for 2-d tables.

    Rows a batch does not touch keep their moments; the step count, and so the
    bias correction, is global, as in SparseAdam. A step is bound by the
    latency of its random rows, so each table's two moments share a row of
    one (rows, 2 x width) table, read in one gather and written back with
    numpy's row assignment (torch's ``index_copy_`` and ``index_add_`` scatter
    element by element and ran at a third of its speed here).
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params, self.betas, self.eps = params, betas, eps
        self.moments = {
            name: tables.zeros(p.shape[0], 2 * p.shape[1]) for name, p in params.items()
        }
        self.steps = 0

    @torch.no_grad()
    def step(self, rows: dict[str, tuple[torch.Tensor, torch.Tensor]], lr: float) -> None:
        """Apply one batch's gradients (name: distinct rows and their gradients) at ``lr``."""
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = lr * (1 - beta2**self.steps) ** 0.5 / (1 - beta1**self.steps)
        for name, (index, grad) in rows.items():
            param, moments = self.params[name], self.moments[name]
            width = param.shape[1]
            both = moments.index_select(0, index)
            m, v = both[:, :width], both[:, width:]
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            # sqrt of a strided view ran ten times slower; never sqrt_ it: v may be both's own view
            denominator = v.contiguous().sqrt().add_(self.eps)
            values = param.index_select(0, index).addcdiv_(m, denominator, value=-step_size)
            where = index.numpy()
            moments.numpy()[where] = both.numpy()
            param.detach().numpy()[where] = values.numpy()

    def state_dict(self) -> dict:
        return {"moments": self.moments, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        for name, saved in state["moments"].items():
            self.moments[name].copy_(saved)
        self.steps = state["steps"]
