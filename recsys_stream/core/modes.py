"""A model in evaluation mode for a block: the one place a scorer switches modes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode and without gradients for the block, its mode restored after
    (on an exception too), so that a curve point never leaves dropout off in training."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(training)
