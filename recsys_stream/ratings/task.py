"""Training on user-item ratings: the task of ``pipeline split-ratings``' files.

A curve point is the RMSE and MAE, on the original rating scale, of a fixed
sample of val ratings (all of them when fewer than ``--eval-sample``);
early stopping watches the RMSE. Predictions are clipped to the train
ratings' range before they are scored, as Surprise does. The run ends by
scoring the whole val set (and its users and items seen in train), beside
the global-mean baseline, and writes model.pt, embeddings.parquet (the item
vectors, with their keys and titles) and predictions.csv (a fixed sample of
val ratings with their predictions, for the report's figures).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.contracts import ITEMS, split_names, stamps
from pipeline.errors import PipelineError
from recsys_stream.core import runs
from recsys_stream.core.config import TrainConfig, batch_for
from recsys_stream.core.divergence import check_finite
from recsys_stream.core.modes import evaluating
from recsys_stream.core.runs import Run
from recsys_stream.core.tasks import TASKS, Task, check_memory, check_model
from recsys_stream.ratings.fused import make_rating_step
from recsys_stream.ratings.inputs import open_rating_data
from recsys_stream.ratings.models import RATING_MODELS, RatingModel, build_rating_model
from recsys_stream.ratings.stream import RatingStream

PREDICTION_SAMPLE = 20_000  # val ratings in predictions.csv
PREDICT_ROWS = 1 << 18  # ratings predicted at a time


@TASKS.register
class RatingTask(Task):
    """User-item ratings, scored by RMSE and MAE; see the module doc."""

    kind = "ratings"
    models = RATING_MODELS
    headline = ("rmse", "mae", "global_mean_rmse", "sigma", "best_epoch")
    metrics = ("rmse", "mae")
    monitor, higher_is_better = "rmse", False

    def __init__(self, data_dir, config: TrainConfig):
        check_model(self.kind, config, self.models)
        self.config = config
        self.data = data = open_rating_data(data_dir, config.fold)
        self.directory = data.directory
        self.batch_size = batch_for(config, data.train_rows)
        check_memory(
            data.users + data.items,
            replace(config, batch_size=self.batch_size),
            f"{data.users:,} users and {data.items:,} items",
        )
        self.identity = {"ratings_id": data.ratings_id, "split_id": data.split_id}
        self.default_name = config.model + (f"-fold{config.fold}" if config.fold else "")
        self.model = build_rating_model(
            config.model, data.users, data.items, data.low, data.high, config
        )
        self.model.read_train(data.train)
        self.stream = RatingStream(data.train, self.batch_size, config.seed, config.shuffle_groups)
        self.rows = self.samples = data.train_rows
        self.step = make_rating_step(self.model, config)
        self.probe = data.val.sample(config.eval_sample, config.seed)

    def score(self, step: int) -> dict[str, float | None]:
        predicted = predict(
            self.model, self.probe.user, self.probe.item, self.data.low, self.data.high
        )
        check_finite(float(predicted.sum()), step, self.config, "predictions")
        errors_now = errors(predicted, self.probe.rating)
        return {name: round(value, 5) for name, value in errors_now.items()}

    def finish(self, run: Run) -> dict:
        """Score the whole val set; write model.pt, embeddings.parquet and predictions.csv."""
        data, val, model = self.data, self.data.val, self.model
        predicted = predict(model, val.user, val.item, data.low, data.high)
        seen = val.seen
        mean = np.full(len(val.rating), data.mean, dtype=np.float32)
        shown = val.sample_rows(PREDICTION_SAMPLE, self.config.seed)
        runs.write_columns(
            run.path(runs.PREDICTIONS), {"rating": val.rating[shown], "predicted": predicted[shown]}
        )
        run.save_model(
            model, {"users": data.users, "items": data.items, "low": data.low, "high": data.high}
        )
        vectors = model.item_vectors().detach().numpy()
        runs.write_embeddings(
            {"vector": vectors},
            data.directory / ITEMS,
            "key",
            run.path(runs.EMBEDDINGS),
            self.identity,
        )
        return {
            **errors(predicted, val.rating),
            **{f"{k}_seen": v for k, v in errors(predicted[seen], val.rating[seen]).items()},
            **{f"{k}_cold": v for k, v in errors(predicted[~seen], val.rating[~seen]).items()},
            **{f"global_mean_{k}": v for k, v in errors(mean, val.rating).items()},
            **model.facts(),
            "rating_range": [data.low, data.high],
            "train_ratings": data.train_rows,
            "val_rows": len(val.rating),
            "val_seen_rows": int(seen.sum()),
            "val_cold_rows": int((~seen).sum()),
            "users": data.users,
            "items": data.items,
            "split_id": data.split_id,
            "fold": self.config.fold,
        }

    @classmethod
    def load(cls, run: Path, saved: dict, config: TrainConfig) -> RatingModel:
        require_ratings_of(run, saved)
        shape = (saved["users"], saved["items"], saved["low"], saved["high"])
        return loaded(build_rating_model(config.model, *shape, config, load=True), run, saved)

    @classmethod
    def links(cls, data: Path, config: TrainConfig) -> list[tuple[str, Path, str]]:
        fold = config.fold  # the plain split's train file, or fold K's (numbered from 1)
        train = split_names(max(fold, 2))[fold - 1][0] if fold else split_names(0)[0][0]
        return [
            ("ratings", data / ITEMS, "ratings_id"),
            ("split", _split_file(data, train), "split_id"),
        ]


def predict(
    model: RatingModel, user: np.ndarray, item: np.ndarray, low: float, high: float
) -> np.ndarray:
    """The model's ratings of (user, item), clipped to the train range, in eval mode."""
    out = np.empty(len(user), dtype=np.float32)
    with evaluating(model):
        for start in range(0, len(user), PREDICT_ROWS):
            rows = slice(start, start + PREDICT_ROWS)
            users = torch.from_numpy(user[rows].astype(np.int64))
            items = torch.from_numpy(item[rows].astype(np.int64))
            out[rows] = model(users, items).clamp(low, high).numpy()
    return out


def errors(predicted: np.ndarray, rating: np.ndarray) -> dict[str, float | None]:
    """RMSE and MAE of ``predicted`` against the true ``rating`` (None for no rows)."""
    if not len(predicted):
        return {"rmse": None, "mae": None}
    error = predicted.astype(np.float64) - rating
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def require_ratings_of(run: Path, saved: dict) -> None:
    """Refuse a model of ratings whose ratings_id differs from the dataset's
    items.parquet: ids would point at other users and items."""
    items = runs.dataset_of(run) / ITEMS
    if (
        not items.is_file()
        or stamps(pq.ParquetFile(items)).get("ratings_id") != saved["ratings_id"]
    ):
        raise PipelineError(f"{run / runs.MODEL}: trained on other ratings than {items}; retrain")


def loaded(model: torch.nn.Module, run: Path, saved: dict) -> torch.nn.Module:
    """``model`` with model.pt's weights (``saved``), in eval mode."""
    try:
        model.load_state_dict(saved["state_dict"], assign=True)
    except RuntimeError:
        raise PipelineError(
            f"{run / runs.MODEL}: made by another version of recsys-stream; retrain"
        ) from None
    return model.eval()


def _split_file(data: Path, train: str) -> Path:
    """``train`` when it exists, else any train file of the current split: a rerun of
    ``split-ratings`` in another layout (plain or another number of folds) deletes the
    files it does not make, so the split a fold run trained on may be gone."""
    if (data / train).is_file():
        return data / train
    return next(iter(sorted(data.glob("ratings-train*.parquet"))), data / train)
