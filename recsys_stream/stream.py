"""Training batches streamed from train.parquet, never loading the file.

A restartable IterableDataset: it holds paths and options and opens the file
inside ``__iter__``. Each epoch visits the row groups in a new seeded order,
mixes ``shuffle_groups`` of them at a time in a bounded buffer, and yields
whole batches as tensors with their sampled negatives (k a pair, or N
shared by the batch's pairs). Under a DataLoader
with workers, worker w takes every n-th row group of that order, so each
pair is seen exactly once per epoch. Data-parallel ranks (:meth:`~RowGroupStream.shard`)
read the same batches and each keeps its slice of every batch's rows, so N ranks
together train on the batches one process would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from recsys_stream.sampling import NegativeSampler


@dataclass
class Batch:
    """B anchors, each with its positive partner then k negatives in ``others``.

    Or, with ``shared`` negatives, ``others`` holds the partner only and the
    N shared ids pair with every anchor, each at ``shared_weight`` (k / N).
    """

    anchor: torch.Tensor  # (B,) int64
    others: torch.Tensor  # (B, 1 + k) int64, or (B, 1) with shared negatives
    weight: torch.Tensor  # (B,) float32: each pair's weight (the loss makes targets of it)
    shared: torch.Tensor | None = None  # (N,) int64
    shared_weight: float = 0.0
    ROWS: ClassVar = ("anchor", "others", "weight")  # the fields a row of the batch spans

    def __len__(self) -> int:
        """Samples, as the objective counts them: B x (1 + k) either way."""
        extra = (
            0 if self.shared is None else self.shared_weight * len(self.anchor) * len(self.shared)
        )
        return self.others.numel() + round(extra)


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


class NegativeStream(RowGroupStream):
    """A row-group stream whose batches are positive pairs with sampled negatives."""

    def __init__(
        self,
        path: str | Path,
        batch_size: int,
        sampler: NegativeSampler,
        negatives: int,
        seed: int,
        shuffle_groups: int,
        shared: int = 0,
    ):
        super().__init__(path, batch_size, seed, shuffle_groups)
        self.sampler, self.negatives, self.shared = sampler, negatives, shared

    def batch(
        self,
        rng: np.random.Generator,
        anchor: np.ndarray,
        positive: np.ndarray,
        weight: torch.Tensor,
    ) -> Batch:
        """The pairs with their negatives: k a row, or ``shared`` for the whole batch."""
        if self.shared:
            drawn = self.sampler.draw(rng, self.shared)
            return Batch(
                torch.from_numpy(anchor),
                torch.from_numpy(positive[:, None]),
                weight,
                torch.from_numpy(drawn),
                self.negatives / self.shared,
            )
        negatives = self.sampler.negatives(rng, anchor, positive, self.negatives)
        others = np.concatenate([positive[:, None], negatives], axis=1)
        return Batch(torch.from_numpy(anchor), torch.from_numpy(others), weight)


class PairStream(NegativeStream):
    """Batches of positives from train.parquet with negatives; see the module doc."""

    def __iter__(self) -> Iterator[Batch]:
        rng, groups = self.worker_plan()
        for rows in self.shuffled(rng, groups, ["src", "dst", "weight"]):
            yield self.share(self._batch(rng, rows))

    def _batch(self, rng: np.random.Generator, rows: dict[str, np.ndarray]) -> Batch:
        # Either end of a pair can be the anchor: a coin flip, so both ends
        # get negatives (the pairs are stored with src < dst).
        src, dst = rows["src"].astype(np.int64), rows["dst"].astype(np.int64)
        flip = rng.random(len(src)) < 0.5
        anchor, positive = np.where(flip, dst, src), np.where(flip, src, dst)
        return self.batch(rng, anchor, positive, torch.from_numpy(rows["weight"]))


@dataclass
class RatingBatch:
    """B (user, item, rating) triples."""

    user: torch.Tensor  # (B,) int64
    item: torch.Tensor  # (B,) int64
    rating: torch.Tensor  # (B,) float32
    ROWS: ClassVar = ("user", "item", "rating")

    def __len__(self) -> int:
        return len(self.rating)


class RatingStream(RowGroupStream):
    """Batches of ratings from a ratings train file, shuffled as the pair stream's."""

    def __iter__(self) -> Iterator[RatingBatch]:
        rng, groups = self.worker_plan()
        for rows in self.shuffled(rng, groups, ["user", "item", "rating"]):
            batch = RatingBatch(
                torch.from_numpy(rows["user"].astype(np.int64)),
                torch.from_numpy(rows["item"].astype(np.int64)),
                torch.from_numpy(rows["rating"]),
            )
            yield self.share(batch)


@dataclass
class SequenceBatch:
    """B runs of a user's items in time order, padded on the right to the longest.

    A padded position comes after every real one of its row, so a causal
    network's outputs at real positions never see it, and ``scored`` leaves
    it out of the loss.
    """

    items: torch.Tensor  # (B, T) int64; the padding id past each run's length
    ratings: torch.Tensor  # (B, T) float32; 0 past the length
    scored: torch.Tensor  # (B, T) bool: the positions the loss scores
    samples: int  # scored positions
    # What the loss's sum over the positions is divided by: B runs times the
    # file's mean scored positions a run. Batches hold runs of about one length
    # (SequenceStream.arranged), so a batch's own mean would weigh a position
    # of a short-run batch twenty times one of a long-run batch.
    norm: float

    def __len__(self) -> int:
        return self.samples


class SequenceStream(RowGroupStream):
    """Batches of runs from a sequence file (``pipeline sequences``), shuffled as the
    pair stream's.

    ``next_item``: a position is scored when an item follows it in the run
    (its target); otherwise every real position is (its rating is the target).
    """

    def __init__(
        self,
        path,
        batch_size,
        seed,
        shuffle_groups,
        padding: int,
        width: int,
        next_item: bool,
        positions_per_run: float,
    ):
        """``padding``: the id of padded positions; ``width``: the longest run in the file;
        ``positions_per_run``: the file's mean scored positions a run."""
        super().__init__(path, batch_size, seed, shuffle_groups)
        self.padding, self.width, self.next_item = padding, width, next_item
        self.positions_per_run = positions_per_run

    def arrays(self, table: pa.Table) -> dict[str, np.ndarray]:
        items, length = padded(table.column("items"), self.padding, self.width)
        ratings, _ = padded(table.column("ratings"), 0.0, self.width)
        return {"items": items, "ratings": ratings, "length": length}

    def arranged(
        self, rng: np.random.Generator, chunk: dict[str, np.ndarray], order: np.ndarray
    ) -> np.ndarray:
        """Batches of runs of about the same length, in a random order.

        The shuffled runs are sorted by length (stably, so runs of one length
        stay shuffled) and cut into batches. A batch is padded to its longest
        run, so at Amazon's shape (2.5 ratings a user, runs up to 50) batches
        of mixed lengths would be twenty times wider than their real positions.
        """
        by_length = order[np.argsort(chunk["length"][order], kind="stable")]
        batches = by_length.reshape(-1, self.batch_size)
        return batches[rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[SequenceBatch]:
        rng, groups = self.worker_plan()
        for rows in self.shuffled(rng, groups, ["items", "ratings"]):
            yield self.batch(rows)

    def batch(self, rows: dict[str, np.ndarray]) -> SequenceBatch:
        """A batch of padded runs (``rows``: items, ratings, length), cut to its longest."""
        length = rows["length"]
        width = int(length.max())
        scored = np.arange(width) < (length - self.next_item)[:, None]
        return SequenceBatch(
            torch.from_numpy(rows["items"][:, :width].astype(np.int64)),
            torch.from_numpy(rows["ratings"][:, :width]),
            torch.from_numpy(scored),
            int(scored.sum()),
            len(length) * self.positions_per_run,
        )


def padded(
    lists: pa.ChunkedArray | pa.Array, fill, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(R, width) array of a list column's rows, ``fill`` past each row's length (width:
    the longest row's by default); the lengths."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    offsets = lists.offsets.to_numpy()
    values = lists.flatten().to_numpy()
    length = np.diff(offsets)
    if width is None:
        width = int(length.max()) if len(length) else 0
    position = np.arange(width)
    real = position < length[:, None]
    index = np.minimum(offsets[:-1, None] - offsets[0] + position, max(len(values) - 1, 0))
    out = np.where(real, values[index] if len(values) else fill, fill)
    return out.astype(values.dtype), length
