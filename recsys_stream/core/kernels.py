"""The compiled kernels under the kernel steps: one pass over a batch's samples, then Adam.

A torch fused step (``pairs.fused``, ``ratings.fused``) is some fifteen
tensor operations over (batch, 1 + k, dim) arrays, each a pass over
megabytes; these kernels do the same objective and update in compiled loops
(numba: it won the measurement of issue 29, ``tests/bench/bench_kernels.py``,
and installs from a wheel with no compiler step). A step runs in three
phases over fixed-size arrays that the step object owns:

1. ``register_*`` (one thread): give each distinct row the batch touches a
   slot, in order of first touch, and mark which table it was touched in;
   then copy each slot's rows as the step begins (``gather_rows``);
2. ``*_lane`` (one call per lane, lanes run at once on threads): the
   samples of a fixed share of the batch's anchors (or ratings) add their
   loss gradients into the lane's own gradient buffer, by slot, and count
   each slot's occurrences (the L2 term's weight);
3. ``*_apply`` (one call per range of slots, at once): sum the lanes'
   buffers in lane order, add the L2 term, apply Adam to each touched row
   (SparseAdam's update, as ``core.optim.LazyAdam``), zero the buffers and
   free the slots.

The lanes and their order are fixed (LANES), whatever the number of
threads that runs them, so a step gives the same bits on one thread as on
two: runs stay reproducible and resume bit for bit, and the thread tuner
changes the speed only. Threads meet between phases by joining (they sleep,
never spin). Arithmetic is float32, as the torch steps'; a binary loss's
logarithms are taken of products of their arguments (one for many samples),
in float64. The sums run in another order than torch's, so the contract tests
check the two steps against each other within float tolerance.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import float32, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 2  # the batch's shares, each summed into its own buffer
JIT = {"cache": True, "nogil": True, "fastmath": True, "error_model": "numpy", "boundscheck": False}
BINARY, CONTINUOUS = 0, 1  # the pair losses (core.losses): BCE, squared error of the sigmoid
LEFT, RIGHT = 1, 2  # a slot's flags: touched as an anchor, as a partner or negative
# Rows ahead whose cache lines a sweep asks for before it reads them. A read
# of a random row waits some 100 ns; asked for early, several are in flight
# at once: a sweep over a batch's 13,000 rows of a 100k x 32 table took 2.0 ms
# without, 0.64 ms at 8 rows ahead (this machine, 2026-12-07).
AHEAD = 8
AHEAD_ANCHORS = 2  # anchors ahead in a lane, each with 1 + k samples' rows


def _prefetcher(write: int):
    """An intrinsic that asks for the cache line of ``array[row, column]`` (LLVM's
    prefetch: a hint, never a fault), to read it or (``write`` 1) to write it."""

    @intrinsic
    def prefetch_line(typingctx, array, row, column):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            data = context.make_array(array_type)(context, builder, args[0])
            index = [
                context.cast(builder, value, kind, types.intp)
                for value, kind in zip(args[1:], signature.args[1:])
            ]
            pointer = cgutils.get_item_pointer(context, builder, array_type, data, index)
            byte, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
                "llvm.prefetch.p0",
            )
            flags = [i32(write), i32(3), i32(1)]  # read or write, keep in all caches, data
            builder.call(function, [builder.bitcast(pointer, byte), *flags])
            return context.get_dummy_value()

        return types.void(array, row, column), codegen

    return prefetch_line


_prefetch_line, _prefetch_line_to_write = _prefetcher(0), _prefetcher(1)


@njit(**JIT)
def _prefetch(table, row):
    """Ask for every cache line of ``table[row]`` (a float32 row: 16 to a line)."""
    for column in range(0, table.shape[1], 16):
        _prefetch_line(table, row, column)


@njit(**JIT)
def _prefetch_to_write(table, row):
    """Ask for every cache line of ``table[row]``, to be written."""
    for column in range(0, table.shape[1], 16):
        _prefetch_line_to_write(table, row, column)


@njit(**JIT)
def _touch(row, slot, rows, n):
    """Give ``row`` a slot if it has none; the new count.

    Slots go in order of first touch, so one anchor's rows sit close together
    in the lanes' buffers; sorting them by row (to walk the tables forwards)
    cost a millisecond a batch and saved nothing once the rows are prefetched.
    """
    if slot[row] < 0:
        slot[row], rows[n] = n, row
        return n + 1
    return n


@njit(**JIT)
def register_pairs(anchor, others, shared, slot, rows, flags):
    """Slots for a pair batch's products, each flagged LEFT (an anchor) and/or RIGHT (a
    partner or negative); their count."""
    n = 0
    for i in range(anchor.shape[0]):
        n = _touch(anchor[i], slot, rows, n)
        for j in range(others.shape[1]):
            n = _touch(others[i, j], slot, rows, n)
    for j in range(shared.shape[0]):
        n = _touch(shared[j], slot, rows, n)
    flags[:n] = 0
    for i in range(anchor.shape[0]):
        flags[slot[anchor[i]]] |= LEFT
        for j in range(others.shape[1]):
            flags[slot[others[i, j]]] |= RIGHT
    for j in range(shared.shape[0]):
        flags[slot[shared[j]]] |= RIGHT
    return n


@njit(**JIT)
def gather_rows(table, rows, flags, mask, begin, end, out):
    """``out[s] = table[rows[s]]`` for slots ``begin:end`` whose flags meet ``mask`` (0:
    all): one forward sweep of the table, whose reads the processor overlaps, where the
    samples would read it at random."""
    for s in range(begin, end):
        if s + AHEAD < end:
            _prefetch(table, rows[s + AHEAD])
        if mask == 0 or flags[s] & mask:
            for x in range(table.shape[1]):
                out[s, x] = table[rows[s], x]


# A product of the (1 + e) factors of binary losses is logged once it passes
# this (each factor is at most 2): one logarithm for many samples' losses.
PRODUCT_LIMIT = 1e200


@njit(**JIT)
def _loss_parts(logit, target, loss):
    """One sample's loss as ``plain + log(factor)``, and its derivative in the logit.

    The binary loss's log term is returned as its argument (``1 + e``, the
    logarithm to be taken of a product of many): a logarithm a sample cost as
    much as the rest of the sample's arithmetic."""
    e = math.exp(-abs(logit))
    p = float32(1.0) / (float32(1.0) + e) if logit >= 0 else e / (float32(1.0) + e)
    if loss == BINARY:
        return max(logit, float32(0.0)) - logit * target, 1.0 + e, p - target
    error = p - target
    return error * error, 1.0, float32(2.0) * error * p * (float32(1.0) - p)


@njit(**JIT)
def _columns(d, width):
    """Where a gradient buffer row of ``width`` keeps each part, for vectors of ``d``:
    (two tables, right vector, bias, left count, right count); see ``pair_lane``."""
    two = width == 2 * d + 3
    bias_at = 2 * d if two else d
    return two, d if two else 0, bias_at, bias_at + 1, bias_at + 2 if two else bias_at + 1


@njit(**JIT)
def pair_lane(
    left, right, bias, offset, anchor, others, target, shared, shared_weight, loss, inv_total,
    slot, grad, begin, end,
):  # fmt: skip
    """Anchors ``begin:end`` of a pair batch: their samples' gradients into ``grad``.

    ``left``, ``right`` and ``bias`` hold each slot's vectors and bias (bias
    empty: none); ``offset`` is the global bias. ``grad``'s row of a slot is
    [left d | right d | bias | left count | right count]; a shared table's
    right half is its left (width d + 3). Column 0 of ``others`` is the
    positive partner (``target``), the rest negatives (target 0); each
    ``shared`` negative pairs with every anchor at ``shared_weight``, in
    loops over the negatives that the compiler vectorises (the torch step's
    matrix product), their gradients summed in the lane before they join
    ``grad``. A sample's gradient is its slope x weight x ``inv_total`` (1 /
    the batch's weighted sample count). Returns the lane's weighted loss sum
    and its global-bias gradient.
    """
    d = left.shape[1]
    _, right_at, bias_at, count_at, right_count_at = _columns(d, grad.shape[1])
    has_bias = bias.shape[0] > 0
    negatives = _shared_rows(right, bias, has_bias, shared, slot)
    shared_slots, _, _, _, shared_grad, shared_bias_grad, _ = negatives
    shared_count = shared.shape[0]
    total_loss = 0.0
    total_slope = float32(0.0)
    g_anchor = np.empty(d, np.float32)
    for i in range(begin, end):
        if i + AHEAD_ANCHORS < end:  # the rows of a later anchor's samples, asked for now
            ahead = slot[anchor[i + AHEAD_ANCHORS]]
            _prefetch(left, ahead)
            _prefetch(grad, ahead)
            for j in range(others.shape[1]):
                ahead = slot[others[i + AHEAD_ANCHORS, j]]
                _prefetch(right, ahead)
                _prefetch(grad, ahead)
        sa = slot[anchor[i]]
        g_anchor[:] = 0.0
        base = offset + (bias[sa] if has_bias else float32(0.0))
        anchor_slope = float32(0.0)
        plain, product = 0.0, 1.0
        for j in range(others.shape[1]):
            t = target[i] if j == 0 else float32(0.0)
            so = slot[others[i, j]]
            logit = base + (bias[so] if has_bias else float32(0.0))
            for x in range(d):
                logit += left[sa, x] * right[so, x]
            value, factor, slope = _loss_parts(logit, t, loss)
            plain += value
            product *= factor
            if product > PRODUCT_LIMIT:
                plain, product = plain + math.log(product), 1.0
            g = slope * inv_total
            for x in range(d):
                g_anchor[x] += g * right[so, x]
                grad[so, right_at + x] += g * left[sa, x]
            grad[so, bias_at] += g
            grad[so, right_count_at] += float32(1.0)
            anchor_slope += g
        total_loss += plain + math.log(product)
        if shared_count:
            value, slope = _shared_samples(
                left, sa, base, negatives, loss, shared_weight * inv_total, g_anchor
            )
            total_loss += shared_weight * value
            anchor_slope += slope
        for x in range(d):
            grad[sa, x] += g_anchor[x]
        grad[sa, bias_at] += anchor_slope
        grad[sa, count_at] += others.shape[1] + shared_weight * shared_count
        total_slope += anchor_slope
    for j in range(shared_count):  # the shared negatives' sums join their rows
        so = shared_slots[j]
        for x in range(d):
            grad[so, right_at + x] += shared_grad[j, x]
        grad[so, bias_at] += shared_bias_grad[j]
        grad[so, right_count_at] += shared_weight * (end - begin)
    return total_loss, total_slope


@njit(**JIT)
def _shared_rows(right, bias, has_bias, shared, slot):
    """A lane's shared negatives: their slots, rows (and transposed) and biases, and zeroed
    sums of their gradients (rows, biases); scratch for their logits and slopes."""
    count, d = shared.shape[0], right.shape[1]
    slots = np.empty(count, np.int32)
    vectors = np.empty((count, d), np.float32)
    transposed = np.empty((d, count), np.float32)
    biases = np.zeros(count, np.float32)
    for j in range(count):
        so = slot[shared[j]]
        slots[j] = so
        for x in range(d):
            vectors[j, x] = transposed[x, j] = right[so, x]
        if has_bias:
            biases[j] = bias[so]
    grad, bias_grad = np.zeros((count, d), np.float32), np.zeros(count, np.float32)
    return slots, vectors, transposed, biases, grad, bias_grad, np.empty((2, count), np.float32)


@njit(**JIT)
def _shared_samples(left, sa, base, negatives, loss, scale, g_anchor):
    """Slot ``sa``'s samples with every shared negative (target 0): their loss sum; their
    gradients into ``g_anchor`` and the negatives' sums; returns (loss, logit gradient).
    The loops run along the negatives or along a row, which the compiler vectorises."""
    _, vectors, transposed, biases, grad, bias_grad, scratch = negatives
    count, d = vectors.shape
    logits, slopes = scratch[0], scratch[1]
    for j in range(count):
        logits[j] = base + biases[j]
    for x in range(d):
        a = left[sa, x]
        for j in range(count):
            logits[j] += a * transposed[x, j]
    plain, product, total = 0.0, 1.0, float32(0.0)
    for j in range(count):
        value, factor, slope = _loss_parts(logits[j], float32(0.0), loss)
        plain += value
        product *= factor
        if product > PRODUCT_LIMIT:
            plain, product = plain + math.log(product), 1.0
        slopes[j] = slope * scale
        total += slopes[j]
    for j in range(count):
        g = slopes[j]
        bias_grad[j] += g
        for x in range(d):
            g_anchor[x] += g * vectors[j, x]
            grad[j, x] += g * left[sa, x]
    return plain + math.log(product), total


@njit(**JIT)
def _sum_lanes(grads, s, out):
    """``out`` = the lanes' rows of slot ``s`` summed in lane order; the rows zeroed."""
    for x in range(grads.shape[2]):
        total = grads[0, s, x]
        grads[0, s, x] = 0.0
        for lane in range(1, grads.shape[0]):
            total += grads[lane, s, x]
            grads[lane, s, x] = 0.0
        out[x] = total


@njit(**JIT)
def _adam_row(weights, moments, row, start, s, g, at, decay, size, b1, b2, eps):
    """SparseAdam's update of row ``row`` of a table from its values at the step's start
    (``start[s]``) and its gradient ``g[at:]`` plus ``decay`` x the start; ``moments``'
    row is [m | v]."""
    d = weights.shape[1]
    c1, c2 = float32(1.0) - b1, float32(1.0) - b2
    for x in range(d):
        gx = g[at + x] + decay * start[s, x]
        m = b1 * moments[row, x] + c1 * gx
        v = b2 * moments[row, d + x] + c2 * gx * gx
        moments[row, x] = m
        moments[row, d + x] = v
        weights[row, x] = start[s, x] - size * m / (math.sqrt(v) + eps)


@njit(**JIT)
def pair_apply(
    left, left_moments, right, right_moments, bias, bias_moments, vectors_left, vectors_right,
    biases, grads, rows, flags, slot, decay, begin, end, size, b1, b2, eps,
):  # fmt: skip
    """Slots ``begin:end``: the lanes' gradients summed (lane order), the L2 term added
    (``decay`` x count x row), Adam on each touched row; buffers zeroed, slots freed.

    ``vectors_*`` and ``biases`` hold the rows as the step began. A shared
    table (``left is right``, width d + 3) gets one update of its row from
    both sides' sum; separate tables each update the rows touched on their
    side only.
    """
    d = left.shape[1]
    two, _, bias_at, count_at, right_count_at = _columns(d, grads.shape[2])
    g = np.empty(grads.shape[2], np.float32)
    for s in range(begin, end):
        if s + AHEAD < end:
            ahead = rows[s + AHEAD]
            _prefetch_to_write(left, ahead)
            _prefetch_to_write(left_moments, ahead)
            if two:
                _prefetch_to_write(right, ahead)
                _prefetch_to_write(right_moments, ahead)
            if bias.shape[0] > 0:
                _prefetch_to_write(bias, ahead)
                _prefetch_to_write(bias_moments, ahead)
        _sum_lanes(grads, s, g)
        row = rows[s]
        if flags[s] & LEFT or not two:
            _adam_row(
                left, left_moments, row, vectors_left, s, g, 0, decay * g[count_at], size, b1,
                b2, eps,
            )  # fmt: skip
        if two and flags[s] & RIGHT:
            _adam_row(
                right, right_moments, row, vectors_right, s, g, d, decay * g[right_count_at],
                size, b1, b2, eps,
            )  # fmt: skip
        if bias.shape[0] > 0:
            _adam_row(
                bias, bias_moments, row, biases, s, g, bias_at, float32(0.0), size, b1, b2, eps
            )
        slot[row] = -1


@njit(**JIT)
def pair_collect(vectors_left, vectors_right, grads, rows, slot, n, decay, out):
    """Side information: the lanes' gradients of slots ``:n`` summed with the L2 term, as
    rows [left d | right d | bias] of ``out``, for the step to route to its tables;
    the slots freed."""
    d = vectors_left.shape[1]
    two, _, bias_at, count_at, right_count_at = _columns(d, grads.shape[2])
    g = np.empty(grads.shape[2], np.float32)
    for s in range(n):
        _sum_lanes(grads, s, g)
        for x in range(d):
            out[s, x] = g[x] + decay * g[count_at] * vectors_left[s, x]
            if two:
                out[s, d + x] = g[d + x] + decay * g[right_count_at] * vectors_right[s, x]
        out[s, out.shape[1] - 1] = g[bias_at]
        slot[rows[s]] = -1


@njit(**JIT)
def adam_rows(weights, moments, rows, grad, begin, end, size, b1, b2, eps):
    """Adam on rows ``rows[begin:end]`` of a table from their gradient rows."""
    for r in range(begin, end):
        row = rows[r]
        start = weights[row : row + 1].copy()
        _adam_row(weights, moments, row, start, 0, grad[r], 0, float32(0.0), size, b1, b2, eps)


@njit(**JIT)
def register_ratings(user, item, user_slot, user_rows, item_slot, item_rows):
    """Slots for a rating batch's users and items; their two counts."""
    users = items = 0
    for i in range(user.shape[0]):
        users = _touch(user[i], user_slot, user_rows, users)
        items = _touch(item[i], item_slot, item_rows, items)
    return users, items


@njit(**JIT)
def rating_lane(
    users, items, biased, low, span, user, item, rating, inv_count, user_slot, item_slot,
    user_grad, item_grad, begin, end,
):  # fmt: skip
    """Ratings ``begin:end``: each its squared error's gradient into the lane's buffers.

    ``users`` and ``items`` hold each slot's row as the step began. A row is
    [vector | bias] when ``biased`` (the score is the vectors' product plus
    both biases); the prediction is ``low + span x sigmoid(score)``, or the
    score itself when ``span`` is 0. A buffer's row is the table row's width
    plus its occurrence count. Returns the lane's squared-error sum.
    """
    width = users.shape[1]
    d = width - 1 if biased else width
    total = 0.0
    for i in range(begin, end):
        u, t = user_slot[user[i]], item_slot[item[i]]
        score = users[u, d] + items[t, d] if biased else float32(0.0)
        for x in range(d):
            score += users[u, x] * items[t, x]
        if span == 0:
            predicted, slope = score, float32(1.0)
        else:
            unit = float32(1.0) / (float32(1.0) + math.exp(-score))
            predicted, slope = low + span * unit, span * unit * (float32(1.0) - unit)
        error = predicted - rating[i]
        total += error * error
        g = float32(2.0) * inv_count * error * slope
        for x in range(d):
            user_grad[u, x] += g * items[t, x]
            item_grad[t, x] += g * users[u, x]
        if biased:
            user_grad[u, d] += g
            item_grad[t, d] += g
        user_grad[u, width] += float32(1.0)
        item_grad[t, width] += float32(1.0)
    return total


@njit(**JIT)
def rating_apply(
    weights, moments, starts, grads, rows, slot, decay, begin, end, size, b1, b2, eps
):  # fmt: skip
    """One table's slots ``begin:end``: lanes summed, L2 added, Adam from the rows as the
    step began (``starts``); buffers zeroed, slots freed."""
    width = weights.shape[1]
    g = np.empty(grads.shape[2], np.float32)
    for s in range(begin, end):
        if s + AHEAD < end:
            _prefetch_to_write(weights, rows[s + AHEAD])
            _prefetch_to_write(moments, rows[s + AHEAD])
        _sum_lanes(grads, s, g)
        row = rows[s]
        _adam_row(weights, moments, row, starts, s, g, 0, decay * g[width], size, b1, b2, eps)
        slot[row] = -1


@njit(**JIT)
def rating_collect(starts, grads, rows, slot, n, decay, out):
    """One table's slots ``:n`` for the data-parallel exchange: the lanes' gradients summed
    with the L2 term, as rows of ``out``; the slots freed."""
    width = starts.shape[1]
    g = np.empty(grads.shape[2], np.float32)
    for s in range(n):
        _sum_lanes(grads, s, g)
        for x in range(width):
            out[s, x] = g[x] + decay * g[width] * starts[s, x]
        slot[rows[s]] = -1
