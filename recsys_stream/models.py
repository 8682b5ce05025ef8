"""Matrix factorization over one shared product table, as plain torch modules.

Both models map two id tensors to the probability that the products are a
pair. They are the definition of the models: the fused training step in
:mod:`recsys_stream.fused` computes exactly their gradients, faster.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_stream import tables


class MF(nn.Module):
    """sigmoid(<e_a, e_b>) with one embedding table shared by both sides."""

    def __init__(self, num_products: int, dim: int, init_std: float | None = 0.01):
        """``init_std`` None leaves the table zero, for weights about to be loaded."""
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(tables.zeros(num_products, dim), freeze=False)
        if init_std is not None:
            nn.init.normal_(self.embedding.weight, std=init_std)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.embedding(a) * self.embedding(b)).sum(-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(a, b))


class MFBias(MF):
    """sigmoid(<e_a, e_b> + bias_a + bias_b + global bias)."""

    def __init__(self, num_products: int, dim: int, init_std: float | None = 0.01):
        super().__init__(num_products, dim, init_std)
        self.bias = nn.Embedding.from_pretrained(tables.zeros(num_products, 1), freeze=False)
        self.global_bias = nn.Parameter(torch.zeros(1))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        bias = self.bias(a).squeeze(-1) + self.bias(b).squeeze(-1) + self.global_bias
        return super().logits(a, b) + bias


MODEL_CLASSES = {"mf": MF, "mf_bias": MFBias}


def build_model(kind: str, num_products: int, dim: int, init_std: float | None, seed: int) -> MF:
    """A freshly initialised model of ``kind`` ("mf" or "mf_bias"), seeded."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return MODEL_CLASSES[kind](num_products, dim, init_std)
    finally:
        torch.random.set_rng_state(generator_state)
