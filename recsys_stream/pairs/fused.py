"""The pair models' fused step: closed-form gradients of a pair layout.

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

import torch
from torch import nn

from recsys_stream.core.losses import Loss
from recsys_stream.core.optim import DistinctRows, Gradients, row_sums
from recsys_stream.pairs.models import PairLayout, SideEmbedding

# The inner dimension of a matrix product, at most, that the product is computed
# along in one piece. Over a longer one the BLAS splits the sum between threads
# (seen with AVX-512: the (N, B) x (B, d) product of the shared negatives'
# gradients, B = 2,048, gave other bits on two threads than on one); pieces of
# this length, summed in order, give the same bits on any count.
PRODUCT_PIECE = 256


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with its inner dimension in PRODUCT_PIECE pieces, summed in order."""
    inner = a.shape[1]
    if inner <= PRODUCT_PIECE:
        return a @ b
    total = a[:, :PRODUCT_PIECE] @ b[:PRODUCT_PIECE]
    for start in range(PRODUCT_PIECE, inner, PRODUCT_PIECE):
        total += a[:, start : start + PRODUCT_PIECE] @ b[start : start + PRODUCT_PIECE]
    return total


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
        share = _product(ea, es.T)  # (B, N)
        if bias is not None:
            share += anchor_bias
            share += bias.index_select(0, shared)[None, :]
        if layout.global_bias is not None:
            share += layout.global_bias
        part, dshare = loss.value_and_grad(share, torch.zeros_like(share))
        weight = shared_weight * share.numel() / total
        value, dshare = value + part * weight, dshare.mul_(weight)
        grad_anchor += _product(dshare, es).add_(ea, alpha=decay * len(shared) * shared_weight)
        ids.append(shared)
        grads.append(_product(dshare.T, ea).add_(es, alpha=decay * len(anchor) * shared_weight))
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
        spread(parts, table, name, rows, grad)
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


def spread(
    parts: dict[str, tuple[list, list]],
    table: nn.Embedding | SideEmbedding,
    name: str,
    ids: torch.Tensor,
    grad: torch.Tensor,
) -> None:
    """Add to ``parts`` (parameter name: its rows, their gradient rows) the rows the
    vectors of ``ids`` average with their shares of ``grad``, the vectors' gradients:
    the table's own rows (``name``), or a side table's own and its features'
    (``name.feature``, by ``SideEmbedding.parts``; an unknown code's row gets a share
    of 0, as the vector does not read it)."""
    found = [(name, ids, None)]
    if not isinstance(table, nn.Embedding):
        features, share = table.parts(ids)
        found = [(name, ids, share)]
        found += [(f"{name}.{f}", codes, feature_share) for f, codes, feature_share in features]
    for source, rows, share in found:
        source_rows, source_grads = parts.setdefault(source, ([], []))
        source_rows.append(rows)
        source_grads.append(grad if share is None else grad * share)


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors) if len(tensors) > 1 else tensors[0]


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
