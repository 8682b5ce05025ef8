"""Pair models: plain torch modules behind one protocol, found by name in a registry.

A model is a ``torch.nn.Module`` subclass of :class:`PairModel` (today's
models score product pairs; the protocol names its inputs so rating and
sequence models can join) that

- computes ``logits(a, b)`` for id tensors, and ``forward`` as their sigmoid;
- names its sparse embedding tables (``tables()``; rows are updated only where
  a batch touches them) and its dense parameters (``dense()``);
- says which tables hold product vectors (``vector_tables``: smoothed after
  training, exported to embeddings.parquet, used by ``similar``) and which
  per-product bias and global bias it has;
- when its score is <left[a], right[b]> + bias[a] + bias[b] + global, returns
  that layout from ``layout()``, and the fused step trains it without
  autograd; otherwise the autograd step does.

Adding a model is a class and ``@register``; the trainer, the CLI's choices,
the model checks, ``similar`` and the contract tests (tests/model_contract.py,
tests/test_models.py) find it in :data:`MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recsys_stream.core import tables
from recsys_stream.core.model import Model
from recsys_stream.core.registry import Registry

MODELS: Registry[type[PairModel]] = Registry("pair model")
register = MODELS.register


@dataclass
class PairLayout:
    """The tables of a score <left[a], right[b]> + bias[a] + bias[b] + global_bias."""

    left: nn.Embedding
    right: nn.Embedding  # the same module as left for a shared table
    bias: nn.Embedding | None
    global_bias: nn.Parameter | None


@dataclass
class SideTables:
    """Side information for a model: feature codes per product and the codes each feature
    uses, and what each product's own row weighs against a feature's 1.

    ``codes`` None builds zero codes, for a model whose state is about to be loaded;
    ``own_weight`` None weighs every own row 1 (the plain mean).
    """

    sizes: dict[str, int]
    codes: dict[str, torch.Tensor] | None = None
    own_weight: torch.Tensor | None = None


class SideEmbedding(nn.Module):
    """A product table whose vector of a product is a weighted mean of its own row and the
    rows of the features it has.

    ``own`` is the product's table; each feature (brand, leaf category, price
    bucket: :mod:`pipeline.side_info`) has a table of its own, indexed by the
    product's code in a buffer. A product with no pair still has a vector,
    from its metadata. Each known feature weighs 1 and the own row its
    ``own_weight`` (a buffer; the trainer gives 1 + ``--side-own-weight`` x the
    product's train pairs): the more pairs say what a product is, the less its
    vector is its category's, so side information helps the cold products
    without blurring the well-known ones. Code 0, an unknown value, adds
    nothing: its row is never read nor trained, and the mean runs over the
    features the product has. (A trained row for "unknown", shared by every product without the
    value, made those products look alike: on the real 2014 Digital Music
    sample, where most related products have no metadata, it took skip-gram
    below popularity and cold pairs below chance, issue 30.) Indexing returns
    the mean; ``weight`` all V of them.
    """

    def __init__(self, own: nn.Embedding, side: SideTables, init):
        super().__init__()
        self.own = own
        width = own.embedding_dim
        self.features = nn.ModuleDict(
            {name: embedding(size, width, init) for name, size in side.sizes.items()}
        )
        for name in side.sizes:
            codes = side.codes[name] if side.codes else torch.zeros(own.num_embeddings)
            self.register_buffer(f"codes_{name}", codes.to(torch.int32))
        weight = side.own_weight if side.own_weight is not None else torch.ones(own.num_embeddings)
        self.register_buffer("own_weight", weight.to(torch.float32))

    def codes(self, feature: str) -> torch.Tensor:
        """(V,) each product's code of ``feature``: its row of that feature's table."""
        return getattr(self, f"codes_{feature}")

    def parts(self, ids: torch.Tensor) -> tuple[list, torch.Tensor]:
        """The rows the vectors of ``ids`` average and their shares: per feature (name,
        codes as int64, (..., 1) its share, 0 where the code is unknown), and (..., 1) the
        own row's share."""
        own = self.own_weight[ids].unsqueeze(-1).to(self.own.weight.dtype)
        total = own.clone()
        found = []
        for name in self.features:
            codes = self.codes(name)[ids].long()
            known = (codes != 0).unsqueeze(-1).to(total.dtype)
            total += known
            found.append((name, codes, known))
        return [(name, codes, known / total) for name, codes, known in found], own / total

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        features, share = self.parts(ids)
        total = self.own(ids) * share
        for name, codes, feature_share in features:
            total = total + self.features[name](codes) * feature_share
        return total

    @property
    def weight(self) -> torch.Tensor:
        """(V, d): every product's vector (computed, not a parameter)."""
        return self(torch.arange(self.own.num_embeddings))

    @torch.no_grad()
    def set_vectors(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Make the vectors of ``ids`` equal ``vectors`` by writing their own rows: a
        feature's row is shared by every product with that value, so it stays."""
        features, share = self.parts(ids)
        shared = torch.zeros_like(vectors)
        for name, codes, feature_share in features:
            shared += self.features[name](codes) * feature_share
        self.own.weight[ids] = (vectors - shared) / share

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A model.pt from before ``own_weight`` averaged its rows plainly: weights of 1."""
        state_dict.setdefault(f"{prefix}own_weight", torch.ones(self.own.num_embeddings))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def embedding(rows: int, width: int, init: Callable[[torch.Tensor], object] | None) -> nn.Embedding:
    """A trainable table on huge pages when large (see :mod:`recsys_stream.core.tables`).

    ``init`` fills it in place (None keeps zeros, for weights about to be loaded).
    """
    table = nn.Embedding.from_pretrained(tables.zeros(rows, width), freeze=False)
    if init is not None:
        init(table.weight)
    return table


class PairModel(Model):
    """The protocol of a model over product pairs; see the module doc."""

    inputs: ClassVar[str] = "pairs"  # a batch is anchor ids with their others' ids
    vector_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_products: int, dim: int, init_std: float | None):
        super().__init__()
        self.num_products, self.dim = num_products, dim
        self._init = None if init_std is None else (lambda t: nn.init.normal_(t, std=init_std))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The probability that each (a, b) is a pair."""
        return torch.sigmoid(self.logits(a, b))

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """How likely each (a, b) is a pair, for evaluation; the same order as ``similar``."""
        return self(a, b)

    def configure(self, config) -> None:
        """Take the settings of a run's TrainConfig that the model itself reads."""

    @property
    def side_features(self) -> tuple[str, ...]:
        """The features side information adds to the product vectors (none by default)."""
        table = getattr(self, self.vector_tables[0])
        return tuple(table.features) if isinstance(table, SideEmbedding) else ()

    def add_side_info(self, side: SideTables) -> None:
        """Make each product's vector the mean of its own and its features' (SideEmbedding).

        The product table (``vector_tables[0]``) is wrapped; the feature tables
        are drawn after the model's own, so the model's tables are unchanged.
        The layout keeps the wrapped table: the fused step spreads a vector's
        gradient over the rows it averages.
        """
        name = self.vector_tables[0]
        setattr(self, name, SideEmbedding(getattr(self, name), side, self._init))

    def tables(self) -> dict[str, nn.Embedding]:
        """The sparse tables, by name: rows indexed by product or feature code."""
        return {name: m for name, m in self.named_modules() if isinstance(m, nn.Embedding)}

    def product_tables(self) -> dict[str, nn.Embedding | SideEmbedding]:
        """The tables of product vectors (``vector_tables``), by name: what smoothing mixes."""
        return {name: getattr(self, name) for name in self.vector_tables}

    def query_vectors(self) -> torch.Tensor:
        """(V, d) vectors of products as queries of ``similar``."""
        return getattr(self, self.vector_tables[0]).weight

    def candidate_vectors(self) -> torch.Tensor:
        """(V, d) vectors of products as candidates: score = query . candidate + bias."""
        return getattr(self, self.vector_tables[-1]).weight

    def candidate_bias(self) -> torch.Tensor | None:
        """(V,) bias a candidate adds to every score (a ``bias`` table's), or None."""
        bias = getattr(self, "bias", None)
        return bias.weight[:, 0] if bias is not None else None

    def global_offset(self) -> torch.Tensor | float:
        """What every score has added besides the query's and candidate's terms."""
        return getattr(self, "global_bias", 0.0)

    def exported(self) -> dict[str, torch.Tensor]:
        """Per-product columns of embeddings.parquet: name to (V, d) or (V,) values."""
        columns = {"vector": self.query_vectors()}
        if self.vector_tables[-1] != self.vector_tables[0]:
            columns["context"] = self.candidate_vectors()
        if self.candidate_bias() is not None:
            columns["bias"] = self.candidate_bias()
        return columns


@register
class MF(PairModel):
    """sigmoid(<e_a, e_b>) with one embedding table shared by both sides."""

    name = "mf"
    help = "matrix factorization, one shared table"
    vector_tables = ("embedding",)

    def __init__(self, num_products: int, dim: int, init_std: float | None):
        super().__init__(num_products, dim, init_std)
        self.embedding = embedding(num_products, dim, self._init)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.embedding(a) * self.embedding(b)).sum(-1)

    def layout(self) -> PairLayout:
        return PairLayout(self.embedding, self.embedding, None, None)


@register
class MFBias(MF):
    """sigmoid(<e_a, e_b> + bias_a + bias_b + global bias)."""

    name = "mf_bias"
    help = "matrix factorization with a bias per product and a global bias"

    def __init__(self, num_products: int, dim: int, init_std: float | None):
        super().__init__(num_products, dim, init_std)
        self.bias = embedding(num_products, 1, None)
        self.global_bias = nn.Parameter(torch.zeros(1))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        bias = self.bias(a).squeeze(-1) + self.bias(b).squeeze(-1) + self.global_bias
        return super().logits(a, b) + bias

    def layout(self) -> PairLayout:
        return PairLayout(self.embedding, self.embedding, self.bias, self.global_bias)


@register
class MFTwoTables(PairModel):
    """sigmoid(<left_a, right_b> + bias_a + bias_b + global bias): the anchor on the left.

    A second table for the other side, as word2vec's input and output
    vectors; a check that the protocol and the fused step take more than one
    shape, in a few lines.
    """

    name = "mf_two_tables"
    help = "matrix factorization with separate left (anchor) and right tables and biases"
    vector_tables = ("left", "right")

    def __init__(self, num_products: int, dim: int, init_std: float | None):
        super().__init__(num_products, dim, init_std)
        self.left = embedding(num_products, dim, self._init)
        self.right = embedding(num_products, dim, self._init)
        self.bias = embedding(num_products, 1, None)
        self.global_bias = nn.Parameter(torch.zeros(1))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        bias = self.bias(a).squeeze(-1) + self.bias(b).squeeze(-1) + self.global_bias
        return (self.left(a) * self.right(b)).sum(-1) + bias

    def layout(self) -> PairLayout:
        return PairLayout(self.left, self.right, self.bias, self.global_bias)


@register
class SkipGram(PairModel):
    """Skip-gram with negative sampling (word2vec) over random walks of the pair graph.

    Trained as <input[centre], output[context]>, with separate input and output
    tables (output zero at the start, as word2vec's); a product is its input
    vector, and a pair scores by the cosine (``scorer`` "cosine") or the dot
    product ("dot") of the two input vectors.
    """

    name = "skipgram"
    help = "skip-gram over random walks (run `python -m pipeline walks` first)"
    inputs = "walks"
    vector_tables = ("input",)
    scorer = "cosine"  # until configure() sets the run's (TrainConfig.scorer)

    def __init__(self, num_products: int, dim: int, init_std: float | None):
        super().__init__(num_products, dim, init_std)
        self.input = embedding(num_products, dim, self._init)
        self.output = embedding(num_products, dim, None)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.input(a) * self.output(b)).sum(-1)

    def layout(self) -> PairLayout:
        return PairLayout(self.input, self.output, None, None)

    def configure(self, config) -> None:
        self.scorer = config.scorer

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        left, right = self.input(a), self.input(b)
        if self.scorer == "cosine":
            return (torch.nn.functional.cosine_similarity(left, right, dim=-1) + 1) / 2
        return torch.sigmoid((left * right).sum(-1))


def build_model(
    kind: str,
    num_products: int,
    dim: int,
    init_std: float | None,
    seed: int,
    side: SideTables | None = None,
) -> PairModel:
    """A freshly initialised model of the registered ``kind``, seeded, with ``side`` information.

    ``init_std`` None leaves the tables zero, for weights about to be loaded.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = MODELS[kind](num_products, dim, init_std)
        if side is not None and side.sizes:
            model.add_side_info(side)
        return model
    finally:
        torch.random.set_rng_state(generator_state)
