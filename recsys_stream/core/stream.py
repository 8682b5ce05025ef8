"""The stream every kind of task trains from: a Parquet file's row groups, never loaded.

A restartable IterableDataset: it holds paths and options and opens the file
inside ``__iter__``. Each epoch visits the row groups in a new seeded order,
mixes ``shuffle_groups`` of them at a time in a bounded buffer, and yields
whole batches. Under a DataLoader with workers, worker w takes every n-th row
group of that order, so each row is seen exactly once per epoch. Data-parallel
ranks (:meth:`~RowGroupStream.shard`) read the same batches and each keeps its
slice of every batch's rows, so N ranks together train on the batches one
process would. The kinds' streams (``pairs.stream``, ``ratings.stream``,
``sequences.stream``) say what a batch holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import IterableDataset, get_worker_info


class RowGroupStream(IterableDataset):
    """A restartable stream over a Parquet file's row groups, in a seeded order each epoch.

    With DataLoader workers, each takes every n-th row group of the epoch's
    order, with a generator of its own: each row is read once an epoch.
    Data-parallel ranks (:meth:`shard`) read the same row groups with the same
    generators, so they make the same batches; each keeps its share of every
    batch's rows (:meth:`share`).
    """

    def __init__(self, path: str | Path, batch_size: int, seed: int, shuffle_groups: int):
        self.path = Path(path)
        self.batch_size, self.seed, self.shuffle_groups = batch_size, seed, shuffle_groups
        self.epoch = 0
        self.rank, self.ranks = 0, 1

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose row-group order and shuffles the next pass uses."""
        self.epoch = epoch

    def shard(self, rank: int, ranks: int) -> None:
        """Yield only rank ``rank``'s share of ``ranks`` of each batch: a step of all ranks
        together sees the ``batch_size`` rows one process would. Each rank reads the whole
        file: a share of whole row groups would leave ranks with unequal epochs (or none,
        on a file of fewer groups than ranks) and the schedule counting the wrong steps."""
        self.rank, self.ranks = rank, ranks

    def share(self, batch):
        """This rank's contiguous slice of ``batch``'s rows (the fields in its ``ROWS``;
        shared negatives stay whole), or None when the slice is empty: the epoch's last
        batch may hold fewer rows than there are ranks."""
        if self.ranks == 1:
            return batch
        rows = len(getattr(batch, batch.ROWS[0]))
        low, high = rows * self.rank // self.ranks, rows * (self.rank + 1) // self.ranks
        if low == high:
            return None
        return dataclasses.replace(
            batch, **{name: getattr(batch, name)[low:high] for name in batch.ROWS}
        )

    def row_groups(self, worker: int = 0, workers: int = 1) -> list[int]:
        """The row groups a worker reads this epoch, in order."""
        count = pq.ParquetFile(self.path).num_row_groups
        order = np.random.default_rng([self.seed, self.epoch]).permutation(count)
        return order[worker::workers].tolist()

    def worker_plan(self) -> tuple[np.random.Generator, list[int]]:
        """This worker's generator for the epoch and the row groups it reads (every rank's
        worker w the same)."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        return rng, self.row_groups(worker, workers)

    def shuffled(
        self, rng: np.random.Generator, groups: list[int], columns: list[str]
    ) -> Iterator[dict[str, np.ndarray]]:
        """Whole batches of ``columns``' rows, shuffled ``shuffle_groups`` row groups at a time.

        The rows a chunk leaves over join the next chunk; the last batch of
        the epoch may be short.
        """
        parquet = pq.ParquetFile(self.path)
        carry = None
        for start in range(0, len(groups), self.shuffle_groups):
            table = parquet.read_row_groups(groups[start : start + self.shuffle_groups], columns)
            chunk = self.arrays(table)
            if carry:
                chunk = {name: np.concatenate([carry[name], chunk[name]]) for name in chunk}
            order = rng.permutation(len(next(iter(chunk.values()))))
            whole = len(order) - len(order) % self.batch_size
            for rows in self.arranged(rng, chunk, order[:whole]):
                yield {name: values[rows] for name, values in chunk.items()}
            carry = {name: values[order[whole:]] for name, values in chunk.items()}
        if carry and len(next(iter(carry.values()))):
            yield carry

    def arrays(self, table: pa.Table) -> dict[str, np.ndarray]:
        """A chunk's rows as arrays whose first axis is the row: its columns, as they are."""
        return {name: table.column(name).to_numpy() for name in table.column_names}

    def arranged(
        self, rng: np.random.Generator, chunk: dict[str, np.ndarray], order: np.ndarray
    ) -> np.ndarray:
        """The chunk's batches, one row of indices each, from its shuffled ``order``
        (a whole number of batches): consecutive, by default."""
        return order.reshape(-1, self.batch_size)
