"""Negative products drawn from the train degree distribution raised to a power.

As the reference's frequency table: popular products are drawn more often,
damped by the power (0.75, word2vec's choice). Drawing is an inverse-CDF
lookup, vectorised per batch and O(1) a draw: a guide table of 2V cells
gives each draw a start at most a step or two before its answer (Chen and
Asau's method), where a binary search over a large CDF costs a cache miss
a level and ran ten times slower at two million products.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError


class NegativeSampler:
    """Draws product ids with probability proportional to degree ** power."""

    def __init__(self, degree: np.ndarray, power: float):
        weights = np.asarray(degree, dtype=np.float64) ** power
        weights[np.asarray(degree) <= 0] = 0.0
        if not weights.sum() > 0:
            raise PipelineError(
                "no product has a positive train degree: nothing to sample negatives from"
            )
        self.prob = weights / weights.sum()
        self.cdf = np.cumsum(self.prob)
        self.start = self.cdf - self.prob  # where each id's interval begins
        cells = 2 * len(self.cdf)
        # guide[c]: the first id whose CDF exceeds c / cells, where draws in cell c start looking
        guide = np.searchsorted(self.cdf, np.arange(cells) / cells, side="right")
        self.guide = np.minimum(guide, len(self.cdf) - 1)

    def negatives(
        self, rng: np.random.Generator, anchor: np.ndarray, positive: np.ndarray, k: int
    ) -> np.ndarray:
        """(B, k) draws, each excluding its row's anchor and positive.

        Equal in distribution to redrawing until the draw differs from both,
        but done in one pass: a uniform draw over the remaining mass is moved
        past the two excluded intervals of the CDF.
        """
        lo, hi = np.minimum(anchor, positive), np.maximum(anchor, positive)
        p_lo, p_hi = self.prob[lo], np.where(hi != lo, self.prob[hi], 0.0)
        rest = 1.0 - p_lo - p_hi
        if (rest <= 1e-12).any():
            raise PipelineError("a pair holds all the sampling mass: no negative to draw")
        u = rng.random((len(anchor), k)) * rest[:, None]
        u += np.where(u >= self.start[lo][:, None], p_lo[:, None], 0.0)
        u += np.where(u >= self.start[hi][:, None], p_hi[:, None], 0.0)
        drawn = self._inverse_cdf(u)
        # Rounding can land a draw on an excluded id's edge: move it to the next id with mass.
        clash = (drawn == lo[:, None]) | (drawn == hi[:, None])
        if clash.any():
            drawn[clash] = self._nearest_other(
                drawn[clash],
                np.broadcast_to(lo[:, None], drawn.shape)[clash],
                np.broadcast_to(hi[:, None], drawn.shape)[clash],
            )
        return drawn

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` ids drawn independently, excluding none (shared by a batch's pairs)."""
        return self._inverse_cdf(rng.random(n))

    def _inverse_cdf(self, u: np.ndarray) -> np.ndarray:
        """searchsorted(cdf, u, "right") clipped to the last id, by the guide table."""
        last = len(self.cdf) - 1
        flat = u.ravel()
        ids = self.guide[np.minimum((flat * len(self.guide)).astype(np.int64), len(self.guide) - 1)]
        behind = np.flatnonzero((self.cdf[ids] <= flat) & (ids < last))
        while len(behind):  # a step or two at most: a cell holds few CDF boundaries
            ids[behind] += 1
            ahead = ids[behind]
            behind = behind[(self.cdf[ahead] <= flat[behind]) & (ahead < last)]
        return ids.reshape(u.shape)

    def _nearest_other(self, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        candidates = np.flatnonzero(self.prob > 0)
        out = ids.copy()
        for _ in range(3):  # at most two ids to step over
            bad = (out == lo) | (out == hi) | (self.prob[out] == 0)
            if not bad.any():
                break
            nxt = np.searchsorted(candidates, out[bad], side="right")
            out[bad] = candidates[nxt % len(candidates)]
        return out
