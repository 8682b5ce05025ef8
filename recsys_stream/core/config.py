"""The run configuration: one frozen dataclass, the one place for every default.

Each field carries its help text and the kinds of task it acts on; a kind of
task and a model may have defaults of their own over the fields'
(``defaults_of``, at the end). The command line builds its options from the
fields (``python -m recsys_stream train --help`` lists them with all their
defaults), and the config is saved in the run and its checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from pipeline import cli
from pipeline.cli import MAX_SEED
from pipeline.contracts import parse_features
from pipeline.errors import PipelineError

# The kinds of task (tasks.task_kind): a dataset's files decide, and on ratings
# a sequence model makes it "sequences", or "next-item" with --task next-item.
KINDS = ("pairs", "ratings", "sequences", "next-item")
RATED = ("ratings", "sequences", "next-item")
LABELS = ("binary", "continuous")
SCHEDULES = ("constant", "cosine", "cosine-restarts", "cosine-cyclic")
STEPS = ("auto", "kernel", "fused", "autograd")
SEQUENCE_TASKS = ("rating", "next-item")  # what a sequence model predicts (--task)
SCORERS = ("dot", "cosine")
# --batch-size 0 (the default on product pairs): batches of AUTO_BATCH_MAX, halved
# until an epoch has AUTO_BATCH_STEPS steps. At 2,048 a small catalog trains for
# too few steps: on the real 2018 Magazine sample (35,744 train pairs) MF with
# bias took 90 steps in five epochs and scored an AUC of 0.645, below
# popularity's 0.843; at 32 (5,585 steps) 0.964. On the 2014 Digital Music
# sample (204,914 pairs) 0.954 at 2,048, 0.973 at 256 (800 steps an epoch) and
# at 128. Train files of 1.6M pairs and more keep 2,048 (issue 30); the demo's
# 100k catalog (531,155 train pairs) takes 512: MF with bias 0.9700 there, against
# 0.9674 at 2,048.
AUTO_BATCH_MAX = 2048
AUTO_BATCH_STEPS = 800


def option(default, help: str, kinds: tuple[str, ...] = KINDS, **limits):
    """A config field with its help text, the kinds of task it acts on, and the range
    ``__post_init__`` checks.

    ``kinds``: those of ``KINDS`` whose training reads it (the report lists a
    dataset's defaults by them).
    ``limits``: ``low`` (inclusive), ``above`` (exclusive), ``high``
    (inclusive), ``choices``; floats must also be finite. ``parse``: the
    command line's type for it, when not the default's type (``--seed``'s).
    """
    return field(default=default, metadata={"help": help, "kinds": kinds, **limits})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in the run and its checkpoints."""

    model: str = option(
        "mf_bias",
        "model to train: on pairs (recsys_stream/pairs/models.py), on ratings "
        "(recsys_stream/ratings/models.py) or on each user's ratings in time order "
        "(recsys_stream/sequences/models.py)",
    )
    task: str = option(
        "rating",
        "lstm, gru and sasrec: predict each next rating, or the next item (leave-one-out, ranked "
        "against every item)",
        kinds=("sequences", "next-item"),
        choices=SEQUENCE_TASKS,
    )
    labels: str = option(
        "continuous",
        "binary: BCE on 1/0; continuous: MSE of the sigmoid against targets that carry the "
        "pair weight (recsys_stream/core/losses.py)",
        kinds=("pairs",),
        choices=LABELS,
    )
    epochs: int = option(5, "passes over train.parquet", low=1)
    dim: int = option(32, "embedding size", low=1)
    negatives: int = option(
        5,
        "negatives sampled per positive pair; next item: 0 for a softmax over all items, N for "
        "a sampled softmax against N items drawn once a batch",
        kinds=("pairs", "next-item"),
        low=0,
    )
    shared_negatives: int = option(
        0,
        "0: each pair gets its own k negatives; N > 0: N negatives drawn once a batch are shared "
        "by all its pairs, each at weight k / N (the same objective in expectation, scored as one "
        "matrix product: far fewer rows to read and update)",
        kinds=("pairs",),
        low=0,
    )
    batch_size: int = option(
        0,
        "positive pairs per step (a step sees batch x (1 + negatives) samples); 0: the largest "
        f"power of two up to {AUTO_BATCH_MAX:,} that gives an epoch at least {AUTO_BATCH_STEPS} "
        "steps",
        low=0,
    )
    # lr, l2, negative_power and smoothing were tuned together on the 100k
    # synthetic catalog under both val-negative protocols (docs/performance.md:
    # the tuning grid).
    lr: float = option(0.02, "Adam learning rate at the start of each epoch", above=0)
    l2: float = option(3e-3, "L2 penalty on the embedding rows a batch touches", low=0)
    init_std: float = option(
        0.01, "std of the normal initialisation (N(0, 1) at dim 128 saturates the sigmoid)", above=0
    )
    schedule: str = option(
        "cosine-restarts",
        "cosine annealing restarted each epoch (the reference's intent), once over all epochs, "
        "restarted every --cycle epochs (cosine-cyclic), or constant",
        choices=SCHEDULES,
    )
    cycle: int = option(2, "epochs per cosine cycle of --schedule cosine-cyclic", low=1)
    patience: int = option(
        0,
        "stop after this many epochs without a better val score (RMSE for ratings, AUC for "
        "pairs) and keep the best epoch's weights; 0: train every epoch",
        low=0,
    )
    negative_power: float = option(
        0.25,
        "negatives are drawn with probability ~ train degree ** power",
        kinds=("pairs",),
        low=0,
    )
    smoothing: float = option(
        0.9,
        "share of the mean of a product's train neighbours in its final vector",
        kinds=("pairs",),
        low=0,
        high=1,
    )
    window: int = option(
        5,
        "skip-gram: context window on either side (reduced at random per centre)",
        kinds=("pairs",),
        low=1,
    )
    # cosine by measurement: 0.9476 and 0.9430 against the dot product's 0.9363
    # and 0.9330 under the two protocols (bench_walks, 100k catalog).
    scorer: str = option(
        "cosine",
        "skip-gram: a val pair's score, the cosine or dot product of the input vectors",
        kinds=("pairs",),
        choices=SCORERS,
    )
    side_info: str = option(
        "",
        "comma-separated features (brand, category, price) whose vectors each product's vector "
        "averages with its own, from products.parquet; products without train pairs get "
        "vectors from them",
        kinds=("pairs",),
    )
    # A prior from the features, worth 8 train pairs each: measured on the real 2018
    # Magazine and 2014 Digital Music samples and the 20k synthetic catalog (docs/
    # training.md, "Side information"). With the plain mean (0) side information lowered
    # the seen rows of MF with bias on both real samples (0.9691 and 0.9810 against
    # 0.9709 and 0.9826 without it); at 0.125 they are level (0.9708, 0.9826); at 2
    # the synthetic catalog, whose category is its planted cluster, lost 0.003.
    side_own_weight: float = option(
        0.125,
        "side information: what a product's own row weighs in its vector for each of its "
        "train pairs, over a base of 1, where each feature weighs 1 (0: the plain mean)",
        kinds=("pairs",),
        low=0,
    )
    fold: int = option(
        0,
        "ratings: train on fold K of `pipeline split-ratings --folds` (0: the plain split)",
        kinds=("ratings",),
        low=0,
    )
    hidden: str = option(
        "100",
        'embedding_net: hidden layer sizes, comma-separated ("" for none); lstm, gru, sasrec: the '
        "size of the state",
        kinds=RATED,
    )
    dropout: float = option(
        0.25,
        "embedding_net: dropout after each hidden layer; sequence models: on the state (sasrec: "
        "inside its blocks too)",
        kinds=RATED,
        low=0,
        high=0.99,
    )
    embedding_dropout: float = option(
        0.02,
        "embedding_net: dropout on the joined embeddings; sequence models: on the item embeddings",
        kinds=RATED,
        low=0,
        high=0.99,
    )
    prior_std: float = option(
        3.0, "pmf: std of the Gaussian prior on the vectors", kinds=("ratings",), above=0
    )
    sigma_prior: float = option(
        1.0,
        "pmf: scale of the HalfNormal prior on the noise sigma (ratings scaled to [0, 1])",
        kinds=("ratings",),
        above=0,
    )
    step: str = option(
        "auto",
        "kernel (the compiled kernel: closed-form gradients and Adam in one pass, for pair and "
        "rating layouts), fused (the same in torch operations: the reference), autograd (any "
        "model), or auto: kernel when the model has a layout",
        choices=STEPS,
    )
    shuffle_groups: int = option(4, "row groups mixed in the shuffle buffer", low=1)
    eval_every: int = option(
        0, "steps between learning-curve points; 0: ten points an epoch, whatever its length", low=0
    )
    eval_sample: int = option(100_000, "validation rows scored for a learning-curve point", low=1)
    workers: int = option(0, "DataLoader worker processes (0: read in the training process)", low=0)
    seed: int = option(
        42, "seed of initialisation, shuffling and sampling", low=0, high=MAX_SEED, parse=cli.seed
    )

    def __post_init__(self) -> None:
        """Each field's own checks; those that need the models (a known --model, --task
        and --hidden for a sequence model) are ``core.tasks.check_model_options``'."""
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        parse_features(self.side_info)
        try:
            sizes = hidden_sizes(self.hidden)
        except ValueError:
            sizes = [0]
        if any(size < 1 for size in sizes):
            raise PipelineError(f"--hidden must be sizes like 100,50, got {self.hidden!r}")

    @classmethod
    def defaults(cls, kind: str, **values) -> TrainConfig:
        """A ``kind`` of task's config for ``values["model"]`` (the field's default model when
        not given): the fields' defaults, then the kind's and the model's (``defaults_of``),
        then ``values``, so an option given always wins."""
        model = values.get("model", cls.model)
        return cls(**{**defaults_of(kind, model), **values})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def _check(f: dataclasses.Field, value) -> None:
    """One option's type and range, refused in one line."""
    flag, limits = f"--{f.name.replace('_', '-')}", f.metadata
    kind = type(f.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PipelineError(f"{flag} must be a {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise PipelineError(f"{flag} must be a finite number, got {value}")
    if "choices" in limits and value not in limits["choices"]:
        raise PipelineError(f"{flag} must be one of {', '.join(limits['choices'])}, got {value!r}")
    if "low" in limits and value < limits["low"]:
        raise PipelineError(f"{flag} must be at least {limits['low']}, got {value}")
    if "above" in limits and value <= limits["above"]:
        raise PipelineError(f"{flag} must be above {limits['above']}, got {value}")
    if "high" in limits and value > limits["high"]:
        raise PipelineError(f"{flag} must be at most {limits['high']}, got {value}")


# Where a ratings dataset's defaults differ from the fields' (those of product
# pairs), from mf_bias's grid on MovieLens 100K (tests/bench/bench_movielens.py;
# docs/performance.md): lr 0.005 and l2 0.1 scored 0.9032 over the five folds,
# the grid's best point on fold 1 (lr 0.0025, l2 0.05) 0.9037. Batches of
# 4,096 train at twice the speed for 0.004 more RMSE there.
RATING_DEFAULTS = {
    "epochs": 20,
    "batch_size": 1024,
    "lr": 0.005,
    "l2": 0.1,
    "schedule": "cosine",
}

# Sequence models (lstm, gru) on each user's ratings in time order, from
# grids on MovieLens 100K's time split (tests/bench/bench_sequences.py;
# docs/performance.md): on the next rating lr 0.001, no dropout on the states and 0.2
# on the item vectors (val RMSE 0.942 for lstm, 0.939 for gru), both cells
# choosing that point. On the next item the grid picked lr 0.01 and dropout
# 0.2 for lstm (val NDCG@10 0.118), lr 0.04 and 0.4 for gru (0.137); the
# default, lr 0.02 and dropout 0.4 (both with 0.2 on the item vectors), lies
# between them: it was both cells' pick before batches held runs of one
# length. A step is a batch of runs of up to --max-length ratings; 20
# epochs, as longer overfit there.
SEQUENCE_DEFAULTS = {
    "epochs": 20,
    "batch_size": 64,
    "dim": 32,
    "hidden": "64",
    "lr": 0.001,
    "l2": 0.0,
    "init_std": 0.1,
    "dropout": 0.0,
    "embedding_dropout": 0.2,
    "schedule": "cosine",
    "eval_sample": 5_000,
}
NEXT_ITEM_DEFAULTS = {
    **SEQUENCE_DEFAULTS,
    "task": "next-item",
    "negatives": 0,
    "lr": 0.02,
    "dropout": 0.4,
}

# Skip-gram over random walks of the train pairs, as bench_walks measures it
# against gensim (docs/training.md, Graph embeddings): word2vec's loss (binary labels)
# and negative power, one epoch, raw vectors (no smoothing), and 32 negatives
# shared by each batch of 8,192 pairs: 84 s at 100k products (make demo),
# where the fields' defaults (five epochs, k negatives a pair) ran past 25 min. With
# side information the plain mean: an own row's weight per pair narrowed its loss on
# the real samples' seen rows but cost 0.007 AUC on the synthetic catalog.
SKIPGRAM_DEFAULTS = {
    "labels": "binary",
    "epochs": 1,
    "negative_power": 0.75,
    "smoothing": 0.0,
    "shared_negatives": 32,
    "batch_size": 8192,
    "side_own_weight": 0.0,
}

# MF without a bias on product pairs (issue 30, docs/performance.md "On the
# real samples"). It has no global bias, so the share of positives must come
# from its vectors: with k negatives a pair that share is 1 / (1 + k), where an
# unknown pair scores sigmoid(0) = 0.5. One negative a pair puts the share at
# 0.5, and half the smoothing keeps more of each product's own vector. On the
# real 2018 Magazine sample, 2014 Digital Music sample and the 100k synthetic
# catalog (binary labels, seed 42, all rows): 0.797 / 0.877 / 0.932 at the
# fields' defaults, 0.845 / 0.917 / 0.941 at these.
PLAIN_MF_DEFAULTS = {
    "negatives": 1,
    "smoothing": 0.5,
}

# The Gibbs-sampled rating models (bpmf, bpmf_svdpp: recsys_stream/ratings/bayes.py),
# whose epoch is one sweep over the train ratings. On MovieLens 100K
# (tests/bench/bench_movielens.py, docs/ratings.md), 200 sweeps, dim 10 and 20
# tie on fold 1 (bpmf_svdpp 0.8964 and 0.8965, bpmf 0.9003 and 0.9002); over
# the five folds bpmf scored 0.8938 at 10 and 0.8946 at 20, at twice the
# time, and dim 10 is the default. Their batches only count the epoch's ratings, so
# they are large: one curve point an epoch where the train file holds fewer
# than 131,072 ratings, instead of ten (each one averages every kept sample).
BAYES_DEFAULTS = {
    "epochs": 200,
    "dim": 10,
    "batch_size": 1 << 17,
}

# SASRec on the next item (sasrec), tuned on RecBole's split of MovieLens 100K by val
# NDCG@10 (tests/bench/bench_recbole.py, docs/sequences.md "Against RecBole"): RecBole's
# SASRec sizes (items and state in 64 dimensions), no dropout on the item vectors and
# 0.5 in the blocks, batches of 32 runs for 40 epochs at lr 0.003 (a batch of 64 runs
# leaves 38 steps an epoch). Test HR@10 and NDCG@10 (history left out, mean of two
# seeds) 0.1845 and 0.0975; dropout 0.2 or 20 epochs scored lower on val.
SASREC_DEFAULTS = {
    "dim": 64,
    "hidden": "64",
    "embedding_dropout": 0.0,
    "dropout": 0.5,
    "batch_size": 32,
    "lr": 0.003,
    "epochs": 40,
}

# The defaults of each kind of task (tasks.task_kind), over the fields'.
KIND_DEFAULTS = {
    "pairs": {},
    "ratings": RATING_DEFAULTS,
    "sequences": SEQUENCE_DEFAULTS,
    "next-item": NEXT_ITEM_DEFAULTS,
}
# The defaults of a model on a kind of task, over the kind's (mf is a model of
# product pairs and of ratings: its defaults here are those of pairs).
MODEL_DEFAULTS = {
    "pairs": {
        "skipgram": SKIPGRAM_DEFAULTS,
        "mf": PLAIN_MF_DEFAULTS,
    },
    "ratings": {
        "bpmf": BAYES_DEFAULTS,
        "bpmf_svdpp": BAYES_DEFAULTS,
    },
    "next-item": {
        "sasrec": SASREC_DEFAULTS,
    },
}


def batch_for(config: TrainConfig, rows: int) -> int:
    """The batch size a run of ``config`` over an epoch of ``rows`` rows trains with:
    ``--batch-size``, or for 0 the largest power of two up to AUTO_BATCH_MAX that gives
    the epoch at least AUTO_BATCH_STEPS steps (at least 1)."""
    if config.batch_size:
        return config.batch_size
    batch = AUTO_BATCH_MAX
    while batch > 1 and rows < batch * AUTO_BATCH_STEPS:
        batch //= 2
    return batch


def hidden_sizes(text: str) -> list[int]:
    """``--hidden``'s comma-separated layer sizes ("" for none)."""
    return [int(size) for size in text.split(",") if size.strip()]


def defaults_of(kind: str, model: str) -> dict:
    """Where ``model``'s defaults on a ``kind`` of task differ from the fields': the kind's,
    then the model's over them."""
    return {**KIND_DEFAULTS[kind], **MODEL_DEFAULTS.get(kind, {}).get(model, {})}
