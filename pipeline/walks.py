"""Stage 4 (graph embeddings): random walks over the train pair graph.

Reads ``train.parquet`` only (val never enters: no leakage) and the
vocabulary size; writes ``walks.parquet`` (``walk``: a fixed-size list of
``length`` int32 ids; row groups of ROW_GROUP_WALKS walks, start nodes in a
seeded random order) and ``walks.json`` (walks, steps, seconds, steps/s, peak RSS).
Every product with a train pair starts ``walks_per_node`` walks; a walk
arrives at a product along one of its pairs, so none ends early.

The graph is the symmetric adjacency of the train pairs in CSR form, built in
two passes over train.parquet a row group at a time and held in
memory-mapped ``.npy`` files in a work folder (``indptr`` int64, ``indices``
int32, and for weighted walks a float64 running sum of the pair weights).
Walks advance in lock-step batches of start nodes, one vectorised step for
the whole batch at a time: uniform,
``next = indices[indptr[cur] + floor(u * degree[cur])]``, or weighted
(``--weighted``): a neighbour with probability weight / row sum, found by one
``searchsorted`` in the running sum. Memory: the CSR plus one batch.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
from pipeline.files import atomic_output, clear_stale_temporaries, temporary_folder, write_json
from pipeline.memory import peak_rss_mb
from pipeline.progress import progress

DEFAULT_WALKS_PER_NODE = 10
DEFAULT_LENGTH = 20
DEFAULT_SEED = 42
WALK_ROWS = 131_072  # walks generated at once
ROW_GROUP_WALKS = 16_384  # walks a row group: the skip-gram stream's unit of reading


def walks(
    data_dir: str | os.PathLike,
    walks_per_node: int = DEFAULT_WALKS_PER_NODE,
    length: int = DEFAULT_LENGTH,
    weighted: bool = False,
    seed: int = DEFAULT_SEED,
    quiet: bool = False,
) -> dict:
    """Write ``data_dir/walks.parquet``: ``walks_per_node`` walks of ``length`` ids from
    every product with a train pair; return the stats."""
    data_dir = Path(data_dir)
    for name, value, low in (("--walks-per-node", walks_per_node, 1), ("--length", length, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PipelineError(f"{name} must be an integer of at least {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PipelineError(f"--seed must be a non-negative integer, got {seed!r}")
    clear_stale_temporaries(data_dir)
    train = require(data_dir / TRAIN, TRAIN_SCHEMA)
    size = require(data_dir / VOCAB, VOCAB_SCHEMA).metadata.num_rows
    pairs_id = check_lineage("pairs_id", data_dir / TRAIN, data_dir / VOCAB)
    split_id = stamps(train)["split_id"]
    walks_id = lineage_id("walks", split_id, walks_per_node, length, weighted, seed)
    lineage = {"pairs_id": pairs_id, "split_id": split_id, "walks_id": walks_id}
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    with temporary_folder(data_dir / "walks-work") as work:
        graph = Graph.build(train, size, work, weighted)
        starts = np.repeat(np.flatnonzero(graph.degree > 0), walks_per_node)
        starts = starts[rng.permutation(len(starts))]
        if not len(starts):
            raise PipelineError(f"{data_dir / TRAIN}: no pairs, so no walks")
        schema = stamped(pa.schema([("walk", pa.list_(pa.int32(), length))]), "walks", **lineage)
        steps, pending = 0, None
        with (
            atomic_output(data_dir / WALKS) as tmp,
            # Ids are near-random: a dictionary never pays, and trying one halved the speed.
            pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=False) as writer,
            ThreadPoolExecutor(1) as writing,  # Arrow writes one batch while numpy walks the next
            progress(len(starts) * (length - 1), "steps", "walks", quiet) as bar,
        ):
            for first in range(0, len(starts), WALK_ROWS):
                batch = graph.walk(starts[first : first + WALK_ROWS], length, rng)
                steps += batch.shape[0] * (length - 1)
                column = pa.FixedSizeListArray.from_arrays(pa.array(batch.reshape(-1)), length)
                if pending:
                    pending.result()
                table = pa.table([column], schema=schema)
                pending = writing.submit(writer.write_table, table, ROW_GROUP_WALKS)
                bar.update(batch.shape[0] * (length - 1))
            if pending:
                pending.result()
    seconds = time.perf_counter() - started
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
        "peak_rss_mb": peak_rss_mb(),
        **lineage,
    }
    write_json(data_dir / WALKS_STATS, stats)
    return stats


class Graph:
    """The symmetric adjacency of the train pairs, in CSR form on memory-mapped arrays."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, running: np.ndarray | None):
        self.indptr, self.indices, self.running = indptr, indices, running
        self.degree = np.diff(indptr)

    @classmethod
    def build(cls, train: pq.ParquetFile, size: int, folder: Path, weighted: bool) -> Graph:
        """Two passes over ``train`` a row group at a time: degrees, then neighbours.

        A product's neighbours stand in the order its pairs come in the file;
        ``running`` (weighted only) is the float64 running sum of the pair
        weights over the whole ``indices`` array.
        """
        degree = np.zeros(size, dtype=np.int64)
        for group in range(train.num_row_groups):
            ends = train.read_row_group(group, columns=["src", "dst"])
            for name in ("src", "dst"):
                degree += np.bincount(ends.column(name).to_numpy(), minlength=size)
        indptr = np.lib.format.open_memmap(folder / "indptr.npy", "w+", np.int64, (size + 1,))
        indptr[0] = 0
        np.cumsum(degree, out=indptr[1:])
        entries = int(indptr[-1])
        indices = np.lib.format.open_memmap(folder / "indices.npy", "w+", np.int32, (entries,))
        running = None
        if weighted:
            running = np.lib.format.open_memmap(
                folder / "running.npy", "w+", np.float64, (entries,)
            )
        filled = indptr[:-1].copy()  # where each product's next neighbour goes
        columns = ["src", "dst", "weight"] if weighted else ["src", "dst"]
        for group in range(train.num_row_groups):
            table = train.read_row_group(group, columns=columns)
            src, dst = (table.column(name).to_numpy() for name in ("src", "dst"))
            node = np.concatenate([src, dst])
            other = np.concatenate([dst, src])
            order = np.argsort(node, kind="stable")
            node, other = node[order], other[order]
            counts = np.bincount(node, minlength=size)
            first_of_node = np.cumsum(counts) - counts  # position of a node's run in ``node``
            slot = filled[node] + np.arange(len(node)) - first_of_node[node]
            indices[slot] = other
            if weighted:
                weight = table.column("weight").to_numpy()
                running[slot] = np.concatenate([weight, weight])[order]
            filled += counts
        if weighted:
            if (running < 0).any() or not np.isfinite(running).all():
                raise PipelineError("train.parquet: negative or non-finite weights")
            np.cumsum(running, out=running)
        return cls(indptr, indices, running)

    def walk(self, starts: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        """(len(starts), length) walks from ``starts``, products with neighbours.

        A walk arrives at a product along one of its pairs, so every product
        it reaches has a neighbour and no walk ends early.
        """
        out = np.empty((length, len(starts)), dtype=np.int32)  # a position a row: contiguous
        out[0] = starts
        current = starts.astype(np.int64)
        for position in range(1, length):
            u = rng.random(len(current))
            if self.running is None:
                first = self.indptr[current]
                picked = first + (u * (self.indptr[current + 1] - first)).astype(np.int64)
            else:
                picked = self._weighted(current, u)
            out[position] = self.indices[picked]
            current = out[position].astype(np.int64)
        return out.T

    def _weighted(self, current: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Each walker's next entry, with probability its weight over its row's sum.

        One ``searchsorted`` in the running sum for the whole batch, its
        targets in increasing order so consecutive searches share their path
        through the array (numpy narrows each search by the one before).
        """
        first, end = self.indptr[current], self.indptr[current + 1]
        before = np.where(first > 0, self.running[np.maximum(first - 1, 0)], 0.0)
        target = before + u * (self.running[end - 1] - before)
        order = np.argsort(target)
        picked = np.empty(len(target), dtype=np.int64)
        picked[order] = np.searchsorted(self.running, target[order], side="right")
        return np.clip(picked, first, end - 1)  # rounding at a row's edges stays in the row
