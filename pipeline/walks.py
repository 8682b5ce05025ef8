"""Stage 4 (graph embeddings): random walks over the train pair graph.

Reads ``train.parquet`` only (val never enters: no leakage) and the
vocabulary size; writes ``walks.parquet`` (``walk``: a fixed-size list of
``length`` int32 ids; row groups of ROW_GROUP_WALKS walks, start nodes in a
seeded random order) and ``walks.json`` (walks, steps, seconds, steps/s, peak RSS).
Every product with a train pair starts ``walks_per_node`` walks, one a round,
in a new seeded order each round (DeepWalk's); a walk
arrives at a product along one of its pairs, so none ends early.

The graph is the symmetric adjacency of the train pairs in CSR form, built in
two passes over train.parquet a row group at a time and held in
memory-mapped ``.npy`` files in a work folder (``indptr`` int64, ``indices``
int32, and for weighted walks each entry's float32 pair weight and each
row's largest). Walks advance in lock-step batches of start nodes, one
vectorised step for the whole batch at a time: uniform,
``next = indices[indptr[cur] + floor(u * degree[cur])]``, or weighted
(``--weighted``): a uniform neighbour kept with probability its weight over
its row's largest, the rest drawn again (rejection sampling: exactly
weight / row sum, in max / mean rounds of the row, at most 5.4 with the
pairs stage's weights of 0.5 to 2.7). Each batch has a generator seeded by
the seed and its index, so batches walk on several threads (numpy's gathers
release the GIL) with the same result. Memory: the CSR plus a few batches.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cli import check_seed
from pipeline.contracts import (
    TRAIN,
    TRAIN_SCHEMA,
    VOCAB,
    VOCAB_SCHEMA,
    WALKS,
    WALKS_STATS,
    check_lineage,
    lineage_id,
    require,
    stamped,
    stamps,
)
from pipeline.errors import PipelineError
from pipeline.options import QuietOptions, argument, option, seed_option
from pipeline.progress import progress
from pipeline.stage import StageRun

WALK_ROWS = 131_072  # walks generated at once
WALKS_COMPRESSION = "lz4"
ROW_GROUP_WALKS = 16_384  # walks a row group: the skip-gram stream's unit of reading
WALK_THREADS = min(4, len(os.sched_getaffinity(0)))  # batches walked at once


@dataclass(frozen=True, kw_only=True)
class WalksOptions(QuietOptions):
    """The arguments of ``python -m pipeline walks``: :func:`walks`'s."""

    data_dir: str = argument(
        "dataset directory holding train.parquet and vocab.parquet", metavar="dir"
    )
    walks_per_node: int = option(10, "walks started from each product with a train pair", low=1)
    length: int = option(20, "products a walk visits, its start included", low=2)
    weighted: bool = option(
        False, "step to a neighbour with probability pair weight / row sum (default: uniform)"
    )
    seed: int = seed_option()


def walks(
    data_dir: str | os.PathLike,
    walks_per_node: int = WalksOptions.walks_per_node,
    length: int = WalksOptions.length,
    weighted: bool = WalksOptions.weighted,
    seed: int = WalksOptions.seed,
    quiet: bool = WalksOptions.quiet,
) -> dict:
    """Write ``data_dir/walks.parquet``: ``walks_per_node`` walks of ``length`` ids from
    every product with a train pair; return the stats."""
    data_dir = Path(data_dir)
    for name, value, low in (("--walks-per-node", walks_per_node, 1), ("--length", length, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PipelineError(f"{name} must be an integer of at least {low}, got {value!r}")
    seed = check_seed(seed)
    with StageRun(data_dir, WALKS_STATS) as run:
        train = require(data_dir / TRAIN, TRAIN_SCHEMA)
        size = require(data_dir / VOCAB, VOCAB_SCHEMA).metadata.num_rows
        pairs_id = check_lineage("pairs_id", data_dir / TRAIN, data_dir / VOCAB)
        split_id = stamps(train)["split_id"]
        walks_id = lineage_id("walks", split_id, walks_per_node, length, weighted, seed)
        lineage = {"pairs_id": pairs_id, "split_id": split_id, "walks_id": walks_id}
        graph = Graph.build(data_dir / TRAIN, size, run.work("walks-work"), weighted)
        # DeepWalk's order: walks_per_node rounds, each over the products in a new order
        linked = np.flatnonzero(graph.degree > 0).astype(np.int32)
        rng = np.random.default_rng(seed)
        starts = np.concatenate([rng.permutation(linked) for _ in range(walks_per_node)])
        if not len(starts):
            raise PipelineError(f"{data_dir / TRAIN}: no pairs, so no walks")
        schema = stamped(pa.schema([("walk", pa.list_(pa.int32(), length))]), "walks", **lineage)
        steps, pending = 0, None
        with (
            # Ids are near-random: a dictionary never pays, and trying one halved the speed.
            pq.ParquetWriter(
                run.output(WALKS),
                schema,
                compression=WALKS_COMPRESSION,
                use_dictionary=False,
                write_statistics=False,
            ) as writer,
            ThreadPoolExecutor(1) as writing,  # Arrow writes one batch while numpy walks the next
            progress(len(starts) * (length - 1), "steps", "walks", quiet) as bar,
        ):
            for batch in walked_batches(graph, starts, length, seed):
                steps += batch.shape[0] * (length - 1)
                column = pa.FixedSizeListArray.from_arrays(pa.array(batch.reshape(-1)), length)
                if pending:
                    pending.result()
                table = pa.table([column], schema=schema)
                pending = writing.submit(writer.write_table, table, ROW_GROUP_WALKS)
                bar.update(batch.shape[0] * (length - 1))
            if pending:
                pending.result()
        seconds = run.seconds
        stats = {
            "walks": len(starts),
            "length": length,
            "walks_per_node": walks_per_node,
            "weighted": weighted,
            "seed": seed,
            "products": size,
            "products_walked": int(np.count_nonzero(graph.degree)),
            "steps": steps,
            "seconds": round(seconds, 2),
            "steps_per_s": round(steps / max(seconds, 1e-9)),
            **lineage,
        }
        run.finish(stats)
    return run.stats


def walked_batches(
    graph: Graph, starts: np.ndarray, length: int, seed: int
) -> Iterator[np.ndarray]:
    """The walks from each WALK_ROWS of ``starts`` in turn, WALK_THREADS batches at a time."""
    with ThreadPoolExecutor(WALK_THREADS) as pool:
        pending: deque = deque()
        for index, first in enumerate(range(0, len(starts), WALK_ROWS)):
            rng = np.random.default_rng([seed, index])
            pending.append(pool.submit(graph.walk, starts[first : first + WALK_ROWS], length, rng))
            if len(pending) > WALK_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Graph:
    """The symmetric adjacency of the train pairs, in CSR form on memory-mapped arrays."""

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        weights: np.ndarray | None = None,
        row_max: np.ndarray | None = None,
    ):
        self.indptr, self.indices, self.weights, self.row_max = indptr, indices, weights, row_max
        self.degree = np.diff(indptr)

    @classmethod
    def build(cls, train: Path, size: int, folder: Path, weighted: bool) -> Graph:
        """Two passes over ``train`` a row group at a time: degrees, then neighbours.

        A product's neighbours stand in the order its pairs come in the file;
        ``weights`` (weighted only) holds each entry's pair weight, and
        ``row_max`` each product's largest. Both passes split the row groups
        into WALK_THREADS runs read side by side; each run's share of a row
        starts where the runs before it end, so the result is the same.
        """
        groups = pq.ParquetFile(train).num_row_groups
        runs = np.array_split(np.arange(groups), min(WALK_THREADS, max(groups, 1)))
        with ThreadPoolExecutor(len(runs)) as pool:
            shares = list(pool.map(lambda run: _degrees(train, run, size), runs))
            degree = np.sum(shares, axis=0)
            indptr = np.lib.format.open_memmap(folder / "indptr.npy", "w+", np.int64, (size + 1,))
            indptr[0] = 0
            np.cumsum(degree, out=indptr[1:])
            entries = int(indptr[-1])
            indices = np.lib.format.open_memmap(folder / "indices.npy", "w+", np.int32, (entries,))
            weights = row_max = None
            if weighted:
                weights = np.lib.format.open_memmap(
                    folder / "weights.npy", "w+", np.float32, (entries,)
                )
            filled = indptr[:-1] + np.cumsum(
                [np.zeros_like(degree), *shares[:-1]], axis=0
            )  # each run's first slots
            fills = [
                pool.submit(_fill, train, run, start, indices, weights)
                for run, start in zip(runs, filled)
            ]
            for fill in fills:
                fill.result()
        if weighted:
            row_max = np.zeros(size, dtype=np.float32)
            linked = degree > 0
            row_max[linked] = np.maximum.reduceat(weights, indptr[:-1][linked])
        return cls(indptr, indices, weights, row_max)

    def walk(self, starts: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        """(len(starts), length) walks from ``starts``, products with neighbours.

        A walk arrives at a product along one of its pairs, so every product
        it reaches has a neighbour and no walk ends early.
        """
        out = np.empty((length, len(starts)), dtype=np.int32)  # a position a row: contiguous
        out[0] = starts
        current = starts.astype(np.int64)
        for position in range(1, length):
            if self.weights is None:
                picked = self._uniform(current, rng)
            else:
                picked = self._weighted(current, rng)
            np.take(self.indices, picked, out=out[position], mode="clip")
            current = out[position].astype(np.int64)
        return np.ascontiguousarray(out.T)  # here, on the walking thread

    def _uniform(self, current: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each walker's next entry: one of its row's, uniformly.

        The gathers are ``np.take(mode="clip")``, which skips the bounds check
        (about 15% faster here): the walkers' products come from the CSR itself.
        """
        first = np.take(self.indptr, current, mode="clip")
        degree = np.take(self.indptr, current + 1, mode="clip") - first
        return first + (rng.random(len(current)) * degree).astype(np.int64)

    def _weighted(self, current: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each walker's next entry, with probability its weight over its row's sum.

        A uniform entry of the row is kept with probability weight / row
        max; the walkers whose draw was refused draw again.
        """
        picked = np.empty(len(current), dtype=np.int64)
        waiting = np.arange(len(current))
        while len(waiting):
            node = current[waiting]
            entry = self._uniform(node, rng)
            kept = rng.random(len(node)) * self.row_max[node] < self.weights[entry]
            picked[waiting[kept]] = entry[kept]
            waiting = waiting[~kept]
        return picked


def _degrees(train: Path, groups: np.ndarray, size: int) -> np.ndarray:
    """Each product's pairs in ``groups`` of ``train``."""
    parquet = pq.ParquetFile(train)  # one a thread
    degree = np.zeros(size, dtype=np.int64)
    for group in groups:
        ends = parquet.read_row_group(int(group), columns=["src", "dst"])
        for name in ("src", "dst"):
            degree += np.bincount(ends.column(name).to_numpy(), minlength=size)
    return degree


def _fill(
    train: Path,
    groups: np.ndarray,
    filled: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray | None,
) -> None:
    """Write the neighbours (and weights) of the pairs in ``groups``; ``filled``
    holds where each product's next neighbour goes."""
    parquet = pq.ParquetFile(train)
    size = len(filled)
    columns = ["src", "dst"] if weights is None else ["src", "dst", "weight"]
    for group in groups:
        table = parquet.read_row_group(int(group), columns=columns)
        src, dst = (table.column(name).to_numpy() for name in ("src", "dst"))
        node = np.concatenate([src, dst])
        other = np.concatenate([dst, src])
        order = np.argsort(node, kind="stable")
        node, other = node[order], other[order]
        counts = np.bincount(node, minlength=size)
        first_of_node = np.cumsum(counts) - counts  # position of a node's run in ``node``
        slot = filled[node] + np.arange(len(node)) - first_of_node[node]
        indices[slot] = other
        if weights is not None:
            weight = table.column("weight").to_numpy()
            if not (np.isfinite(weight) & (weight > 0)).all():
                raise PipelineError("train.parquet: pair weights must be positive and finite")
            weights[slot] = np.concatenate([weight, weight])[order]
        filled += counts
