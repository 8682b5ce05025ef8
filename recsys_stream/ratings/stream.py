"""Batches of (user, item, rating) triples, streamed from a ratings train file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from recsys_stream.core.stream import RowGroupStream


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
