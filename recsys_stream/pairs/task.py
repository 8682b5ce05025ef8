"""Training on product pairs: the task of ``train.parquet`` (and skip-gram's walks.parquet).

Reads ``train.parquet`` as a stream, ``val.parquet`` (about 10 bytes a row)
and the vocabulary size, checked together (:mod:`recsys_stream.pairs.inputs`).
A curve point is the AUC of a fixed sample of val pairs; the run ends by
smoothing the vectors and scoring the whole val set (ROC, precision-recall,
the popularity baseline). Peak memory is the embedding tables with their
Adam moments, about V x (dim + 1) x 12 bytes for MF with bias, plus the
validation arrays and bounded buffers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from pipeline.contracts import TRAIN, VOCAB, WALKS, check_lineage, parse_features
from pipeline.errors import PipelineError
from pipeline.side_info import side_info
from recsys_stream.core import runs
from recsys_stream.core.config import TrainConfig, batch_for
from recsys_stream.core.divergence import check_finite
from recsys_stream.core.runs import Run
from recsys_stream.core.tasks import TASKS, Task, check_memory, check_model
from recsys_stream.pairs import evaluate, smoothing
from recsys_stream.pairs.inputs import TrainingData, open_training_data
from recsys_stream.pairs.models import MODELS, PairModel, SideTables, build_model
from recsys_stream.pairs.sampling import NegativeSampler
from recsys_stream.pairs.steps import make_step
from recsys_stream.pairs.stream import PairStream
from recsys_stream.pairs.walk_stream import WalkStream, expected_pairs, walk_frequency, walks_of


@TASKS.register
class PairTask(Task):
    """Product pairs with sampled negatives, scored by AUC; see the module doc."""

    kind = "pairs"
    models = MODELS
    headline = ("auc_all", "auc_seen", "pr_auc", "popularity_auc")
    metrics = ("auc_all", "auc_seen")
    monitor, higher_is_better = "auc_all", True

    def __init__(self, data_dir, config: TrainConfig):
        check_model(self.kind, config, self.models)
        self.config = config
        self.data = data = open_training_data(data_dir)
        self.directory = data.directory
        self.stream, self.rows = _stream(config, data)
        self.batch_size = self.stream.batch_size
        check_memory(
            data.vocab_size,
            replace(config, batch_size=self.batch_size),
            f"{data.vocab_size:,} products",
        )
        self.identity = {
            "vocab_sha256": runs.file_sha256(data.vocab),
            "pairs_id": data.pairs_id,
            "split_id": data.split_id,
        }
        self.default_name = f"{config.model}-{config.labels}"
        self.model = build_model(
            config.model,
            data.vocab_size,
            config.dim,
            config.init_std,
            config.seed,
            _side(config, data),
        )
        self.model.configure(config)
        if self.model.inputs == "walks":  # skip-gram's run also depends on the walks it read
            self.identity["walks_id"] = walks_of(data.directory / WALKS)[2]["walks_id"]
        self.samples = self.rows * (1 + config.negatives)
        self.step = make_step(self.model, config, data.max_weight)
        self.probe = data.val.sample(config.eval_sample, config.seed)

    def score(self, step: int) -> dict[str, float | None]:
        score = evaluate.scores(self.model, self.probe.src, self.probe.dst)
        check_finite(float(score.sum()), step, self.config, "scores")
        auc_all, auc_seen = evaluate.auc_all_and_seen(self.probe, score)
        return {
            "auc_all": None if auc_all is None else round(auc_all, 5),
            "auc_seen": None if auc_seen is None else round(auc_seen, 5),
        }

    def finish(self, run: Run) -> dict:
        """Smooth the vectors, score the whole validation set and write the final files.

        The AUC of the unsmoothed vectors goes to the summary too, to show what
        smoothing adds; everything else (scores, curves, model.pt, embeddings)
        is of the smoothed model, the one ``similar`` loads.
        """
        model, data, config, val = self.model, self.data, self.config, self.data.val
        unsmoothed_auc = evaluate.auc(val.label, evaluate.scores(model, val.src, val.dst))
        for table in model.product_tables().values():
            smoothing.smooth_table(table, data.train, data.degree, config.smoothing)
        score = evaluate.scores(model, val.src, val.dst)
        popular = evaluate.popularity_scores(data.degree, val)
        seen = val.seen
        runs.write_columns(run.path(runs.PR), evaluate.precision_recall_table(val.label, score))
        runs.write_columns(run.path(runs.ROC), evaluate.roc_points(val.label, score))
        runs.write_columns(run.path(runs.POPULARITY_ROC), evaluate.roc_points(val.label, popular))
        run.save_model(model, {"vocab_size": data.vocab_size, "side_sizes": side_sizes(model)})
        lineage = {"pairs_id": data.pairs_id, "split_id": data.split_id}
        runs.write_embeddings(
            model.exported(), data.vocab, "asin", run.path(runs.EMBEDDINGS), lineage
        )
        return {
            "auc_all": evaluate.auc(val.label, score),
            "auc_seen": evaluate.auc(val.label[seen], score[seen]),
            "auc_cold": evaluate.auc(val.label[~seen], score[~seen]),
            "auc_all_unsmoothed": unsmoothed_auc,
            "pr_auc": evaluate.pr_auc(val.label, score),
            "pr_auc_seen": evaluate.pr_auc(val.label[seen], score[seen]),
            "popularity_auc": evaluate.auc(val.label, popular),
            "popularity_auc_seen": evaluate.auc(val.label[seen], popular[seen]),
            "popularity_auc_cold": evaluate.auc(val.label[~seen], popular[~seen]),
            "negative_protocol": data.negative_protocol,
            "val_rows": len(val.label),
            "val_seen_rows": int(seen.sum()),
            "val_cold_rows": int((~seen).sum()),
            "vocab_size": data.vocab_size,
            "split_id": data.split_id,
        }

    @classmethod
    def load(cls, run: Path, saved: dict, config: TrainConfig) -> PairModel:
        """Refuses a model whose vocabulary hash differs from the dataset's vocab.parquet:
        ids would point at the wrong products."""
        vocab = runs.dataset_of(run) / VOCAB
        if not vocab.is_file() or runs.file_sha256(vocab) != saved.get("vocab_sha256"):
            raise PipelineError(
                f"{run / runs.MODEL}: trained on another vocabulary than {vocab}; retrain"
            )
        side = SideTables(saved.get("side_sizes", {}))
        model = build_model(config.model, saved["vocab_size"], config.dim, None, config.seed, side)
        model.configure(config)
        model.load_state_dict(saved["state_dict"], assign=True)  # the saved tensors, not copies
        return model.eval()

    @classmethod
    def links(cls, data: Path, config: TrainConfig) -> list[tuple[str, Path, str]]:
        links = [("pairs", data / VOCAB, "pairs_id"), ("split", data / TRAIN, "split_id")]
        if MODELS[config.model].inputs == "walks":
            links.append(("walks", data / WALKS, "walks_id"))
        return links


def side_sizes(model: PairModel) -> dict[str, int]:
    """The codes each side-information feature of ``model`` uses (to rebuild it)."""
    tables = model.tables()
    name = model.vector_tables[0]
    return {f: tables[f"{name}.features.{f}"].num_embeddings for f in model.side_features}


def _side(config: TrainConfig, data: TrainingData) -> SideTables | None:
    """The side information ``--side-info`` names, coded from products.parquet, with what
    each product's own row weighs (``--side-own-weight`` for each of its train pairs);
    or None."""
    features = parse_features(config.side_info)
    if not features:
        return None
    side = side_info(data.directory, features)
    codes = {name: torch.from_numpy(values) for name, values in side.codes.items()}
    own_weight = 1 + config.side_own_weight * torch.from_numpy(data.degree).double()
    return SideTables(side.sizes, codes, own_weight.float())


def _stream(config: TrainConfig, data: TrainingData):
    """The batches the model learns from, and the positive pairs an epoch holds.

    Pair models read train.parquet; skip-gram reads walks.parquet (made from
    the same split), its negatives drawn by walk frequency. The batch size is
    ``--batch-size``, or chosen from the epoch's pairs (``config.batch_for``).
    """
    if MODELS[config.model].inputs == "walks":
        path = data.directory / WALKS
        count, length, _ = walks_of(path)  # refuses a missing or malformed file
        check_lineage("split_id", data.train, path)
        rows = expected_pairs(count, length, config.window)
        frequency = walk_frequency(path, data.vocab_size)
        stream = WalkStream(
            path,
            batch_for(config, rows),
            NegativeSampler(frequency, config.negative_power),
            config.negatives,
            config.window,
            config.seed,
            config.shuffle_groups,
            config.shared_negatives,
        )
        return stream, rows
    stream = PairStream(
        data.train,
        batch_for(config, data.train_rows),
        NegativeSampler(data.degree, config.negative_power),
        config.negatives,
        config.seed,
        config.shuffle_groups,
        config.shared_negatives,
    )
    return stream, data.train_rows
