"""Leave-one-out ranking metrics against the whole catalogue: HR@K and NDCG@K.

A user's target is ranked against every item (not against 100 sampled
negatives, which inflates the figures), leaving out the items of the user's
history, which a recommender would not show again. Ties are broken at
random, in expectation: with ``greater`` items scored above the target and
``ties`` others scored the same, the target's 0-based rank is uniform over
greater .. greater + ties, and the metrics are their means over that range,
so a scorer with many ties (popularity, co-occurrence counts) is neither
favoured nor penalised by an arbitrary order.

HR@K: the chance that the target is in the top K. NDCG@K: 1 / log2(rank + 2)
when the rank is below K, else 0 (one relevant item: the ideal DCG is 1).
"""

from __future__ import annotations

import numpy as np

K = 10


def ranks(scores: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(greater, ties): per row, the items scored above the target, and the others
    scored the same. ``scores``: (N, items), -inf for items left out."""
    own = scores[np.arange(len(target)), target][:, None]
    greater = (scores > own).sum(1)
    ties = (scores == own).sum(1) - 1
    return greater, ties


def hit_and_ndcg(greater: np.ndarray, ties: np.ndarray, k: int = K):
    """Per row, HR@k and NDCG@k in expectation over the order of the ties."""
    greater, ties = np.asarray(greater, np.int64), np.asarray(ties, np.int64)
    # gain[r]: the discounted gain of the ranks below r (ranks at k and past gain 0)
    gain = np.concatenate([[0.0], np.cumsum(1 / np.log2(np.arange(k) + 2))])
    top = np.minimum(greater + ties + 1, k)  # one past the last rank the target can take, cut at k
    first = np.minimum(greater, k)
    hit = (top - first) / (ties + 1)
    ndcg = (gain[top] - gain[first]) / (ties + 1)
    return hit, ndcg


def leave_out(scores: np.ndarray, rows: np.ndarray, items: np.ndarray, target: np.ndarray):
    """Set the scores of (rows, items), a user's history, to -inf in place, but a
    row's own target's."""
    keep = items != target[rows]
    scores[rows[keep], items[keep]] = -np.inf
