"""Sequence models: a recurrent network over each user's items in time order.

"PyTorch for Recommenders 101" ends with this model: an item embedding, an
LSTM, a linear head. Here it is one ``nn.Module`` for two tasks:

- ``rating`` (``--task rating``): at position t the network reads item t and
  the rating of item t - 1 (centred and scaled, with a flag that says whether
  there is one), so its state holds the history and the head predicts the
  rating of item t: a sigmoid over the rating range widened by 0.5, as
  ``mf_bias``. The loss is the MSE over the scored positions.
- ``next-item`` (``--task next-item``): the network reads items only, and its
  state at position t scores every item as the next one through an output
  table (a vector and a bias an item). The loss is the cross-entropy of a
  softmax over all items, or with ``--negatives N`` a sampled softmax: the
  target against N items drawn uniformly once a batch (a drawn item equal to
  the target is left out), for catalogues too large for a full softmax.

The protocol is the rating models': ``tables()`` names the sparse tables
(the lazy Adam updates the rows a batch touches), ``dense()`` the rest, and
``terms(batch)`` is the objective on a
:class:`~recsys_stream.sequences.stream.SequenceBatch`. Padded positions come after
every real one and the network is causal, so they never change the loss.
``--model lstm`` and ``--model gru`` are the two recurrent cells, ``--model
sasrec`` self-attention over the run (SASRec, Kang and McAuley 2018); a new
network is a subclass and ``@register``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional

from recsys_stream.core.config import hidden_sizes
from recsys_stream.core.model import Model
from recsys_stream.core.registry import Registry
from recsys_stream.pairs.models import embedding
from recsys_stream.ratings.models import Y_RANGE_MARGIN
from recsys_stream.sequences.stream import SequenceBatch

SEQUENCE_MODELS: Registry[type[SequenceModel]] = Registry("sequence model")
register = SEQUENCE_MODELS.register


class SequenceModel(Model):
    """Item embedding (and the previous rating), a causal network, a head; see the module doc."""

    cell: ClassVar[type[nn.RNNBase]]

    def __init__(
        self, items: int, low: float, high: float, mean: float, max_length: int, config, load=False
    ):
        """``items``: the catalogue (id ``items`` pads); ``low``, ``high``, ``mean``: of the
        train ratings; ``max_length``: of the sequence files' runs (a next-item run holds
        one more). ``load``: leave the tables zero, for a state about to be loaded."""
        super().__init__()
        self.items, self.low, self.high, self.mean = items, low, high, mean
        self.max_length = max_length
        self.next_item = config.task == "next-item"
        self.l2, self.negatives = config.l2, config.negatives
        hidden = hidden_sizes(config.hidden)[0]
        generator = torch.Generator().manual_seed(config.seed)

        def normal(std):
            def fill(weight):
                with torch.no_grad():
                    weight.normal_(0, std, generator=generator)

            return None if load else fill

        self.item = embedding(items + 1, config.dim, normal(config.init_std))
        with torch.random.fork_rng():  # the cell's and head's initialisation, seeded
            torch.manual_seed(config.seed)
            inputs = config.dim + (0 if self.next_item else 2)
            self.network = self.make_network(inputs, hidden, config)
            self.dropout = nn.Dropout(config.dropout)
            self.embedding_dropout = nn.Dropout(config.embedding_dropout)
            if not self.next_item:
                self.head = nn.Linear(hidden, 1)
        if self.next_item:
            self.output = embedding(items, hidden + 1, normal(hidden**-0.5))
            if not load:
                with torch.no_grad():
                    self.output.weight[:, -1] = 0  # the bias column

    def make_network(self, inputs: int, hidden: int, config) -> nn.Module:
        """The causal network: ``network(x)[0]`` is (B, T, hidden), position t reading x up to t."""
        return self.cell(inputs, hidden, batch_first=True)

    @property
    def padding(self) -> int:
        return self.items

    def states(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden): the network's state after reading each position."""
        inputs = self.embedding_dropout(self.item(items))
        if not self.next_item:  # the previous rating, centred and scaled, and its flag
            previous = functional.pad(ratings[:, :-1], (1, 0))
            scale = max(self.high - self.low, 1e-6)
            flag = torch.zeros_like(ratings)
            flag[:, 1:] = 1
            features = torch.stack([(previous - self.mean) / scale * flag, flag], dim=-1)
            inputs = torch.cat([inputs, features], dim=-1)
        return self.dropout(self.network(inputs)[0])

    def predict_ratings(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """(B, T): each position's predicted rating, from the item and the history before it."""
        logit = self.head(self.states(items, ratings))[..., 0]
        low, high = self.low - Y_RANGE_MARGIN, self.high + Y_RANGE_MARGIN
        return torch.sigmoid(logit) * (high - low) + low

    def scores(self, state: torch.Tensor) -> torch.Tensor:
        """(N, items): every item's score as the next one after each of N states."""
        return state @ self.output.weight[:, :-1].T + self.output.weight[:, -1]

    def terms(self, batch: SequenceBatch):
        """(data loss summed over the scored positions over ``batch.norm``, L2 penalty on
        the touched item rows)."""
        if self.next_item:
            state = self.states(batch.items, batch.ratings)[:, :-1][batch.scored[:, :-1]]
            target = batch.items[:, 1:][batch.scored[:, :-1]]
            data = self._cross_entropy(state, target) / batch.norm
        else:
            predicted = self.predict_ratings(batch.items, batch.ratings)[batch.scored]
            data = (predicted - batch.ratings[batch.scored]).square().sum() / batch.norm
        if not self.l2:
            return data, torch.zeros(())
        rows = self.item(batch.items[batch.scored])
        return data, self.l2 * rows.square().sum(-1).mean()

    def _cross_entropy(self, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.negatives:
            return functional.cross_entropy(self.scores(state), target, reduction="sum")
        drawn = torch.randint(0, self.items, (self.negatives,))
        candidates = self.output(torch.cat([target, drawn]))  # (N + negatives, hidden + 1)
        positive = (state * candidates[: len(target), :-1]).sum(-1) + candidates[: len(target), -1]
        sampled = state @ candidates[len(target) :, :-1].T + candidates[len(target) :, -1]
        sampled = sampled.masked_fill(drawn[None, :] == target[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], sampled], dim=1)
        positive = torch.zeros(len(target), dtype=torch.long)
        return functional.cross_entropy(logits, positive, reduction="sum")

    def tables(self) -> dict[str, nn.Embedding]:
        """The sparse tables: the item inputs, and the output table under a sampled softmax
        (a full softmax's gradient reaches every row: there it is dense)."""
        sparse = {"item": self.item}
        if self.next_item and self.negatives:
            sparse["output"] = self.output
        return sparse

    def item_vectors(self) -> torch.Tensor:
        """(items, dim): the input vectors, for ``similar`` and the embeddings file."""
        return self.item.weight[:-1]

    def facts(self) -> dict[str, float]:
        return {}


@register
class LSTM(SequenceModel):
    name = "lstm"
    help = "an LSTM over each user's items in time order (with the ratings before each)"
    cell = nn.LSTM


@register
class GRU(SequenceModel):
    name = "gru"
    help = "a GRU over each user's items in time order (with the ratings before each)"
    cell = nn.GRU


class SelfAttention(nn.Module):
    """SASRec's network behind the recurrent cells' interface: ``forward(x)`` is
    ``(states, None)``, each position's state reading only the positions up to it.

    RecBole's SASRec (1.2.1, ``sasrec.py`` and ``TransformerEncoder`` in
    ``model/layers.py``), but for its output: the inputs, projected to the
    state's size, plus a learned vector for each position (counted from the
    run's start, as RecBole counts them in its window of the latest items; a
    next-rating val run, longer than any train run, gives its later positions
    the last one), a layer norm and dropout, then ``blocks`` post-norm
    Transformer blocks (causal self-attention with two heads, one for an odd
    state size; a feed-forward layer four times as wide, GELU; ``dropout`` in
    both and on the attention weights), every weight drawn from N(0, 0.02),
    biases zero. On RecBole's split of MovieLens 100K (issue 30) at dropout
    0.5, it scored val NDCG@10 0.118 after 25 of 40 epochs where the first
    version (pre-norm blocks with one head and a last layer norm, PyTorch's
    initialisation, no norm on the inputs) scored 0.097. RecBole also scores
    with its input table (tied); here the output table, with a bias an item,
    stays apart: tied, val NDCG@10 stayed below 0.06 after 10 epochs. Right
    padding never reaches a real position: it comes after every one, and the
    mask is causal.
    """

    def __init__(self, inputs: int, hidden: int, positions: int, dropout: float, blocks: int = 2):
        super().__init__()
        self.project = nn.Linear(inputs, hidden) if inputs != hidden else nn.Identity()
        self.position = nn.Embedding(positions, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        heads = 2 if hidden % 2 == 0 else 1
        block = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout, "gelu", layer_norm_eps=1e-12, batch_first=True
        )
        self.blocks = nn.TransformerEncoder(block, blocks, enable_nested_tensor=False)
        for module in self.modules():  # after the blocks' copies, so each draws its own
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.MultiheadAttention):  # its query, key and value
                nn.init.normal_(module.in_proj_weight, 0.0, 0.02)
                nn.init.zeros_(module.in_proj_bias)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        width = inputs.shape[1]
        at = torch.arange(width).clamp(max=self.position.num_embeddings - 1)
        x = self.dropout(self.norm(self.project(inputs) + self.position(at)))
        causal = nn.Transformer.generate_square_subsequent_mask(width, dtype=x.dtype)
        return self.blocks(x, mask=causal, is_causal=True), None


@register
class SASRec(SequenceModel):
    name = "sasrec"
    help = (
        "self-attention over each user's items in time order (SASRec; with the ratings before each)"
    )

    def make_network(self, inputs: int, hidden: int, config) -> nn.Module:
        """Two blocks, ``--dropout`` inside them too; positions for the longest train run."""
        return SelfAttention(inputs, hidden, self.max_length + 1, config.dropout)


def build_sequence_model(
    name: str,
    items: int,
    low: float,
    high: float,
    mean: float,
    max_length: int,
    config,
    load: bool = False,
) -> SequenceModel:
    return SEQUENCE_MODELS[name](items, low, high, mean, max_length, config, load)
