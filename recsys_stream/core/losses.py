"""The objectives, in one place: each loss's targets, value and gradient in the logit.

Both training steps and the tests use these definitions. The fused step
needs a loss's mean value and its gradient with respect to the logits
(:meth:`Loss.value_and_grad`); the autograd step differentiates
:meth:`Loss.__call__`; :func:`objective` adds the L2 term to either, written
for autograd, as the reference trainer wrote it.

- ``binary``: targets 1 for a pair, 0 for a negative; binary cross-entropy
  on the logits.
- ``continuous``: a pair's target is POSITIVE_FLOOR + (1 - POSITIVE_FLOOR) x
  weight / largest train weight, a negative's 0; squared error of the sigmoid.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

# Under plain MF an unrelated pair scores about sigmoid(0) = 0.5, so targets
# below 0.5 (weight / max alone) ask it to rank true pairs under unrelated
# ones: MF then stays at AUC 0.50. Measured on the 100k synthetic catalog
# (5 epochs, the defaults of the time), plain MF reached 0.51 with a floor of
# 0.5, 0.66 with 0.75, 0.82 with 0.9 and 0.86 with 1 (where the weight no
# longer counts); MF with bias 0.954-0.956 with any of the last three. 0.9
# keeps a tenth of the target for the weight.
POSITIVE_FLOOR = 0.9


class Loss:
    """A loss over a batch's logits (B, 1 + k): column 0 the pairs, the rest negatives."""

    name: ClassVar[str]

    def targets(self, weight: torch.Tensor, shape: torch.Size, max_weight: float) -> torch.Tensor:
        """(B, 1 + k) targets from the pairs' weights (B,)."""
        target = torch.zeros(shape)
        target[:, 0] = self.positive_target(weight, max_weight)
        return target

    def positive_target(self, weight: torch.Tensor, max_weight: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss, for autograd."""
        raise NotImplementedError

    def value_and_grad(
        self, logit: torch.Tensor, target: torch.Tensor
    ) -> tuple[float, torch.Tensor]:
        """The mean loss and its gradient with respect to each logit."""
        raise NotImplementedError


class BinaryCrossEntropy(Loss):
    name = "binary"

    def positive_target(self, weight: torch.Tensor, max_weight: float) -> torch.Tensor:
        return torch.ones_like(weight)

    def __call__(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logit, target)

    def value_and_grad(
        self, logit: torch.Tensor, target: torch.Tensor
    ) -> tuple[float, torch.Tensor]:
        value = F.binary_cross_entropy_with_logits(logit, target).item()
        return value, (torch.sigmoid(logit) - target) / logit.numel()


class SigmoidSquaredError(Loss):
    name = "continuous"

    def positive_target(self, weight: torch.Tensor, max_weight: float) -> torch.Tensor:
        return POSITIVE_FLOOR + (1 - POSITIVE_FLOOR) * weight / max_weight

    def __call__(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(logit) - target).square().mean()

    def value_and_grad(
        self, logit: torch.Tensor, target: torch.Tensor
    ) -> tuple[float, torch.Tensor]:
        p = torch.sigmoid(logit)
        error = p - target
        value = error.square().mean().item()
        return value, 2 * error * p * (1 - p) / logit.numel()


LOSSES: dict[str, Loss] = {
    loss.name: loss for loss in (BinaryCrossEntropy(), SigmoidSquaredError())
}


def objective(model, anchor, others, target, loss: Loss, l2: float, shared=None, shared_weight=0.0):
    """loss over the B x (1 + k) samples + l2 x mean(|left_a|^2 + |right_b|^2), for autograd."""
    return sum(objective_terms(model, anchor, others, target, loss, l2, shared, shared_weight))


def objective_terms(
    model, anchor, others, target, loss: Loss, l2: float, shared=None, shared_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """The objective's two terms: the mean loss and the L2 penalty.

    Sample (i, j) pairs ``anchor[i]`` with ``others[i, j]``. With ``shared``
    negatives (N,), every anchor is also paired with each of them (target 0),
    each such sample weighing ``shared_weight`` (k / N: the k negatives a row
    would have had, in expectation); the means are weighted means. The L2
    term covers only the rows the batch touches, each as often (and with the
    weight) it is touched: the left table's rows of the anchors, the right
    table's of the others.
    """
    groups = [(anchor[:, None].expand_as(others), others, target, 1.0)]
    if shared is not None:
        size = (len(anchor), len(shared))
        zero = torch.zeros(size)
        groups.append(
            (anchor[:, None].expand(size), shared[None, :].expand(size), zero, shared_weight)
        )
    total = sum(weight * b.numel() for _, b, _, weight in groups)
    data = (
        sum(
            weight * b.numel() * loss(model.logits(a.reshape(-1), b.reshape(-1)), t.reshape(-1))
            for a, b, t, weight in groups
        )
        / total
    )
    if not l2:
        return data, 0.0
    layout = model.layout()
    if layout is not None:
        left, right = layout.left, layout.right
    else:
        vectors = [getattr(model, name) for name in model.vector_tables]
        left, right = vectors[0], vectors[-1]
    penalty = sum(
        weight * (left(a.reshape(-1)).square().sum() + right(b.reshape(-1)).square().sum())
        for a, b, _, weight in groups
    )
    return data, l2 * penalty / total
