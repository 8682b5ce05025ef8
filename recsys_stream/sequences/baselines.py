"""What a sequence model must beat at the next item: popularity and co-occurrence.

Both are counted on the same train histories as the model's (each user's
items but the last two, ``pipeline sequences``' next-eval file without its
val target) and scored against every item, as the model is
(:mod:`recsys_stream.sequences.ranking`).

- Popularity: an item's count in the train histories.
- Co-occurrence (item-to-item): ``count[a, b]``, how often item b follows
  item a within ``window`` positions in a history. A user's score of b is
  the sum of ``count[a, b]`` over the last ``last`` items a of their
  history, with popularity breaking ties (a fraction below one count), so
  an item that never followed falls back to the popular ones.

The counts are kept sparse (sorted pair keys and their counts, rows found
by binary search) and merged a row group at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq

DEFAULT_WINDOW = 3
DEFAULT_LAST = 3
MERGE_PAIRS = 1 << 24  # pair keys held before they are merged into the counts


def histories(parquet: pq.ParquetFile) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(items, offsets) of each row group's train histories: next-eval's ``items``
    without their last one (the val target)."""
    for group in range(parquet.num_row_groups):
        lists = parquet.read_row_group(group, columns=["items"]).column(0).combine_chunks()
        offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()
        items = lists.flatten().to_numpy()
        keep = np.ones(len(items), dtype=bool)
        keep[offsets[1:] - 1] = False
        yield items[keep], offsets - np.arange(len(offsets))


class Popularity:
    """Items scored by their count in the train histories."""

    def __init__(self, items: int, parquet: pq.ParquetFile):
        self.counts = np.zeros(items, dtype=np.float64)
        for flat, _ in histories(parquet):
            self.counts += np.bincount(flat, minlength=items)

    def scores(self, recent: np.ndarray, length: np.ndarray) -> np.ndarray:
        """(N, items): the same scores for every user, whatever their history."""
        return np.broadcast_to(self.counts, (len(length), len(self.counts))).copy()


class CoOccurrence:
    """Items scored by how often they followed the user's last items; see the module doc."""

    def __init__(
        self,
        items: int,
        parquet: pq.ParquetFile,
        popularity: Popularity,
        window: int = DEFAULT_WINDOW,
        last: int = DEFAULT_LAST,
    ):
        self.items, self.last = items, last
        self.tie_break = popularity.counts / (popularity.counts.max() + 1)
        keys, counts, pending = np.empty(0, np.int64), np.empty(0, np.int64), []
        for flat, offsets in histories(parquet):
            row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            for gap in range(1, window + 1):
                same = row[gap:] == row[:-gap]
                pending.append(flat[:-gap][same].astype(np.int64) * items + flat[gap:][same])
            if sum(map(len, pending)) > MERGE_PAIRS:
                keys, counts = _merge(keys, counts, pending)
                pending = []
        self.keys, self.counts = _merge(keys, counts, pending)
        self.starts = np.searchsorted(self.keys, np.arange(items + 1, dtype=np.int64) * items)

    def scores(self, recent: np.ndarray, length: np.ndarray) -> np.ndarray:
        """(N, items): the scores of N users whose histories end with ``recent`` (N, width),
        in time order from the left, ``length`` real items a row."""
        n = len(length)
        out = np.tile(self.tie_break, (n, 1))
        position = np.arange(recent.shape[1])
        use = (position >= length[:, None] - self.last) & (position < length[:, None])
        user, item = np.nonzero(use)
        item = recent[user, item]
        first, stop = self.starts[item], self.starts[item + 1]
        size = stop - first
        index = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size - first, size)
        rows = np.repeat(user, size)
        cells = rows * self.items + (self.keys[index] % self.items)
        out += np.bincount(cells, weights=self.counts[index], minlength=n * self.items).reshape(
            n, self.items
        )
        return out


def _merge(keys, counts, pending) -> tuple[np.ndarray, np.ndarray]:
    """The counts with the ``pending`` pair keys added: sorted unique keys, their counts."""
    if not pending:
        return keys, counts
    new, new_counts = np.unique(np.concatenate(pending), return_counts=True)
    keys, inverse = np.unique(np.concatenate([keys, new]), return_inverse=True)
    merged = np.zeros(len(keys), dtype=np.int64)
    np.add.at(merged, inverse, np.concatenate([counts, new_counts]))
    return keys, merged
