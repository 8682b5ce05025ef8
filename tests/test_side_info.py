"""Side information: the codes products get, and what it does for products without train pairs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import write_lines
from planted import write_planted

from pipeline.errors import PipelineError
from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.side_info import PRICE_BUCKETS, parse_features, side_info
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.losses import LOSSES
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run
from recsys_stream.pairs.inputs import open_training_data
from recsys_stream.pairs.kernel_step import KernelStep
from recsys_stream.pairs.models import SideTables, build_model
from recsys_stream.pairs.steps import AutogradStep, FusedStep
from tests.test_models import build, random_batch

# Eight catalog products; each lists two others, H also one outside the catalog (Z).
CATALOG = [
    ("A", "Acme", 1.0, [["Root", "Audio", "Headphones"]], ["B", "C"]),
    ("B", "Acme", 2.0, [["Root", "Audio", "Headphones"]], ["A", "C"]),
    ("C", "Acme", 3.0, [["Root", "Cams"]], ["A", "B"]),
    ("D", "Bolt", 4.0, [["Root", "Audio", "Headphones"]], ["E", "A"]),
    ("E", "Bolt", 5.0, [["Root", "Cams"]], ["D", "F"]),
    ("F", "Solo", 6.0, [["Root", "Cams"]], ["E", "G"]),
    ("G", None, None, None, ["F", "H"]),
    ("H", " Acme ", 8.0, [["Root", "Audio", "Headphones"], ["Other"]], ["G", "Z"]),
]


@pytest.fixture
def catalog(tmp_path):
    lines = []
    for asin, brand, price, categories, bought in CATALOG:
        record = {"asin": asin, "title": f"product {asin}", "related": {"also_bought": bought}}
        record |= {"brand": brand} if brand else {}
        record |= {"price": price} if price else {}
        record |= {"categories": categories} if categories else {}
        lines.append(json.dumps(record))
    data = tmp_path / "data"
    parse(write_lines(tmp_path / "meta.json", lines), data, fmt="json", workers=1, quiet=True)
    build_pairs(data, quiet=True)
    return data


def codes_by_asin(data, features=("brand", "category", "price")) -> dict[str, dict[str, int]]:
    side = side_info(data, features)
    asins = pq.read_table(data / "vocab.parquet").column("asin").to_pylist()
    return {a: {f: int(side.codes[f][i]) for f in features} for i, a in enumerate(asins)}


def test_shared_values_get_codes_by_count_and_the_rest_unknown(catalog):
    codes = codes_by_asin(catalog)
    # Acme (A, B, C and H, its spaces stripped) before Bolt (D, E); Solo is one product's.
    assert {a: c["brand"] for a, c in codes.items()} == {
        "A": 1, "B": 1, "C": 1, "H": 1, "D": 2, "E": 2, "F": 0, "G": 0, "Z": 0
    }  # fmt: skip
    # The leaf of the first path: Headphones (A, B, D, H) before Cams (C, E, F).
    assert {a: c["category"] for a, c in codes.items()} == {
        "A": 1, "B": 1, "D": 1, "H": 1, "C": 2, "E": 2, "F": 2, "G": 0, "Z": 0
    }  # fmt: skip


def test_price_buckets_follow_the_price_and_unknown_prices_are_zero(catalog):
    codes = codes_by_asin(catalog, ("price",))
    priced = [codes[a]["price"] for a in "ABCDEFH"]  # prices 1, 2, 3, 4, 5, 6, 8
    assert priced == sorted(priced) and priced[0] == 1 and priced[-1] == PRICE_BUCKETS
    assert codes["G"]["price"] == codes["Z"]["price"] == 0
    assert side_info(catalog, ("price",)).sizes == {"price": PRICE_BUCKETS + 1}


def test_products_from_another_parse_are_refused_in_one_line(catalog, tmp_path):
    other = [json.dumps({"asin": "Q", "title": "q", "related": {"also_bought": ["R", "S"]}})]
    parse(write_lines(tmp_path / "other.json", other), catalog, fmt="json", workers=1, quiet=True)
    with pytest.raises(PipelineError, match="do not belong together"):
        side_info(catalog)


@pytest.mark.parametrize("text", ["colour", "brand,brand", "brand;price"])
def test_unknown_or_repeated_features_are_one_line_errors(text):
    with pytest.raises(PipelineError, match="--side-info takes distinct names among"):
        parse_features(text)
    with pytest.raises(PipelineError, match="--side-info"):
        TrainConfig(side_info=text)


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """Planted clusters (the leaf category is the cluster) with 5% of products cold."""
    return write_planted(tmp_path_factory.mktemp("cold"), products=600, pairs=6000, cold=0.05)


def fit(data, side: str) -> dict:
    config = TrainConfig(side_info=side, epochs=4, lr=0.05, batch_size=128, eval_sample=1000)
    return train(data, config, name=f"side-{side or 'none'}", quiet=True)


def test_products_without_train_pairs_get_vectors_from_their_metadata(cold):
    plain, side = fit(cold, ""), fit(cold, "brand,category,price")
    # Cold rows: popularity cannot rank them (a cold product's degree is 0),
    # nor can a plain model; the category's vector can. Measured: 0.58 and 0.94.
    assert plain["popularity_auc_cold"] == 0.5
    assert side["auc_cold"] > max(plain["auc_cold"], 0.5) + 0.2
    assert side["auc_seen"] > plain["auc_seen"] - 0.02  # and the seen rows do not suffer
    model = load_run(cold / "runs" / "side-brand,category,price")[0]
    pairs = pq.read_table(cold / "train.parquet")
    in_train = np.zeros(model.num_products, bool)
    in_train[pairs.column("src").to_numpy()] = True
    in_train[pairs.column("dst").to_numpy()] = True
    never = torch.from_numpy(np.flatnonzero(~in_train))
    assert len(never) > 10
    table = model.embedding
    features = ("brand", "category", "price")
    codes = [table.get_buffer(f"codes_{f}")[never].long() for f in features]
    known = [(c != 0).float()[:, None] for c in codes]
    parts = [table.own.weight[never]] + [
        table.features[f].weight[c] * k for f, c, k in zip(features, codes, known)
    ]
    vectors = model.query_vectors().detach()[never]
    # the mean of its own row and its known features' rows
    torch.testing.assert_close(vectors, sum(parts) / (1 + sum(known)))
    # Their own rows never trained (initialised at std 0.01, shrunk by smoothing): the
    # metadata makes their vectors.
    assert parts[0].norm(dim=1).max() < 0.1 * vectors.norm(dim=1).min()


def test_an_unknown_value_adds_nothing_to_a_product_vector():
    generator = torch.Generator().manual_seed(0)
    codes = {"brand": torch.tensor([0, 2, 0, 1]), "category": torch.tensor([0, 1, 3, 0])}
    model = build_model("mf_bias", 4, 6, 0.1, 0, SideTables({"brand": 3, "category": 4}, codes))
    table = model.embedding
    for feature in table.features.values():
        feature.weight.data.normal_(generator=generator)
    own, brand, category = (
        table.own.weight,
        table.features["brand"].weight,
        table.features["category"].weight,
    )
    vectors = table(torch.arange(4)).detach()
    torch.testing.assert_close(vectors[0], own[0])  # nothing known: its own row
    torch.testing.assert_close(vectors[1], (own[1] + brand[2] + category[1]) / 3)
    torch.testing.assert_close(vectors[2], (own[2] + category[3]) / 2)
    torch.testing.assert_close(vectors[3], (own[3] + brand[1]) / 2)


def test_a_product_vector_weighs_its_own_row_by_its_own_weight():
    codes = {"brand": torch.tensor([1, 1, 2]), "category": torch.tensor([1, 0, 1])}
    w = torch.tensor([1.0, 4.0, 2.5])
    model = build_model("mf_bias", 3, 4, 0.1, 0, SideTables({"brand": 3, "category": 2}, codes, w))
    table = model.embedding
    own, brand, category = (
        table.own.weight,
        table.features["brand"].weight,
        table.features["category"].weight,
    )
    vectors = table(torch.arange(3)).detach()
    torch.testing.assert_close(vectors[0], (own[0] + brand[1] + category[1]) / 3)
    torch.testing.assert_close(vectors[1], (w[1] * own[1] + brand[1]) / (w[1] + 1))
    torch.testing.assert_close(vectors[2], (w[2] * own[2] + brand[2] + category[1]) / (w[2] + 2))
    target = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    table.set_vectors(torch.arange(3), target)  # smoothing's write-back: through own rows
    torch.testing.assert_close(table(torch.arange(3)).detach(), target)
    assert torch.equal(table.features["brand"].weight, brand)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_side_own_weight_reaches_the_model_as_a_weight_per_train_pair(cold, weight):
    config = TrainConfig(
        side_info="brand,category", side_own_weight=weight, epochs=1, batch_size=512
    )
    summary = train(cold, config, name=f"own-{weight}", quiet=True)
    model = load_run(cold / "runs" / summary["run"])[0]
    degree = torch.from_numpy(open_training_data(cold).degree).float()
    torch.testing.assert_close(model.embedding.own_weight, 1 + weight * degree)
    assert degree.max() > 1


def test_a_model_saved_before_own_weights_loads_as_the_plain_mean():
    codes = {"brand": torch.tensor([1, 2, 1])}
    model = build_model("mf_bias", 3, 4, 0.1, 0, SideTables({"brand": 3}, codes, torch.ones(3)))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("own_weight")}
    loaded = build_model("mf_bias", 3, 4, None, 0, SideTables({"brand": 3}))
    loaded.load_state_dict(state)
    own, brand = model.embedding.own.weight, model.embedding.features["brand"].weight
    torch.testing.assert_close(loaded.embedding(torch.tensor(1)), (own[1] + brand[2]) / 2)


@pytest.mark.parametrize("step", [KernelStep, FusedStep, AutogradStep])
@pytest.mark.parametrize("kind", ["mf_bias+side", "skipgram+side"])
def test_the_rows_of_unknown_values_are_never_trained(kind, step):
    model = build(kind, 40, 8, init_std=0.1, seed=0)
    table = model.layout().left if model.layout() else model.embedding
    before = {name: t.weight[0].clone() for name, t in table.features.items()}
    train_step = step(model, LOSSES["binary"], 0.1, 2.0)
    for seed in range(5):
        train_step(random_batch(seed), 0.1)
    for name, feature in table.features.items():
        assert (table.codes(name) == 0).any() and (table.codes(name) != 0).any()
        assert torch.equal(feature.weight[0], before[name]), name
        assert not torch.equal(feature.weight[1:], feature.weight[1:] * 0), name
