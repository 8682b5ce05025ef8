"""The items a user would rate highest, among those they have not rated, under a ratings run.

Exact top-k over every item: the run's model predicts the user's rating of
each item (in chunks of bounded memory), the items the user rated anywhere
in ``ratings.parquet`` (train and val alike) are left out, and the best k
come back with their keys, titles and predicted ratings. A next-item run of
a sequence model (``--task next-item``) instead scores every item as the
one to follow the user's latest items (its last ``max_length`` ratings in
time order), and the score it gives is the softmax's logit. The user is named
by the raw file's key (MovieLens' userId, Amazon's reviewerID), found by a
scan of users.parquet; their ratings by a scan of ratings.parquet, a row
group at a time, so memory does not grow with the file. A run whose stages
were rerun since it trained is refused (:mod:`recsys_stream.core.lineage`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline.contracts import ITEMS, RATINGS, USERS
from pipeline.errors import PipelineError
from recsys_stream.core.runs import MODEL, dataset_of
from recsys_stream.core.trained import load_run
from recsys_stream.ratings.task import predict
from recsys_stream.sequences.task import next_scores

DEFAULT_K = 10
ITEMS_PER_CHUNK = 1 << 20


@dataclass
class Recommendation:
    key: str  # the item's key in the raw file
    title: str | None
    predicted: float  # the predicted rating, clipped to the train ratings' range (next item: logit)


@dataclass
class Recommendations:
    user: str
    rated: int  # items the user rated, all left out
    items: list[Recommendation] = field(default_factory=list)
    score: str = "rating"  # what ``predicted`` holds: "rating", or "logit" for the next item

    def to_json(self) -> dict:
        return asdict(self)


def recommend(run: str | os.PathLike, user: str, k: int = DEFAULT_K) -> Recommendations:
    """The ``k`` items ``user`` has not rated with the highest predicted ratings, best first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PipelineError(f"-k must be at least 1, got {k!r}")
    trained = load_run(run, current=True)
    model, config, saved = trained
    if trained.kind == "pairs":
        raise PipelineError(f"{Path(run) / MODEL}: a model of product pairs, not of ratings")
    if trained.kind == "sequences":
        raise PipelineError(
            f"{run}: {config.model} trained to rate the items of a history in order; "
            "recommend ranks with a rating model or a --task next-item run"
        )
    data = dataset_of(Path(run))
    user_id = _user_id(data / USERS, user)
    history = _history(data / RATINGS, user_id)
    rated = np.unique(history)
    if trained.kind == "next-item":
        recent = history[-saved["max_length"] :]
        scores = next_scores(model, recent[None, :], np.array([len(recent)]))[0]
        score = "logit"
    else:
        score = "rating"
        scores = _predicted(model, user_id, saved)
    scores[rated] = -np.inf
    k = min(k, len(scores) - len(rated))
    top = torch.topk(torch.from_numpy(scores), k).indices.numpy() if k > 0 else np.empty(0, int)
    items = pq.read_table(data / ITEMS, columns=["key", "title"])
    keys = items.column("key").take(pa.array(top)).to_pylist()
    titles = items.column("title").take(pa.array(top)).to_pylist()
    found = [
        Recommendation(key, title, round(float(scores[item]), 4))
        for key, title, item in zip(keys, titles, top)
    ]
    return Recommendations(user, len(rated), found, score)


def _predicted(model, user_id: int, saved: dict) -> np.ndarray:
    """A rating model's predicted rating of every item by the user."""
    scores = np.empty(saved["items"], dtype=np.float32)
    for start in range(0, len(scores), ITEMS_PER_CHUNK):
        items = np.arange(start, min(start + ITEMS_PER_CHUNK, len(scores)))
        users = np.full(len(items), user_id)
        scores[start : start + len(items)] = predict(
            model, users, items, saved["low"], saved["high"]
        )
    return scores


def _user_id(path: Path, key: str) -> int:
    """The id of the user whose raw key is ``key``; one line when there is none."""
    users = pq.ParquetFile(path)
    start = 0
    for group in range(users.num_row_groups):
        keys = users.read_row_group(group, columns=["key"]).column("key")
        hits = pc.index(keys, key).as_py()
        if hits >= 0:
            return start + hits
        start += len(keys)
    raise PipelineError(f"unknown user {key!r}: not in {path}")


def _history(path: Path, user: int) -> np.ndarray:
    """The items ``user`` rated in ratings.parquet, in time order (then by item), read a
    row group at a time."""
    ratings = pq.ParquetFile(path)
    found = []
    for group in range(ratings.num_row_groups):
        statistics = ratings.metadata.row_group(group).column(0).statistics
        known = statistics is not None and statistics.has_min_max
        if known and not statistics.min <= user <= statistics.max:
            continue
        table = ratings.read_row_group(group, columns=["user", "item", "timestamp"])
        found.append(table.filter(pc.equal(table.column("user"), user)).drop_columns("user"))
    if not found:
        return np.empty(0, np.int64)
    mine = pa.concat_tables(found)
    item, stamp = mine.column("item").to_numpy(), mine.column("timestamp").to_numpy()
    return item[np.lexsort((item, stamp))].astype(np.int64)
