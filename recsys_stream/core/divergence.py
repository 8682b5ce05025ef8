"""Divergence, caught from what it does to the model, with one line naming what to lower.

A run stops with :class:`Diverged` at an infinite loss or score, at a loss
that rose well above its first step's, or at a weight that ran away
(:class:`DivergenceWatch`); the loop adds which checkpoint is the last good
one. No summary is written: nothing that looks finished.
"""

from __future__ import annotations

import math

import torch

from pipeline.errors import PipelineError
from recsys_stream.core.config import TrainConfig

# A run has diverged when the mean loss of a window of at least STEADY_STEPS steps
# is LOSS_RISE times the part's first step's (the untrained model's, or the
# resumed one's), each step's loss taken per sample (per_sample). Not the mean of
# the first steps: --lr 1 lifts the loss at the second step already. Measured on
# the real samples (MovieLens latest-small, Digital Music) with the defaults of
# every kind of model, no window of 16 rose above 1.05 times the first step
# (skip-gram 1.04, lstm 1.02, the others at most 1.0); --lr 1 rose to 3.4 (lstm),
# 3.7 (embedding_net), 5.2 (mf_bias on ratings), 9.2 (gru, next item), 78
# (skip-gram) and 1,461 (mf on ratings) times.
STEADY_STEPS = 16
LOSS_RISE = 2.0
# ... or when a weight's magnitude reaches this. A weight of 10 moves a logit by 10
# (sigmoid(-10) = 4.5e-5) or, in two vectors, by 100: the sigmoids and gates
# saturate and stop learning. Measured with the defaults of every kind of model,
# the largest weight was 4.9 (skip-gram's output vectors, 100k synthetic catalog)
# and under 3.5 elsewhere; --lr 1 reached 10 to 37 on pairs, ratings and sequences,
# --lr 0.3 on pairs 10.4 in epoch 4 (AUC falling behind the default's).
WEIGHT_LIMIT = 10.0


class Diverged(PipelineError):
    """A diverging run, stopped; the loop adds which checkpoint is the last good one."""

    def __init__(self, step: int, cause: str, config: TrainConfig):
        super().__init__(
            f"training diverged at step {step}: {cause}; lower --lr (now {config.lr:g}) "
            f"or --init-std (now {config.init_std:g})"
        )


def check_finite(value: float, step: int, config: TrainConfig, what: str = "loss") -> None:
    """Stop a diverging run at once, in one line saying what to lower."""
    if not math.isfinite(value):
        raise Diverged(step, f"the {what} became {value}", config)


def per_sample(loss: float, batch) -> float:
    """A step's ``loss`` as a mean over its batch's samples, so that any two steps
    compare: a pair or rating step's loss is one already; a sequence batch's is its
    positions' sum over ``norm`` (stream.SequenceBatch), larger for longer runs."""
    return loss * getattr(batch, "loss_scale", 1.0)


class DivergenceWatch:
    """Stop a run that diverges, from what it does to the model, not only an infinite loss.

    :meth:`step` after each step (the loss is already a Python number), :meth:`point`
    at each learning-curve point and :meth:`compare` at an epoch's end: the mean
    per-sample loss of the steps since the last comparison (at a point, once they are
    STEADY_STEPS or more) LOSS_RISE times the part's first step's, or a weight of
    WEIGHT_LIMIT (the model's ``weight_limit`` when it has one), stops it. The
    weights are read at the points
    only, by ``aminmax`` (no temporary: 14 ms for a table of 2.17M rows of 33, one
    thread). A loss that starts at or below zero (pmf's log-likelihood) is left to
    the weights.

    Every data-parallel rank sees the same losses and weights, so all stop at
    the same step (a rank without a batch sees the union's loss, a mean already).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig):
        self.model, self.config = model, config
        # a Gibbs sampler's rows are draws, whose size says nothing of divergence
        # (ratings.bayes: its limit is infinite, and only NaN stops it)
        self.limit = getattr(model, "weight_limit", WEIGHT_LIMIT)
        self.first: float | None = None  # the part's first step's per-sample loss
        self.window: list[float] = []  # the per-sample losses since the last comparison

    def step(self, loss: float, step: int, batch) -> None:
        """Check a step's ``loss`` on ``batch``; the part's first is what later windows
        are held to."""
        check_finite(loss, step, self.config)
        self.window.append(per_sample(loss, batch))
        if self.first is None:
            self.first = self.window[-1]

    def point(self, step: int) -> None:
        """Check the window of losses ended at ``step``, once it is STEADY_STEPS long, and
        the weights."""
        if len(self.window) >= STEADY_STEPS:
            self.compare(step)
        name, largest = self.largest_weight()
        if not largest <= self.limit:  # NaN too
            raise Diverged(step, f"a weight in {name} reached {largest:.3g}", self.config)

    def compare(self, step: int) -> None:
        """Check the window of losses ended at ``step``, whatever its length (at an
        epoch's end, so that no checkpoint holds a diverged model), and start another."""
        first, window = self.first, self.window
        self.window = []
        if not window or first is None or first <= 0:
            return
        mean = sum(window) / len(window)
        if mean > LOSS_RISE * first:
            raise Diverged(
                step,
                f"the loss rose to {mean:.4g} a sample, {mean / first:.1f}x its {first:.4g} "
                "at the first step",
                self.config,
            )

    def largest_weight(self) -> tuple[str, float]:
        """The parameter holding the largest magnitude, and that magnitude (the first
        that is not a number, if one is not)."""
        found = ("", 0.0)
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if param.numel() and param.dtype.is_floating_point:
                    low, high = torch.aminmax(param)
                    largest = max(-low.item(), high.item())
                    if math.isnan(largest):
                        return name, largest
                    if largest > found[1]:
                        found = (name, largest)
        return found
