"""Batches of each user's runs of ratings in time order, streamed from a sequence file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from recsys_stream.core.stream import RowGroupStream


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

    @property
    def loss_scale(self) -> float:
        """What turns the batch's loss (over ``norm``) into its positions' mean: the loss a
        sample, comparable between batches of short and long runs (core.divergence)."""
        return self.norm / self.samples


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
