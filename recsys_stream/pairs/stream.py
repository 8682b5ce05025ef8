"""Batches of product pairs with their sampled negatives (k a pair, or N shared by the
batch's pairs), streamed from train.parquet."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from recsys_stream.core.stream import RowGroupStream
from recsys_stream.pairs.sampling import NegativeSampler


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
