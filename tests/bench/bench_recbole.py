"""The next item against RecBole's own code, on RecBole's own split of MovieLens 100K.

    python tests/bench/bench_recbole.py [--methods Pop,GRU4Rec,SASRec,gru,lstm,sasrec]
        [--seeds 2020,2021] [--epochs 300] [--settings JSON] [--folder NAME]

RecBole 1.2.1's standard sequential protocol on the ml-100k its wheel ships:
every rating an interaction, each user's interactions ordered by time (ties
in file order), the last one the test target, the one before it the val
target; MAX_ITEM_LIST_LENGTH 50, cross-entropy over all items, batches of
256, RecBole's trainer with early stopping on val NDCG@10 (patience 10).

1. RecBole builds the split (its ``Config``, ``create_dataset`` and
   ``data_preparation``), and :func:`export` reads each user's train
   sequence, val item and test item back from its train, valid and test
   datasets. :func:`write_inter` writes them as an ``.inter`` file whose
   timestamps are each interaction's position in RecBole's order, so
   ``pipeline ratings``, ``split-ratings --by time`` and ``pipeline
   sequences`` make the same leave-one-out (tests/test_recbole_split.py
   checks it target by target and transition by transition).
2. RecBole's Pop, GRU4Rec and SASRec train with its trainer; the project's
   gru, lstm and sasrec with its own (their next-item defaults: 20 epochs,
   sasrec's 40; no early stopping). Each method's grid point is picked by val
   NDCG@10, then run at each seed. ``--folder`` lets runs at once keep apart splits.
3. Every method's val and test targets are ranked by one ranker, the
   project's (:func:`recsys_stream.sequences.task.rank`), against all 1,682
   items, twice: with the user's history left out ("masked", the project's
   protocol) and without (RecBole's: its full-sort evaluation masks the
   history of general models such as Pop, never of sequential ones, whose
   ``FullSortEvalDataLoader`` batches carry no history). RecBole's own
   evaluator's test figures are printed beside, as a check of the ranker.

``train_seconds`` is time in training steps only (RecBole's
``_train_epoch``, the project's steps), without the val scoring of each
epoch; ``fit_seconds`` is the whole training with it. Everything runs on one
thread. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from bench_movielens import points
from common import ROOT

from pipeline.ratings import ratings
from pipeline.sequences import sequences
from pipeline.split_ratings import split_ratings
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run
from recsys_stream.sequences.inputs import open_sequence_data
from recsys_stream.sequences.task import next_scores, rank

WORK = ROOT / "data" / "bench" / "recbole"
SEEDS = (2020, 2021)
PROTOCOL = {
    "use_gpu": False,
    "state": "WARNING",
    "show_progress": False,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"},
    "MAX_ITEM_LIST_LENGTH": 50,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "train_batch_size": 256,
    "eval_batch_size": 256,
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "stopping_step": 10,
}  # the models' own settings: items in 64 dimensions (GRU4Rec's state 128, SASRec's 64)
# RecBole's learning rate (its default, 0.001, and 0.003) at its models' own dropouts
# (properties/model/*.yaml); gru and lstm at the next-item defaults but the learning rate.
GRIDS = {
    "Pop": {"epochs": [1]},  # counts the train items; more epochs count them again
    "GRU4Rec": {"learning_rate": [0.001, 0.003]},
    "SASRec": {"learning_rate": [0.001, 0.003]},
    "gru": {"lr": [0.01, 0.02, 0.04]},
    "lstm": {"lr": [0.01, 0.02, 0.04]},
    # around its defaults (SASREC_DEFAULTS: RecBole's SASRec sizes, batches of 32 runs,
    # dropout 0.5 in the blocks, 40 epochs), which this grid chose (docs/sequences.md)
    "sasrec": {"dropout": [0.2, 0.5], "epochs": [20, 40]},
}
OURS = ("gru", "lstm", "sasrec")


def recbole_ready() -> types.ModuleType:
    """Import RecBole 1.2.1 on this environment, which it predates.

    Its Config aliases NumPy's ``np.float_`` and kin, gone in NumPy 2; its
    trainer imports TensorBoard's writer (tensorboard, grpcio and protobuf
    for scalars nobody reads here: a writer that drops them stands in); and
    it reloads its own best checkpoint with ``torch.load``, which torch 2.6
    made refuse pickled objects (the file is the run's own).
    """
    np.float_, np.complex_, np.unicode_ = np.float64, np.complex128, np.str_

    class Dropped:
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    if importlib.util.find_spec("tensorboard") is None:
        writer = types.ModuleType("torch.utils.tensorboard")
        writer.SummaryWriter = Dropped
        sys.modules["torch.utils.tensorboard"] = writer
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    import recbole

    return recbole


def recbole_config(model: str, seed: int, work: Path, **settings):
    """RecBole's Config of ``model`` under the protocol, on its bundled ml-100k, with its
    checkpoints in ``work``; ``settings`` over the protocol's."""
    data = Path(recbole_ready().__file__).parent / "dataset_example"
    from recbole.config import Config

    extra = {"data_path": str(data), "checkpoint_dir": str(work), "seed": seed}
    argv, sys.argv = sys.argv, sys.argv[:1]  # Config reads --key=value from the command line
    try:
        return Config(model=model, dataset="ml-100k", config_dict={**PROTOCOL, **extra, **settings})
    finally:
        sys.argv = argv


def recbole_split(config):
    """RecBole's dataset and its train, valid and test dataloaders under ``config``."""
    recbole_ready()
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return dataset, *data_preparation(config, dataset)


def export(dataset, train_data, valid_data, test_data) -> dict[str, list]:
    """Each user's sequence in RecBole's split, as raw tokens: ``users``, ``items`` (the
    train items in order, then the val item, then the test item).

    RecBole's train rows are each prefix of a user's train items (at most the
    last 50) with the item after it, in the user's order (its sorts are
    stable), so a user's train sequence is the first row's one item followed
    by every row's target."""
    train, valid, test = (d.dataset.inter_feat for d in (train_data, valid_data, test_data))
    uid, iid = dataset.uid_field, dataset.iid_field
    users = train[uid].numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    if len(np.unique(users)) != len(starts):
        raise ValueError("RecBole's train rows are not grouped by user")
    if not (train[dataset.item_list_length_field].numpy()[starts] == 1).all():
        raise ValueError("a user's first train row does not hold one item")
    first = train[iid + dataset.config["LIST_SUFFIX"]].numpy()[starts, 0]
    held = [dict(zip(d[uid].numpy(), d[iid].numpy())) for d in (valid, test)]
    item_tokens, user_tokens = dataset.field2id_token[iid], dataset.field2id_token[uid]
    out: dict[str, list] = {"users": [], "items": []}
    for user, head, rows in zip(users[starts], first, np.split(train[iid].numpy(), starts[1:])):
        sequence = [head, *rows, held[0][user], held[1][user]]
        out["users"].append(str(user_tokens[user]))
        out["items"].append([str(item_tokens[i]) for i in sequence])
    return out


def write_inter(path: Path, split: dict[str, list]) -> None:
    """``split`` as a RecBole ``.inter`` file, timestamps the positions in each sequence
    (ratings 1: the next-item task reads none)."""
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user, items in zip(split["users"], split["items"]):
        lines += [f"{user}\t{item}\t1\t{t}" for t, item in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")


def prepare(split: dict[str, list], folder: Path) -> Path:
    """The project's sequence files of RecBole's split, made afresh in ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    raw = folder / "recbole-split.inter"
    write_inter(raw, split)
    ratings(raw, folder, scale="1:5", quiet=True)
    split_ratings(folder, by="time", quiet=True)
    sequences(folder, quiet=True)
    return folder


def figures(scorer, folder: Path) -> dict[str, float]:
    """Val and test HR@10 and NDCG@10 under ``scorer(recent, length)``, the history left
    out (``val_hr10`` ...) and kept in (``unmasked_val_hr10`` ...)."""
    data = open_sequence_data(folder, next_item=True)
    users = pq.read_table(data.evaluation, columns=["items", "target"])
    found = {}
    for prefix, leave_out in (("", True), ("unmasked_", False)):
        for protocol in ("val", "test"):
            hit, ndcg = rank(scorer, users, protocol, data, leave_out=leave_out)
            found[f"{prefix}{protocol}_hr10"] = round(float(hit.mean()), 4)
            found[f"{prefix}{protocol}_ndcg10"] = round(float(ndcg.mean()), 4)
    return found


def recbole_scorer(model, dataset, folder: Path):
    """The project ranker's ``scorer(recent, length)`` of a trained RecBole model: the
    project's item ids mapped to RecBole's through the raw tokens."""
    keys = pq.read_table(folder / "items.parquet", columns=["key"]).column("key").to_pylist()
    theirs = np.array([dataset.token2id(dataset.iid_field, key) for key in keys])
    config = dataset.config
    listed = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    model.eval()

    def scores(recent: np.ndarray, length: np.ndarray) -> np.ndarray:
        from recbole.data.interaction import Interaction

        items = np.where(recent < 0, 0, theirs[np.maximum(recent, 0)])
        batch = Interaction(
            {
                dataset.uid_field: torch.zeros(len(length), dtype=torch.int64),  # Pop reads it
                listed: torch.from_numpy(items.astype(np.int64)),
                config["ITEM_LIST_LENGTH_FIELD"]: torch.from_numpy(length.astype(np.int64)),
            }
        )
        with torch.no_grad():
            return model.full_sort_predict(batch).view(len(length), -1).numpy()[:, theirs]

    return scores


def fit_recbole(method: str, settings: dict, seed: int, folder: Path, epochs: int) -> dict:
    """Train RecBole's ``method`` with its trainer; its figures by the project's ranker
    and by RecBole's own evaluator."""
    recbole_ready()
    from recbole.utils import get_model, get_trainer, init_seed

    work = Path(tempfile.mkdtemp(dir=WORK))
    try:
        config = recbole_config(method, seed, work, **{"epochs": epochs, **settings})
        dataset, train_data, valid_data, test_data = recbole_split(config)
        init_seed(seed, config["reproducibility"])
        model = get_model(method)(config, train_data.dataset)
        trainer = get_trainer(config["MODEL_TYPE"], method)(config, model)
        train_seconds, epochs_run = 0.0, 0
        train_epoch = trainer._train_epoch

        def timed_epoch(*args, **kwargs):
            nonlocal train_seconds, epochs_run
            started = time.perf_counter()
            loss = train_epoch(*args, **kwargs)
            train_seconds += time.perf_counter() - started
            epochs_run += 1
            return loss

        trainer._train_epoch = timed_epoch
        curve, valid_epoch = [], trainer._valid_epoch

        def recorded_valid(*args, **kwargs):
            score, result = valid_epoch(*args, **kwargs)
            curve.append(round(float(score), 4))
            print(f"{method} seed {seed} {settings} epoch {len(curve)}: val NDCG@10 {curve[-1]}, "
                  f"{train_seconds:.0f} s training", file=sys.stderr, flush=True)  # fmt: skip
            return score, result

        trainer._valid_epoch = recorded_valid
        started = time.perf_counter()
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        fit_seconds = time.perf_counter() - started
        own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        found = figures(recbole_scorer(trainer.model, dataset, folder), folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        **found,
        "recbole_test_hr10": round(float(own["hit@10"]), 4),
        "recbole_test_ndcg10": round(float(own["ndcg@10"]), 4),
        "epochs": epochs_run,
        "val_curve": curve,  # RecBole's val NDCG@10 after each epoch (history kept in)
        "train_seconds": round(train_seconds, 1),
        "fit_seconds": round(fit_seconds, 1),
    }


def fit_ours(method: str, settings: dict, seed: int, folder: Path) -> dict:
    """Train the project's ``method`` on the exported split; its figures by the ranker."""
    config = TrainConfig.defaults("next-item", model=method, seed=seed, **settings)
    name = f"bench-{method}-{seed}"
    started = time.perf_counter()
    summary = train(folder, config, name=name, quiet=True)
    fit_seconds = time.perf_counter() - started
    run = folder / "runs" / name
    model = load_run(run).model
    found = figures(lambda recent, length: next_scores(model, recent, length), folder)
    shutil.rmtree(run)
    return {
        **found,
        "epochs": config.epochs,
        "train_seconds": round(summary["train_seconds"], 1),
        "fit_seconds": round(fit_seconds, 1),
    }


def fit(method: str, settings: dict, seed: int, folder: Path, epochs: int) -> dict:
    if method in OURS:
        return fit_ours(method, settings, seed, folder)
    return fit_recbole(method, settings, seed, folder, epochs)


def measure(method: str, folder: Path, seeds, epochs: int, settings: dict | None):
    """``method``'s grid (or ``settings`` alone) at the first seed, the best point by
    masked val NDCG@10, then that point at every seed: a row for each, yielded as it is
    measured (a run of RecBole's takes hours here)."""
    side = "ours" if method in OURS else "recbole"
    tried = points(GRIDS[method]) if settings is None else [settings]
    found = []
    for point in tried:
        found.append(fit(method, point, seeds[0], folder, epochs))
        if len(tried) > 1:
            yield {"part": "grid", "side": side, "method": method, "settings": point,
                   "seed": seeds[0], **found[-1]}  # fmt: skip
    best = max(range(len(tried)), key=lambda i: found[i]["val_ndcg10"])
    for seed in seeds:
        result = found[best] if seed == seeds[0] else fit(method, tried[best], seed, folder, epochs)
        yield {"part": "seed", "side": side, "method": method, "settings": tried[best],
               "grid_points": len(tried), "seed": seed, **result}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="Pop,GRU4Rec,SASRec,gru,lstm,sasrec")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--epochs", type=int, default=300, help="RecBole's cap (its default)")
    parser.add_argument("--settings", type=json.loads, help="one point instead of the grids")
    parser.add_argument(
        "--folder", default="ml-100k-recbole", help="the split's folder under data/bench/recbole "
        "(runs at once each need their own)"
    )  # fmt: skip
    args = parser.parse_args()
    if importlib.util.find_spec("recbole") is None:
        sys.exit("recbole is not installed: make .venv/.recsys-stream-bench-installed")
    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    config = recbole_config("SASRec", SEEDS[0], WORK)
    split = export(*recbole_split(config))
    folder = prepare(split, WORK / args.folder)
    seeds = [int(s) for s in args.seeds.split(",")]
    for method in args.methods.split(","):
        for row in measure(method, folder, seeds, args.epochs, args.settings):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
