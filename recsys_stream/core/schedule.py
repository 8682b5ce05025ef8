"""Learning-rate schedules as pure functions of the position in training."""

from __future__ import annotations

import math


def learning_rate(
    schedule: str,
    base: float,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    epochs: int,
    cycle: int = 1,
) -> float:
    """The lr at ``step`` (0-based) of ``epoch`` (0-based).

    ``cosine-restarts`` anneals from ``base`` towards 0 within each epoch and
    returns to ``base`` at every epoch start: the reference's intent. (It
    built a new CosineAnnealingLR each epoch, which on torch 2.x restarts from
    the already-annealed lr of 0, so its epochs 2-5 learnt nothing.)
    ``cosine`` anneals once over all epochs; ``cosine-cyclic`` over ``cycle``
    epochs at a time, back to ``base`` at the start of each cycle (the
    EmbeddingNet article's cyclic annealing; cosine-restarts is its
    one-epoch case).
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        progress, span = epoch * steps_per_epoch + step, epochs * steps_per_epoch
    elif schedule == "cosine-restarts":
        progress, span = step, steps_per_epoch
    elif schedule == "cosine-cyclic":
        progress, span = (epoch % cycle) * steps_per_epoch + step, cycle * steps_per_epoch
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, span) / span))
