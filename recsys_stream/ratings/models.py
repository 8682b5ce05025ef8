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
- ``svdpp``: ``mf_bias`` with SVD++'s implicit feedback (Koren, "Factorization
  meets the neighborhood", KDD 2008): the user's vector plus
  |N(u)|^-1/2 sum of y_j over the items j the user rated in train.

The penalty is L2 on the rows a batch touches (``--l2`` times their mean
squared norm), never on whole tables, so a step's cost does not grow with
the catalogue; PMF's penalty is its priors instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
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

    def ranking(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """(users' rows, items' rows, items' bias or None) such that a user's predicted
        rating rises with ``user_row . item_row + bias[item]``: what ``recommend --all``
        searches. None for a model that rates through a network."""
        return None

    def read_train(self, train: Path) -> None:
        """Read what the model needs of the whole train file, once, before training
        (``svdpp``: each user's rated items); the others need nothing."""

    def own_step(self, config):
        """The step of a model not trained by gradients (``bpmf``: Gibbs sweeps,
        :class:`~recsys_stream.ratings.bayes.GibbsStep`); None for the others, which
        train by the kernel, fused or autograd step."""
        return None


@register
class MF(RatingModel):
    name = "mf"
    help = "dot product of user and item vectors"

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user(user) * self.item(item)).sum(-1)

    def layout(self) -> RatingLayout:
        return RatingLayout(self.user, self.item)

    def ranking(self):
        return self.user.weight, self.item.weight, None


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

    def ranking(self):
        return self.user.weight[:, :-1], self.item.weight[:, :-1], self.item.weight[:, -1]


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

    def ranking(self):
        return self.user.weight, self.item.weight, None


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


@register
class SVDpp(RatingModel):
    """``mf_bias`` whose user vector adds |N(u)|^-1/2 sum_j y_j over the items j the user
    rated in train (SVD++'s implicit feedback; Surprise's SVDpp, here through the sigmoid
    over the widened range).

    The items rated, by user, are buffers (``history``, ``offsets``: each user's
    slice of it; 4 bytes a train rating), read from the train file by
    :meth:`read_train` and saved with the model, so a loaded model predicts
    without the train file. A batch sums the y rows of its distinct users'
    histories once per user. The penalty adds, to ``mf_bias``'s touched rows,
    the squared norms of the rating's user's y rows: Koren's SGD shrinks every
    y_j of N(u) at each rating. Trained by autograd: the sum over a history has
    no closed-form step here.
    """

    name = "svdpp"
    help = "mf_bias plus SVD++'s implicit feedback: the items the user rated in train"
    sparse_tables = ("user", "item", "implicit")
    bias_column = True

    def __init__(self, users, items, low, high, config, load=False):
        super().__init__(users, items, low, high, config, load)
        self.implicit = self.table(items, config.dim)
        self.register_buffer("history", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("offsets", torch.zeros(users + 1, dtype=torch.int64))

    def read_train(self, train: Path) -> None:
        table = pq.read_table(train, columns=["user", "item"])
        user, item = (table.column(n).to_numpy() for n in ("user", "item"))
        order = np.lexsort((item, user))
        counts = np.bincount(user, minlength=len(self.offsets) - 1)
        self.history = torch.from_numpy(item[order].astype(np.int32))
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A saved model's history has its own length: take its buffers' shapes."""
        self.history = torch.empty_like(state_dict[prefix + "history"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def implicit_terms(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each of ``user``: |N(u)|^-1/2 sum_j y_j, and sum_j |y_j|^2."""
        distinct, back = torch.unique(user, return_inverse=True)
        start, end = self.offsets[distinct], self.offsets[distinct + 1]
        count = end - start
        owner = torch.repeat_interleave(torch.arange(len(distinct)), count)
        first = torch.cumsum(count, 0) - count
        position = torch.arange(int(count.sum())) - first[owner] + start[owner]
        rows = self.implicit(self.history[position].long())
        scale = count.clamp(min=1).to(rows.dtype)
        summed = torch.zeros(len(distinct), rows.shape[1]).index_add(0, owner, rows)
        squares = torch.zeros(len(distinct)).index_add(0, owner, rows.square().sum(-1))
        return (summed * scale.rsqrt()[:, None])[back], squares[back]

    def rated(self, user: torch.Tensor, item: torch.Tensor):
        """The ratings of (user, item), and each one's squared norms of its user, item
        and y rows (the penalty's terms)."""
        p, q = self.user(user), self.item(item)
        implicit, y_squares = self.implicit_terms(user)
        logit = ((p[:, :-1] + implicit) * q[:, :-1]).sum(-1) + p[:, -1] + q[:, -1]
        return self.scaled(logit), p.square().sum(-1) + q.square().sum(-1) + y_squares

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.rated(user, item)[0]

    def terms(self, batch):
        """(mean squared error, L2 penalty on the touched user, item and y rows)."""
        predicted, squares = self.rated(batch.user, batch.item)
        return (predicted - batch.rating).square().mean(), self.l2 * squares.mean()

    def item_vectors(self) -> torch.Tensor:
        return self.item.weight[:, :-1]

    def ranking(self):
        users = torch.arange(len(self.user.weight)).split(1 << 16)
        implicit = torch.cat([self.implicit_terms(chunk)[0] for chunk in users])
        return (
            self.user.weight[:, :-1] + implicit,
            self.item.weight[:, :-1],
            self.item.weight[:, -1],
        )


# Bayesian MF by Gibbs sampling (bpmf, bpmf_svdpp) registers from its own module,
# which builds on RatingModel above.
from recsys_stream.ratings import bayes  # noqa: E402, F401


def build_rating_model(
    name: str, users: int, items: int, low: float, high: float, config, load: bool = False
) -> RatingModel:
    return RATING_MODELS[name](users, items, low, high, config, load)
