"""Neighbour smoothing against a dense computation of the same formula."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.contracts import TRAIN_SCHEMA, stamped
from recsys_stream.pairs.models import SideTables, build_model
from recsys_stream.pairs.smoothing import smooth, smooth_table


def write_train(path, src, dst, row_group=3):
    columns = [
        np.asarray(src, np.int32),
        np.asarray(dst, np.int32),
        np.ones(len(src), np.float32),
        np.ones(len(src), np.uint8),
    ]
    table = pa.table(columns, schema=stamped(TRAIN_SCHEMA, "split"))
    pq.write_table(table, path, row_group_size=row_group)
    return path


def test_smoothing_mixes_each_row_with_its_neighbours_mean(tmp_path):
    src, dst = [0, 0, 1, 2, 4], [1, 2, 2, 3, 5]  # product 6 has no pair
    train = write_train(tmp_path / "train.parquet", src, dst)
    weight = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    degree = np.bincount(src + dst, minlength=7)
    adjacency = torch.zeros(7, 7)
    adjacency[src, dst] = adjacency[dst, src] = 1
    mean = adjacency @ weight / torch.from_numpy(np.maximum(degree, 1)).float()[:, None]
    for alpha in (0.0, 0.25, 0.9, 1.0):
        smoothed = smooth(weight, train, degree, alpha)
        torch.testing.assert_close(smoothed, (1 - alpha) * weight + alpha * mean)
        assert torch.equal(smoothed[6], (1 - alpha) * weight[6])
    # Product 3's only neighbour is 2: at alpha 1 its vector is 2's.
    torch.testing.assert_close(smooth(weight, train, degree, 1.0)[3], weight[2])


def test_a_side_table_smooths_whole_vectors_and_keeps_its_feature_rows(tmp_path):
    src, dst = [0, 0, 1, 2, 4], [1, 2, 2, 3, 5]  # product 6 has no pair
    train = write_train(tmp_path / "train.parquet", src, dst)
    degree = np.bincount(src + dst, minlength=7)
    # Products 0, 3 and 6 have a brand; 0, 1 and 6 a category; the rest code 0 (unknown).
    codes = {
        "brand": torch.tensor([1, 0, 0, 2, 0, 0, 1]),
        "category": torch.tensor([1, 2, 0, 0, 0, 0, 3]),
    }
    model = build_model("mf_bias", 7, 4, 0.1, 0, SideTables({"brand": 3, "category": 4}, codes))
    table = model.embedding
    vectors, own = table.weight.detach().clone(), table.own.weight.detach().clone()
    features = {name: t.weight.detach().clone() for name, t in table.features.items()}
    smooth_table(table, train, degree, 0.9)
    expected = smooth(vectors, train, degree, 0.9)
    paired = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.testing.assert_close(table.weight[paired], expected[paired])
    # The features' rows are shared, so they stay; a product without pairs shrinks its
    # own row and keeps its features': (0.1 own + brand + category) / 3.
    for name, rows in features.items():
        assert torch.equal(table.features[name].weight, rows)
    lone = (0.1 * own[6] + features["brand"][1] + features["category"][3]) / 3
    torch.testing.assert_close(table.weight[6], lone)
    # At 0 nothing changes, to the bit.
    before = table.own.weight.detach().clone()
    smooth_table(table, train, degree, 0.0)
    assert torch.equal(table.own.weight, before)


def test_smoothing_does_not_touch_its_input(tmp_path):
    train = write_train(tmp_path / "train.parquet", [0], [1])
    weight = torch.ones(2, 3)
    smooth(weight, train, np.array([1, 1]), 0.5)
    assert torch.equal(weight, torch.ones(2, 3))
