"""Exact top-k by inner product plus a candidate's bias, in blocks of bounded memory.

For each query row q the k candidates c with the largest ``q . c + bias[c]``,
best first, ties broken by the smaller candidate id, never a candidate listed
among the query's exclusions (itself, for ``similar``; the items a user rated,
for ``recommend``).

A block of queries meets the candidates one tile at a time. torch's matrix
product scores a tile (one thread, into a buffer reused for every tile,
small enough to stay in cache; the bias rides along as a column: ``[q, 1] .
[c, bias]``), torch takes the maximum of each run of 64 scores, and a
compiled loop looks at a run's scores only when that maximum reaches the
row's k-th best so far, inserting a winner into the row's sorted top k.
(numba's float maximum does not vectorise: 0.5-0.9 ns a score against
torch's 0.12, measured.) Most tiles are never scored at all: the tiles hold
candidates of like norm and bias, each with a bound on the score any query
can reach in it (:class:`Ordered`), and a block skips a tile when every one
of its queries already holds k better. A score that ties the k-th best enters
only with a smaller id, so the order the candidates come in does not change
the answer.

Query blocks are shared between two threads of this process (the product
and the loop release the GIL), each on its own buffers; neither spins while
it waits, so a busy machine slows the work without stalling it. Each block
is scored by the same calls whatever thread runs it, so the answer does not
depend on the thread count. Memory: a copy of the candidates in tile order,
and a tile and a top-k a thread (about 6 MB), whatever the vocabulary: never
the V x V matrix.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import torch

QUERY_BLOCK = 512  # queries a thread holds at a time
TILE = 2048  # candidates scored at most at a time: a 4 MB tile for a full block (the
# fastest of 128-2048 queries by 1024-16384 candidates measured here, 2026-12-07)
RUN = 64  # scores whose maximum is checked before any one is looked at
NORM_BANDS = 32  # bands of candidate norm the tiles are cut in
ORDER_FROM = 1024  # queries from which the tiles are ordered and bounded (2.6 s at 2.17M
# candidates: a single lookup takes 0.1 s without it)
REACH_MARGIN = 1e-4  # widens a tile's bound past float32's rounding of the scores
THREADS = 2


@dataclass(frozen=True)
class Exclusions:
    """For each query, the candidate ids it must not get, as sorted slices of ``ids``:
    query i's are ``ids[offsets[i]:offsets[i + 1]]``."""

    offsets: np.ndarray  # int64, queries + 1
    ids: np.ndarray  # int64, each query's slice ascending

    @classmethod
    def own(cls, query_ids: np.ndarray) -> Exclusions:
        """Each query excludes itself (the candidate with its own id)."""
        return cls(np.arange(len(query_ids) + 1, dtype=np.int64), query_ids.astype(np.int64))

    @classmethod
    def none(cls, queries: int) -> Exclusions:
        return cls(np.zeros(queries + 1, np.int64), np.zeros(0, np.int64))

    def take(self, positions: np.ndarray) -> Exclusions:
        """The exclusions of the queries at ``positions``, in that order."""
        counts = np.diff(self.offsets)[positions]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        shift = np.repeat(self.offsets[positions] - offsets[:-1], counts)
        return Exclusions(offsets, self.ids[np.arange(offsets[-1]) + shift])

    def block(self, start: int, stop: int) -> Exclusions:
        first, last = self.offsets[start], self.offsets[stop]
        return Exclusions(self.offsets[start : stop + 1] - first, self.ids[first:last])


def top_k(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
    exclusions: Exclusions | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores), each (queries, k): the k best candidates of every query, best first.

    A query with fewer than k candidates left after its exclusions pads its
    row with id -1 and score -inf.
    """
    ids = np.empty((len(queries), k), np.int64)
    scores = np.empty((len(queries), k), np.float32)
    for start, block_ids, block_scores in blocks(queries, candidates, k, bias, exclusions, threads):
        ids[start : start + len(block_ids)] = block_ids
        scores[start : start + len(block_ids)] = block_scores
    return ids, scores


def blocks(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
    exclusions: Exclusions | None = None,
    threads: int | None = None,
    query_block: int | None = None,
    tile_share: float = 1.0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first query, ids, scores) of each block of queries, in query order, while later
    blocks are being worked on: a writer can take each as it comes.

    ``tile_share`` below 1 makes the answer approximate: only that share of the
    tiles, those of the best bounds, is ever scored (``--method tiles``).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    norms = queries.detach().double().norm(dim=1).numpy()
    if len(queries) >= ORDER_FROM or tile_share < 1:
        ordered = Ordered.of(candidates, bias, float(np.median(norms))).first(tile_share)
    else:  # sorting would cost more than it saves
        ordered = Ordered.in_id_order(candidates, bias)
    # the bias is a column of the ordered rows, or added to each tile's scores
    queries = query_rows(queries, biased=bias is not None and ordered.bias is None)
    exclusions = exclusions or Exclusions.none(len(queries))
    query_block = query_block or QUERY_BLOCK
    starts = range(0, len(queries), query_block)

    def work(start: int) -> tuple[int, np.ndarray, np.ndarray]:
        stop = min(start + query_block, len(queries))
        block_ids, block_scores = _block(
            queries[start:stop], norms[start:stop], ordered, k, exclusions.block(start, stop)
        )
        return start, block_ids, block_scores

    threads = max(1, min(threads or THREADS, len(starts), os.cpu_count() or 1))
    with one_torch_thread():
        if threads == 1:
            yield from map(work, starts)
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="top-k") as pool:
            pending = []
            for start in starts:  # keep a few blocks ahead of the one handed back
                pending.append(pool.submit(work, start))
                if len(pending) > 2 * threads:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()


def augmented(
    queries: torch.Tensor, candidates: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and candidates whose inner product is ``q . c + bias[c]``: a column of
    ones beside the queries, the bias beside the candidates (float32, contiguous)."""
    return query_rows(queries, bias is not None), candidate_rows(candidates, bias)


def query_rows(queries: torch.Tensor, biased: bool) -> torch.Tensor:
    """The queries as float32 rows, with a column of ones when the candidates carry a
    bias column."""
    queries = queries.detach().to(torch.float32)
    return torch.cat([queries, torch.ones(len(queries), 1)], 1) if biased else queries.contiguous()


def candidate_rows(candidates: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The candidates as float32 rows, with their bias as a last column when given."""
    candidates = candidates.detach().to(torch.float32)
    if bias is None:
        return candidates.contiguous()
    return torch.cat([candidates, bias.detach().to(torch.float32)[:, None]], 1)


@dataclass(frozen=True)
class Ordered:
    """The candidates in tiles of like norm and bias, each tile with a bound on its scores.

    A query q scores at most ``|q| * norm + bias`` against a tile, where norm
    is the tile's largest vector norm and bias its largest bias
    (Cauchy-Schwarz). A block of queries skips a tile when every query's k-th
    best so far beats that bound. For the bound to be tight a tile must hold
    candidates alike in both: the candidates are cut into NORM_BANDS bands of
    norm (by quantile), and each band, sorted by bias, into tiles. Tiles are
    met best bound first, so the k-th bests rise early. On a trained run of
    2.17M products (mf_bias, dim 32), measured on 1,000 queries' final k-th
    bests: a query needs 20% of such tiles, a block of 64 queries 33% (91%
    of tiles cut in id order, or by norm alone).
    """

    rows: torch.Tensor  # (V, d [+1]) candidates tile by tile, with the bias column unless
    bias: torch.Tensor | None  # the bias, added to a tile's scores after the product
    ids: np.ndarray  # each row's candidate id
    starts: np.ndarray  # (tiles + 1,) each tile's first row, and V
    reach: np.ndarray  # (tiles, 2): each tile's largest norm and largest bias

    @classmethod
    def of(cls, candidates: torch.Tensor, bias: torch.Tensor | None, scale: float) -> Ordered:
        """``scale``: a typical query norm, to put the tiles in the order of their bound."""
        norms = candidates.detach().double().norm(dim=1).numpy()
        biases = np.zeros(len(norms)) if bias is None else bias.detach().double().numpy()
        cuts = np.quantile(norms, np.linspace(0, 1, NORM_BANDS + 1)[1:-1]) if len(norms) else []
        band = np.searchsorted(cuts, norms)
        order = np.lexsort((np.arange(len(norms)), -biases, band))
        counts = np.bincount(band, minlength=NORM_BANDS)
        edges = np.concatenate([[0], np.cumsum(counts)])
        starts = np.unique(
            np.concatenate([np.arange(a, b, TILE) for a, b in itertools.pairwise(edges)] + [[]])
        ).astype(np.int64)
        reach = np.zeros((len(starts), 2))
        if len(starts):
            reach[:, 0] = np.maximum.reduceat(norms[order], starts)
            reach[:, 1] = np.maximum.reduceat(biases[order], starts)
        first = np.argsort(-(reach[:, 0] * scale + reach[:, 1]), kind="stable")
        sizes = np.diff(np.append(starts, len(order)))
        rows = np.concatenate([order[starts[t] : starts[t] + sizes[t]] for t in first] + [[]])
        rows = rows.astype(np.int64)
        tile_starts = np.concatenate([[0], np.cumsum(sizes[first])]).astype(np.int64)
        ordered_bias = None if bias is None else bias[rows]
        return cls(
            candidate_rows(candidates[rows], ordered_bias), None, rows, tile_starts, reach[first]
        )

    def first(self, share: float) -> Ordered:
        """The tiles of the best bounds only, ``share`` of them (at least one)."""
        if share >= 1:
            return self
        tiles = max(1, int(np.ceil(share * len(self.reach))))
        starts, reach = self.starts[: tiles + 1], self.reach[:tiles]
        return Ordered(self.rows, self.bias, self.ids, starts, reach)

    @classmethod
    def in_id_order(cls, candidates: torch.Tensor, bias: torch.Tensor | None) -> Ordered:
        """The candidates as they are, in id order, every tile in reach: for a few
        queries, with no copy of the candidates."""
        rows = candidates.detach().to(torch.float32).contiguous()
        if bias is not None:
            bias = bias.detach().to(torch.float32)
        starts = np.append(np.arange(0, len(rows), TILE), len(rows)).astype(np.int64)
        reach = np.full((len(starts) - 1, 2), np.inf)
        return cls(rows, bias, np.arange(len(rows), dtype=np.int64), starts, reach)


def _block(
    queries: torch.Tensor, norms: np.ndarray, ordered: Ordered, k: int, exclusions: Exclusions
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k of one block of queries against every candidate, tile by tile."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    tile = torch.empty(len(queries), TILE)
    peaks = torch.empty(len(queries), TILE // RUN)
    with torch.inference_mode():
        for number, (largest_norm, largest_bias) in enumerate(ordered.reach):
            reach = norms * largest_norm * (1 + REACH_MARGIN) + largest_bias + REACH_MARGIN
            if (reach < best_scores[:, k - 1]).all():
                continue  # no query's k-th best can be beaten here
            start, stop = ordered.starts[number], ordered.starts[number + 1]
            width = int(stop - start)
            runs, whole = -(-width // RUN), width // RUN
            scored, peak = tile[:, :width], peaks[:, :runs]
            torch.mm(queries, ordered.rows[start:stop].T, out=scored)
            if ordered.bias is not None:
                scored += ordered.bias[start:stop]
            torch.amax(
                tile[:, : whole * RUN].view(len(queries), whole, RUN), -1, out=peak[:, :whole]
            )
            if runs > whole:  # a short last run
                peak[:, whole] = scored[:, whole * RUN :].amax(-1)
            _fold(
                scored.numpy(),
                peak.numpy(),
                ordered.ids[start:stop],
                best_scores,
                best_ids,
                exclusions.offsets,
                exclusions.ids,
            )
    return best_ids, best_scores


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads at one while blocks are scored: the parallelism is the
    blocks', and torch's team would spin against the other block's thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@numba.njit(nogil=True, cache=True)
def _fold(tile, peaks, ids, best_scores, best_ids, offsets, excluded):  # pragma: no cover
    """Fold one tile of scores (queries x the candidates ``ids``) into each row's top-k,
    looking only into the runs whose peak reaches the row's k-th best. A score equal
    to the k-th best enters when its id is smaller: the order candidates come in
    does not matter."""
    rows, width = tile.shape
    k = best_scores.shape[1]
    for row in range(rows):
        floor = best_scores[row, k - 1]
        skip_from, skip_to = offsets[row], offsets[row + 1]
        for run in range(peaks.shape[1]):
            if peaks[row, run] < floor:
                continue
            for j in range(run * RUN, min(run * RUN + RUN, width)):
                value = tile[row, j]
                if value < floor:
                    continue
                candidate = ids[j]
                if value == floor and not _before(candidate, best_ids[row, k - 1]):
                    continue
                if skip_to > skip_from and _listed(excluded, skip_from, skip_to, candidate):
                    continue
                place = k - 1  # after every better score, and every equal one of a smaller id
                while place > 0 and (
                    best_scores[row, place - 1] < value
                    or (
                        best_scores[row, place - 1] == value
                        and _before(candidate, best_ids[row, place - 1])
                    )
                ):
                    best_scores[row, place] = best_scores[row, place - 1]
                    best_ids[row, place] = best_ids[row, place - 1]
                    place -= 1
                best_scores[row, place] = value
                best_ids[row, place] = candidate
                floor = best_scores[row, k - 1]


@numba.njit(nogil=True, cache=True)
def _before(candidate, held):  # pragma: no cover
    """Whether ``candidate`` ranks before the equal-scored ``held`` (-1: an empty place)."""
    return held < 0 or candidate < held


@numba.njit(nogil=True, cache=True)
def listed(found, offsets, excluded):  # pragma: no cover
    """(rows, n) bools: whether found[row, j] is among the row's exclusions."""
    out = np.zeros(found.shape, np.bool_)
    for row in range(found.shape[0]):
        start, stop = offsets[row], offsets[row + 1]
        if stop > start:
            for j in range(found.shape[1]):
                out[row, j] = _listed(excluded, start, stop, found[row, j])
    return out


@numba.njit(nogil=True, cache=True)
def _listed(ids, start, stop, value):  # pragma: no cover
    """Whether ``value`` is in the ascending ``ids[start:stop]``."""
    at = start + np.searchsorted(ids[start:stop], value)
    return at < stop and ids[at] == value
