"""Neighbour smoothing: a product's scoring vector mixes its embedding with its neighbours'.

After training, each product's vector becomes (1 - alpha) x its own plus
alpha x the mean of its train neighbours' (one step of propagation over the
train graph, as graph convolution models do). A product with few train pairs
has an embedding fitted to little evidence, and the mean over its neighbours
places it among them; for a popular product the mean is a stable summary of
its cluster. Measured on the 100k synthetic catalog (MF with bias,
continuous labels), alpha 0.9 lifted ROC-AUC from 0.9605 to 0.9676 with the
reference's negatives and from 0.9517 to 0.9621 with degree-matched ones;
the same step applied to implicit's ALS factors gained 0.002-0.004.

With side information a product's vector is the mean of its own row and
its features' rows, and the whole vectors are smoothed: the neighbours' own
rows alone, averaged with the product's feature rows, mixed two spaces and
took MF with bias from 0.9725 to 0.9298 AUC on the real 2014 Digital Music
sample; smoothing the vectors gave 0.9739 (issue 30). The smoothed vector is
written back through the product's own row, as a feature's row is shared.

Only train pairs are read, a row group at a time; memory is a few tables the
size of the embeddings. Products without a train pair keep (1 - alpha) x
their own row (and, with side information, their features' rows whole: all
that is known of them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from recsys_stream.pairs.models import SideEmbedding


@torch.no_grad()
def smooth(weight: torch.Tensor, train: Path, degree: np.ndarray, alpha: float) -> torch.Tensor:
    """(1 - alpha) * weight + alpha * (mean of each row's train neighbours' rows).

    ``degree``: each product's number of train pairs (the rows summed for it).
    """
    if alpha == 0:
        return weight.clone()
    total = torch.zeros_like(weight)
    parquet = pq.ParquetFile(train)
    for group in range(parquet.num_row_groups):
        pairs = parquet.read_row_group(group, columns=["src", "dst"])
        src = torch.from_numpy(pairs.column("src").to_numpy().astype(np.int64))
        dst = torch.from_numpy(pairs.column("dst").to_numpy().astype(np.int64))
        total.index_add_(0, src, weight.index_select(0, dst))
        total.index_add_(0, dst, weight.index_select(0, src))
    scale = torch.from_numpy(alpha / np.maximum(degree, 1)).to(weight.dtype)
    return total.mul_(scale[:, None]).add_(weight, alpha=1 - alpha)


@torch.no_grad()
def smooth_table(
    table: nn.Embedding | SideEmbedding, train: Path, degree: np.ndarray, alpha: float
) -> None:
    """Smooth a table of product vectors in place: a plain table's rows, or a side
    table's vectors through its own rows (see the module doc)."""
    if not isinstance(table, SideEmbedding):
        table.weight.copy_(smooth(table.weight, train, degree, alpha))
        return
    if alpha == 0:
        return
    vectors = smooth(table.weight, train, degree, alpha)
    paired = torch.from_numpy(np.flatnonzero(degree > 0))
    lone = torch.from_numpy(np.flatnonzero(degree == 0))
    table.set_vectors(paired, vectors[paired])
    table.own.weight[lone] *= 1 - alpha
