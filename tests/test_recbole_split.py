"""RecBole's split of its ml-100k, exported (tests/bench/bench_recbole.py) and made into the
project's sequence files, holds exactly RecBole's train rows, val targets and test
targets, each after the same history."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("recbole", reason="bench-only: make .venv/.recsys-stream-bench-installed")
sys.path.insert(0, str(Path(__file__).parent / "bench"))
import bench_recbole


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """RecBole's dataset and dataloaders, and the project's files of the export."""
    work = tmp_path_factory.mktemp("recbole")
    config = bench_recbole.recbole_config("SASRec", 2020, work)
    dataset, *loaders = bench_recbole.recbole_split(config)
    folder = bench_recbole.prepare(bench_recbole.export(dataset, *loaders), work / "ml-100k")
    return dataset, loaders, folder


def keys(folder: Path, name: str) -> np.ndarray:
    return np.array(pq.read_table(folder / f"{name}.parquet").column("key").to_pylist())


def test_every_recbole_row_is_the_projects_with_the_same_history(split):
    dataset, (train, valid, test), folder = split
    users, items = keys(folder, "users"), keys(folder, "items")
    # Each user's whole sequence in the project's files: the train runs (positions by
    # timestamp, as written), then the val and test targets of next-eval.
    sequence = {}
    for run in pq.read_table(folder / "next-train.parquet").to_pylist():
        own = sequence.setdefault(users[run["user"]], {})
        own.update(zip(run["timestamps"], items[run["items"]]))
    evaluation = pq.read_table(folder / "next-eval.parquet").to_pylist()
    for row in evaluation:
        own = sequence[users[row["user"]]]
        whole = [*items[row["items"]], items[row["target"]]]
        assert [own[t] for t in sorted(own)] == whole[:-2]  # the train runs hold the rest
        sequence[users[row["user"]]] = whole
    assert len(evaluation) == dataset.user_num - 1 == 943  # RecBole's id 0 pads
    uid, iid = dataset.uid_field, dataset.iid_field
    listed = iid + dataset.config["LIST_SUFFIX"]
    user_tokens, item_tokens = dataset.field2id_token[uid], dataset.field2id_token[iid]
    for loader, last in ((train, None), (valid, -2), (test, -1)):
        feat = loader.dataset.inter_feat
        length = feat[dataset.item_list_length_field].numpy()
        targets = item_tokens[feat[iid].numpy()]
        histories = item_tokens[feat[listed].numpy()]
        position: dict[str, int] = {}
        for user, target, history, size in zip(
            user_tokens[feat[uid].numpy()], targets, histories, length
        ):
            whole = sequence[user]
            if last is None:  # a user's train rows take positions 1, 2, ... in turn
                at = position[user] = position.get(user, 0) + 1
            else:
                assert user not in position  # one val and one test row a user
                at = position[user] = len(whole) + last
            assert target == whole[at]
            assert list(history[:size]) == whole[max(0, at - 50) : at]
        if last is None:  # every train transition once, the last one predicting the
            # last train item (two before the end)
            assert position == {user: len(whole) - 3 for user, whole in sequence.items()}
        else:
            assert position.keys() == sequence.keys()
