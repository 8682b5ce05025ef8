"""Rating models: plain torch modules predicting a user's rating of an item.

The protocol (:class:`RatingModel`) mirrors the pair models': a model is an
``nn.Module`` built from the user and item counts, the rating range and the
run's :class:`~recsys_stream.core.config.TrainConfig`; ``forward(user, item)`` is
the predicted rating on the original scale; ``tables()`` names its sparse
embedding tables (the lazy Adam updates only the rows a batch touches) and
``dense()`` the rest; ``terms(batch)`` is the objective on a
:class:`~recsys_stream.ratings.stream.RatingBatch` as the mean data loss and the
penalty. Adding a model is a class and ``@register``:
the trainer, the CLI, ``recommend`` and the contract tests
(tests/model_contract.py) find it in :data:`RATING_MODELS`.

- ``mf``: <p_user, q_item> ("PyTorch for Recommenders 101").
- ``mf_bias``: sigmoid(<p, q> + b_user + b_item) scaled to the rating range
  widened by 0.5 on both sides (fastai's collab model and its y_range).
- ``pmf``: probabilistic MF as a MAP estimate: ratings scaled to [0, 1] are
  Gaussian around sigmoid(<p, q>) with a learned noise sigma; Gaussian priors
  on the vectors (``--prior-std``), a HalfNormal prior on sigma
  (``--sigma-prior``).
- ``embedding_net``: user and item embeddings with dropout, concatenated,
  hidden ReLU layers with dropout, a sigmoid over the widened range
  (EmbeddingNet; "101"'s dense network is ``--hidden 64 --dropout 0
  --embedding-dropout 0``, its one-hidden-layer case).

The penalty is L2 on the rows a batch touches (``--l2`` times their mean
squared norm), never on whole tables, so a step's cost does not grow with
the catalogue; PMF's penalty is its priors instead.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from recsys_stream.core.config import hidden_sizes
from recsys_stream.core.model import Model
from recsys_stream.core.registry import Registry
from recsys_stream.pairs.models import embedding
from recsys_stream.ratings.fused import RatingLayout

RATING_MODELS: Registry[type[RatingModel]] = Registry("rating model")
register = RATING_MODELS.register
Y_RANGE_MARGIN = 0.5  # fastai widens y_range beyond the ratings so both ends stay reachable


class RatingModel(Model):
    """The protocol of a rating model; see the module doc."""

    sparse_tables: ClassVar[tuple[str, ...]] = ("user", "item")
    bias_column: ClassVar[bool] = False  # rows end with a bias, initialised to 0

    def __init__(self, users: int, items: int, low: float, high: float, config, load=False):
        """``load``: leave the tables zero, for a state about to be loaded."""
        super().__init__()
        self.low, self.high, self.l2 = low, high, config.l2
        self.generator = torch.Generator().manual_seed(config.seed)
        self.init_std = None if load else config.init_std
        width = config.dim + self.bias_column
        self.user = self.table(users, width)
        self.item = self.table(items, width)
        if self.bias_column:
            with torch.no_grad():
                self.user.weight[:, -1] = 0
                self.item.weight[:, -1] = 0

    def table(self, rows: int, width: int, std: float | None = None) -> nn.Embedding:
        """A trainable table, normal(0, ``std`` or --init-std), or zero when loading."""
        std = self.init_std if std is None else std
        init = None if self.init_std is None else self._normal(std)
        return embedding(rows, width, init)

    def _normal(self, std: float):
        def fill(weight: torch.Tensor) -> None:
            with torch.no_grad():
                weight.normal_(0, std, generator=self.generator) if std else weight.zero_()

        return fill

    def scaled(self, logit: torch.Tensor) -> torch.Tensor:
        """A sigmoid stretched over the rating range widened by Y_RANGE_MARGIN."""
        low, high = self.low - Y_RANGE_MARGIN, self.high + Y_RANGE_MARGIN
        return torch.sigmoid(logit) * (high - low) + low

    def terms(self, batch):
        """(mean squared error, L2 penalty on the touched rows) of a batch."""
        user, item, rating = batch.user, batch.item, batch.rating
        data = (self(user, item) - rating).square().mean()
        if not self.l2:
            return data, torch.zeros(())
        ids = {"user": user, "item": item}
        penalty = sum(
            self.tables()[name](ids[name.split("_")[0]]).square().sum(-1).mean()
            for name in self.sparse_tables
        )
        return data, self.l2 * penalty

    def tables(self) -> dict[str, nn.Embedding]:
        return {name: getattr(self, name) for name in self.sparse_tables}

    def item_vectors(self) -> torch.Tensor:
        """(items, dim): what ``similar``, the embeddings file and the PCA figure use."""
        return self.item.weight

    def facts(self) -> dict[str, float]:
        """Learned values a run's summary reports (PMF's sigma); none by default."""
        return {}


@register
class MF(RatingModel):
    name = "mf"
    help = "dot product of user and item vectors"

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user(user) * self.item(item)).sum(-1)

    def layout(self) -> RatingLayout:
        return RatingLayout(self.user, self.item)


@register
class MFBias(RatingModel):
    """fastai's EmbeddingDotBias: sigmoid(<p, q> + b_user + b_item) over the widened range.

    Each row holds the vector then the bias (width dim + 1), so a step reads
    and updates one row per user and per item: the same model and objective
    as separate bias tables (the penalty sums the row's squares either way),
    at half the optimizer's work.
    """

    name = "mf_bias"
    help = "dot product plus user and item biases, through a sigmoid over the rating range"
    bias_column = True

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        p, q = self.user(user), self.item(item)
        return self.scaled((p[:, :-1] * q[:, :-1]).sum(-1) + p[:, -1] + q[:, -1])

    def layout(self) -> RatingLayout:
        low, high = self.low - Y_RANGE_MARGIN, self.high + Y_RANGE_MARGIN
        return RatingLayout(self.user, self.item, biased=True, low=low, high=high)

    def item_vectors(self) -> torch.Tensor:
        return self.item.weight[:, :-1]


@register
class PMF(RatingModel):
    name = "pmf"
    help = "probabilistic MF: MAP with Gaussian priors and a learned noise sigma"

    init = 0.1  # not --init-std: near 0, <p, q> has no gradient to grow from, and the
    # priors hold it there (the vectors collapse and every prediction is the middle)

    def __init__(self, users, items, low, high, config, load=False):
        super().__init__(users, items, low, high, config, load)
        self.prior_std, self.sigma_prior = config.prior_std, config.sigma_prior
        if not load:
            for table in (self.user, self.item):
                self._normal(self.init)(table.weight)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.2)))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        unit = torch.sigmoid((self.user(user) * self.item(item)).sum(-1))
        return unit * (self.high - self.low) + self.low

    def terms(self, batch):
        """The negative log posterior per rating, up to constants, on ratings scaled to [0, 1].

        The data term is the Gaussian likelihood with the learned sigma; the
        priors on the touched vectors and sigma's HalfNormal prior (spread
        over the batch) are the penalty.
        """
        user, item, rating = batch.user, batch.item, batch.rating
        error = (self(user, item) - rating) / (self.high - self.low)
        sigma = self.log_sigma.exp()
        data = (error.square() / (2 * sigma**2) + self.log_sigma).mean()
        vectors = self.user(user).square().sum(-1) + self.item(item).square().sum(-1)
        prior = (vectors / (2 * self.prior_std**2)).mean()
        return data, prior + sigma**2 / (2 * self.sigma_prior**2) / len(rating)

    def facts(self) -> dict[str, float]:
        """sigma on the original rating scale."""
        return {"sigma": self.log_sigma.exp().item() * (self.high - self.low)}


@register
class EmbeddingNet(RatingModel):
    name = "embedding_net"
    help = "embeddings with dropout, hidden ReLU layers with dropout, a sigmoid over the range"

    def __init__(self, users, items, low, high, config, load=False):
        super().__init__(users, items, low, high, config, load)
        layers: list[nn.Module] = [nn.Dropout(config.embedding_dropout)]
        width = 2 * config.dim
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            for size in hidden_sizes(config.hidden):
                layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(config.dropout)]
                width = size
            layers.append(nn.Linear(width, 1))
        self.network = nn.Sequential(*layers)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.user(user), self.item(item)], dim=-1)
        return self.scaled(self.network(joined)[:, 0])


def build_rating_model(
    name: str, users: int, items: int, low: float, high: float, config, load: bool = False
) -> RatingModel:
    return RATING_MODELS[name](users, items, low, high, config, load)
