"""Training sequence models (lstm, gru) on each user's ratings in time order.

Two tasks on the files of ``pipeline sequences``
(:mod:`recsys_stream.sequences.inputs`):

- :class:`SequenceRatingTask` (``--task rating``): learns from
  sequences-train.parquet to predict each rating from the ratings before it,
  and is scored, by RMSE and MAE on the original scale, on the val ratings
  of the time split (sequences-val.parquet: each val rating after the
  ratings before it, the user's earlier val ratings included, as a deployed
  model would know them). Predictions are clipped to the train range.
- :class:`NextItemTask` (``--task next-item``): learns from
  next-train.parquet to predict each next item, and is scored leave-one-out
  by HR@10 and NDCG@10 ranked against every item
  (:mod:`recsys_stream.sequences.ranking`): on the val target for learning-curve
  points and early stopping, on the test target (after the val target) at
  the end, beside popularity and co-occurrence counted on the same train
  histories (:mod:`recsys_stream.sequences.baselines`). A network reads at
  most the last ``max_length`` items of a history, as in training.

Curve points score a fixed sample of ``--eval-sample`` val runs or users;
the end scores every val rating, and for the next item the same sample of
users (all of them when fewer), since ranking every item for every user of
a large catalogue costs users x items x state.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.contracts import ITEMS, NEXT_TRAIN, SEQUENCES_TRAIN, ranges, split_names
from pipeline.errors import PipelineError
from recsys_stream.core import runs
from recsys_stream.core.config import TrainConfig, batch_for
from recsys_stream.core.divergence import check_finite
from recsys_stream.core.modes import evaluating
from recsys_stream.core.runs import Run
from recsys_stream.core.steps import TermsStep, choose_step
from recsys_stream.core.tasks import TASKS, Task, available_memory, check_memory, check_model
from recsys_stream.ratings.task import (
    PREDICTION_SAMPLE,
    RatingTask,
    errors,
    loaded,
    require_ratings_of,
)
from recsys_stream.sequences import baselines, ranking
from recsys_stream.sequences.inputs import eval_rows, open_sequence_data
from recsys_stream.sequences.models import SEQUENCE_MODELS, SequenceModel, build_sequence_model
from recsys_stream.sequences.stream import SequenceStream, padded

EVAL_ROWS = 256  # runs a network reads at a time when scoring
SCORE_CELLS = 1 << 23  # users x items scored at a time when ranking


class SequenceTask(Task):
    """What both tasks share: the inputs, model, stream and step."""

    models = SEQUENCE_MODELS
    next_item: bool
    # The recurrent layers' and the softmax's matrix products sum in an order that
    # depends on the thread count (last bits differ between one and two threads).
    thread_invariant = False

    def __init__(self, data_dir, config: TrainConfig):
        check_model(self.kind, config, self.models)
        self.config = config
        self.data = data = open_sequence_data(data_dir, self.next_item)
        self.directory = data.directory
        self.batch_size = batch_for(config, data.rows)
        config = replace(config, batch_size=self.batch_size)  # for the memory checks
        check_memory(data.items * (2 if self.next_item else 1), config, f"{data.items:,} items")
        if self.next_item and not config.negatives:
            _check_softmax(data.items, data.max_length, config)
        self.identity = {"ratings_id": data.ratings_id, "sequences_id": data.sequences_id}
        self.model = build_sequence_model(
            config.model, data.items, data.low, data.high, data.mean, data.max_length, config
        )
        self.stream = SequenceStream(
            data.train,
            self.batch_size,
            config.seed,
            config.shuffle_groups,
            padding=self.model.padding,
            width=data.max_length + self.next_item,
            next_item=self.next_item,
            positions_per_run=data.positions / data.rows - self.next_item,
        )
        self.rows = data.rows
        self.samples = data.positions - (data.rows if self.next_item else 0)
        self.step = choose_step(self.model, config, {"autograd": lambda: TermsStep(self.model)})

    def save(self, run: Run) -> None:
        """model.pt and embeddings.parquet (the input vectors of the items)."""
        data = self.data
        shape = {"items": data.items, "low": data.low, "high": data.high, "mean": data.mean}
        shape["max_length"] = data.max_length
        run.save_model(self.model, shape)
        runs.write_embeddings(
            {"vector": self.model.item_vectors().detach().numpy()},
            data.directory / ITEMS,
            "key",
            run.path(runs.EMBEDDINGS),
            self.identity,
        )

    def facts(self) -> dict:
        data = self.data
        return {
            "items": data.items,
            "train_runs": data.rows,
            "train_positions": data.positions,
            "max_length": data.max_length,
            "sequences_id": data.sequences_id,
        }

    @classmethod
    def load(cls, run: Path, saved: dict, config: TrainConfig) -> SequenceModel:
        require_ratings_of(run, saved)
        shape = (saved["items"], saved["low"], saved["high"], saved["mean"], saved["max_length"])
        return loaded(build_sequence_model(config.model, *shape, config, load=True), run, saved)

    @classmethod
    def links(cls, data: Path, config: TrainConfig) -> list[tuple[str, Path, str]]:
        return [
            ("ratings", data / ITEMS, "ratings_id"),
            ("split", data / split_names(0)[0][0], "split_id"),
            (
                "sequences",
                data / (NEXT_TRAIN if cls.next_item else SEQUENCES_TRAIN),
                "sequences_id",
            ),
        ]


@TASKS.register
class SequenceRatingTask(SequenceTask):
    """Each next rating, scored by RMSE and MAE; see the module doc."""

    kind = "sequences"
    headline = RatingTask.headline
    next_item = False
    metrics = ("rmse", "mae")
    monitor, higher_is_better = "rmse", False

    def __init__(self, data_dir, config: TrainConfig):
        super().__init__(data_dir, config)
        self.default_name = config.model
        columns = ["items", "ratings", "targets"]
        probe = list(eval_rows(self.data.evaluation, columns, config.eval_sample, config.seed))
        self.probe = pa.concat_tables(probe) if probe else None

    def score(self, step: int) -> dict[str, float | None]:
        if self.probe is None:
            return {"rmse": None, "mae": None}
        predicted, rating = predict_targets(self.model, self.probe, self.data.low, self.data.high)
        check_finite(float(predicted.sum()), step, self.config, "predictions")
        return {name: round(value, 5) for name, value in errors(predicted, rating).items()}

    def finish(self, run: Run) -> dict:
        """Score every val rating; write model.pt, embeddings.parquet and predictions.csv."""
        data, columns = self.data, ["items", "ratings", "targets"]
        scored = [
            predict_targets(self.model, table, data.low, data.high)
            for table in eval_rows(data.evaluation, columns)
        ]
        predicted = np.concatenate([p for p, _ in scored]) if scored else np.empty(0, np.float32)
        rating = np.concatenate([r for _, r in scored]) if scored else np.empty(0, np.float32)
        shown = np.random.default_rng(self.config.seed).permutation(len(rating))
        shown = np.sort(shown[:PREDICTION_SAMPLE])
        runs.write_columns(
            run.path(runs.PREDICTIONS), {"rating": rating[shown], "predicted": predicted[shown]}
        )
        self.save(run)
        mean = np.full(len(rating), data.mean, dtype=np.float32)
        return {
            **errors(predicted, rating),
            **{f"global_mean_{k}": v for k, v in errors(mean, rating).items()},
            "rating_range": [data.low, data.high],
            "val_rows": len(rating),
            **self.facts(),
        }


@TASKS.register
class NextItemTask(SequenceTask):
    """Each next item, scored leave-one-out by HR@10 and NDCG@10; see the module doc."""

    kind = "next-item"
    headline = (
        "test_hr10",
        "test_ndcg10",
        "popularity_test_hr10",
        "cooccurrence_test_hr10",
        "best_epoch",
    )
    next_item = True
    metrics = ("hr10", "ndcg10")
    monitor, higher_is_better = "ndcg10", True

    def __init__(self, data_dir, config: TrainConfig):
        super().__init__(data_dir, config)
        self.default_name = f"{config.model}-next"
        users = list(eval_rows(self.data.evaluation, ["items", "target"], config.eval_sample, 0))
        self.users = pa.concat_tables(users) if users else None

    def score(self, step: int) -> dict[str, float | None]:
        if self.users is None:
            return {"hr10": None, "ndcg10": None}
        hit, ndcg = rank(self.network_scores, self.users, "val", self.data)
        return {"hr10": round(float(hit.mean()), 5), "ndcg10": round(float(ndcg.mean()), 5)}

    def network_scores(self, recent: np.ndarray, length: np.ndarray) -> np.ndarray:
        """(N, items): the network's scores of every item after each user's ``recent`` items."""
        return next_scores(self.model, recent, length)

    def finish(self, run: Run) -> dict:
        """Rank the val and test targets of the sampled users by the network and the
        baselines; write model.pt and embeddings.parquet."""
        self.save(run)
        summary = {"eval_users": 0 if self.users is None else self.users.num_rows}
        if self.users is None:
            return {**summary, **self.facts()}
        data = self.data
        parquet = pq.ParquetFile(data.evaluation)
        popularity = baselines.Popularity(data.items, parquet)
        scorers = {
            "": self.network_scores,
            "popularity_": popularity.scores,
            "cooccurrence_": baselines.CoOccurrence(data.items, parquet, popularity).scores,
        }
        for prefix, scorer in scorers.items():
            for protocol in ("val", "test"):
                hit, ndcg = rank(scorer, self.users, protocol, data)
                summary[f"{prefix}{protocol}_hr10"] = float(hit.mean())
                summary[f"{prefix}{protocol}_ndcg10"] = float(ndcg.mean())
        return {**summary, **self.facts()}


def _check_softmax(items: int, max_length: int, config: TrainConfig) -> None:
    """Refuse, in one line, a full softmax whose logits (and their gradients) of a batch
    cannot fit in memory: the catalogue wants a sampled softmax."""
    needed = config.batch_size * max_length * items * 4 * 3
    available = available_memory()
    if available and needed > available / 2:
        raise PipelineError(
            f"a softmax over {items:,} items needs about {needed / 2**30:.1f} GiB a batch of "
            f"{config.batch_size}; use a sampled softmax (--negatives 1024) or a smaller "
            "--batch-size"
        )


def predict_targets(model: SequenceModel, table: pa.Table, low: float, high: float):
    """(predicted, true) ratings of the target positions of val runs, clipped predictions."""
    found = []
    with evaluating(model):
        for start in range(0, table.num_rows, EVAL_ROWS):
            rows = table.slice(start, EVAL_ROWS)
            items, length = padded(rows.column("items"), model.padding)
            ratings, _ = padded(rows.column("ratings"), 0.0)
            targets = rows.column("targets").to_numpy()
            position = np.arange(items.shape[1])
            scored = (position >= (length - targets)[:, None]) & (position < length[:, None])
            predicted = model.predict_ratings(
                torch.from_numpy(items.astype(np.int64)), torch.from_numpy(ratings)
            )
            found.append((predicted.clamp(low, high).numpy()[scored], ratings[scored]))
    return np.concatenate([p for p, _ in found]), np.concatenate([r for _, r in found])


def next_scores(model: SequenceModel, recent: np.ndarray, length: np.ndarray) -> np.ndarray:
    """(N, items): every item's score as the next after each row of ``recent`` items."""
    items = torch.from_numpy(np.where(recent < 0, model.padding, recent).astype(np.int64))
    with evaluating(model):
        states = model.states(items, torch.zeros(items.shape))
        last = states[torch.arange(len(length)), torch.from_numpy(length.astype(np.int64)) - 1]
        return model.scores(last).numpy()


def rank(scorer, users: pa.Table, protocol: str, data, leave_out: bool = True):
    """Per user, HR@10 and NDCG@10 of the ``protocol``'s target ("val": the last item of
    ``items``, after the ones before it; "test": ``target``, after all of ``items``)
    under ``scorer(recent, length)``, the user's history left out (``leave_out``; kept
    in, RecBole's full-sort protocol for sequence models, when false). ``recent``: the
    last ``data.max_length`` items of each history, padded with -1."""
    lists = users.column("items").combine_chunks()
    offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()
    flat = lists.flatten().to_numpy()
    if protocol == "val":
        target, end = flat[offsets[1:] - 1], offsets[1:] - 1
    else:
        target, end = users.column("target").to_numpy(), offsets[1:]
    begin = offsets[:-1]
    hits, ndcgs = [], []
    chunk = max(1, SCORE_CELLS // data.items)
    for first in range(0, len(target), chunk):
        rows = slice(first, first + chunk)
        start, stop, own = begin[rows], end[rows], target[rows]
        length = np.minimum(stop - start, data.max_length)
        position = np.arange(int(length.max()))
        index = np.minimum((stop - length)[:, None] + position, len(flat) - 1)
        recent = np.where(position < length[:, None], flat[index], -1)
        scores = scorer(recent, length).astype(np.float64)
        if leave_out:
            seen, seen_offsets = ranges(start, stop)
            owner = np.repeat(np.arange(len(start)), np.diff(seen_offsets))
            ranking.leave_out(scores, owner, flat[seen], own)
        hit, ndcg = ranking.hit_and_ndcg(*ranking.ranks(scores, own))
        hits.append(hit)
        ndcgs.append(ndcg)
    return np.concatenate(hits), np.concatenate(ndcgs)
