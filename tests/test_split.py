"""Stage 3: the train/val partition, val negatives, the seen flag, determinism, errors."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import split as split_module
from pipeline.contracts import PAIRS_SCHEMA, TRAIN_SCHEMA, VAL_SCHEMA, VOCAB_SCHEMA, stamped
from pipeline.errors import PipelineError
from pipeline.split import sample_negatives, split

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "pairs_per_s", "peak_rss_mb", "data_dir")


def write_dataset(directory: Path, src, dst, n_products: int, seed: int = 0) -> Path:
    """pairs.parquet and vocab.parquet as stage 2 writes them, rows in the given order."""
    directory.mkdir(parents=True, exist_ok=True)
    src, dst = np.asarray(src, dtype=np.int32), np.asarray(dst, dtype=np.int32)
    rng = np.random.default_rng(seed)
    weight = rng.integers(1, 100, len(src)).astype(np.float32) / 4  # exact in float32
    relations = rng.integers(1, 16, len(src), dtype=np.uint8)
    lineage = {"pairs_id": "test-pairs"}
    pairs = pa.table(
        [src, dst, weight, relations], schema=stamped(PAIRS_SCHEMA, "pairs", **lineage)
    )
    pq.write_table(pairs, directory / "pairs.parquet")
    ids = np.arange(n_products, dtype=np.int32)
    degree = np.bincount(np.concatenate([src, dst]), minlength=n_products)[:n_products]
    vocab = pa.table(
        [ids, pa.array(ids).cast(pa.string()), degree.astype(np.int32), pa.nulls(n_products)],
        schema=stamped(VOCAB_SCHEMA, "pairs", **lineage),
    )
    pq.write_table(vocab, directory / "vocab.parquet")
    return directory


def random_pairs(
    n_products: int, draws: int, seed: int = 0, skew: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (src < dst) pairs sorted by (src, dst); degrees ~ 1 / rank ** skew, so hubs."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_products + 1) ** skew
    a, b = rng.choice(n_products, (2, draws), p=p / p.sum())
    keys = np.unique(np.minimum(a, b)[a != b] * n_products + np.maximum(a, b)[a != b])
    return keys // n_products, keys % n_products


def matching(n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (2i, 2i+1): sparse, so negatives are always easy to find."""
    return np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2)


def star(leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """Hub 0 linked to 1..leaves: half of every shuffle is the hub, so rounds > 1."""
    return np.zeros(leaves, dtype=int), np.arange(1, leaves + 1)


def read(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def rows(columns: dict[str, np.ndarray], names: list[str]) -> list[tuple]:
    return list(zip(*(columns[name].tolist() for name in names)))


@pytest.fixture
def skewed(tmp_path) -> Path:
    """A dense, skewed graph: 300 products, ~4,000 pairs, every rejection reason occurs."""
    return write_dataset(tmp_path / "skewed", *random_pairs(300, 6000), n_products=300)


@pytest.mark.parametrize("protocol", ["products", "occurrences"])
def test_val_negatives_are_distinct_non_pairs_one_per_positive(skewed, protocol):
    stats = split(skewed, negatives=protocol, quiet=True)
    pairs = set(rows(read(skewed / "pairs.parquet"), ["src", "dst"]))
    val = read(skewed / "val.parquet")
    negatives = rows({k: v[val["label"] == 0] for k, v in val.items()}, ["src", "dst"])
    positives = rows({k: v[val["label"] == 1] for k, v in val.items()}, ["src", "dst"])
    assert set(val["label"].tolist()) == {0, 1}
    assert len(negatives) == len(positives) == stats["val_positives"] == stats["val_negatives"]
    assert all(s < d for s, d in negatives)  # canonical, and never a self-pair
    assert not set(negatives) & pairs  # no true pair of either split
    assert len(set(negatives)) == len(negatives)
    assert (val["weight"][val["label"] == 0] == 0).all()
    # The fixture is dense enough that every rejection reason was exercised; a deck
    # of distinct products holds each once, so a shuffle of it has no self-pair.
    assert stats["rejected"]["true_pair"] > 0 and stats["rejected"]["duplicate"] > 0
    assert (stats["rejected"]["self_pair"] > 0) == (protocol == "occurrences")
    examined = stats["val_negatives"] + sum(stats["rejected"].values())
    assert stats["candidates"] == examined


def test_train_and_val_positives_partition_the_pairs(skewed):
    split(skewed, quiet=True)
    pairs = read(skewed / "pairs.parquet")
    train = read(skewed / "train.parquet")
    val = read(skewed / "val.parquet")
    positives = {k: v[val["label"] == 1] for k, v in val.items()}
    everything = rows(pairs, ["src", "dst", "weight", "relations"])
    train_rows = rows(train, ["src", "dst", "weight", "relations"])
    val_rows = rows(positives, ["src", "dst", "weight"])
    assert len(train_rows) + len(val_rows) == len(everything)
    by_pair = {(s, d): (w, r) for s, d, w, r in everything}
    val_pairs = {(s, d) for s, d, _ in val_rows}
    assert not val_pairs & {(s, d) for s, d, _, _ in train_rows}
    assert sorted(train_rows) == sorted(row for row in everything if row[:2] not in val_pairs)
    assert sorted(val_rows) == sorted(
        (s, d, w) for (s, d), (w, _) in by_pair.items() if (s, d) in val_pairs
    )


def test_seen_flag_matches_products_of_train(skewed):
    stats = split(skewed, quiet=True, val_prop=0.6)  # a big val share: many unseen rows
    train = read(skewed / "train.parquet")
    val = read(skewed / "val.parquet")
    in_train = set(train["src"].tolist()) | set(train["dst"].tolist())
    expected = [s in in_train and d in in_train for s, d in rows(val, ["src", "dst"])]
    assert val["seen"].tolist() == expected
    assert 0 < sum(expected) < len(expected)
    positive = val["label"] == 1
    assert stats["seen_positives"] == int(val["seen"][positive].sum())
    assert stats["seen_negatives"] == int(val["seen"][~positive].sum())
    assert stats["seen_share_positives"] == pytest.approx(val["seen"][positive].mean(), abs=1e-6)
    assert stats["seen_share_negatives"] == pytest.approx(val["seen"][~positive].mean(), abs=1e-6)


def test_unseen_val_products_give_unseen_rows(tmp_path):
    # In a matching, no val product occurs in train: nothing is seen.
    stats = split(write_dataset(tmp_path, *matching(100), n_products=200), quiet=True)
    assert not read(tmp_path / "val.parquet")["seen"].any()
    assert stats["seen_positives"] == stats["seen_negatives"] == 0


@pytest.mark.parametrize(
    ("n_pairs", "val_prop", "expected"),
    [
        (1000, 0.33, 330),
        (100, 0.29, 29),  # 100 * 0.29 is 28.999... in floating point
        (7, 0.5, 4),  # 3.5: halves round up
        (10, 0.25, 3),  # 2.5
        (10, 0.24, 2),
    ],
)
def test_val_share_is_val_prop_rounded_half_up(tmp_path, n_pairs, val_prop, expected):
    assert split_module.validation_size(n_pairs, val_prop) == expected
    stats = split(write_dataset(tmp_path, *matching(n_pairs), 2 * n_pairs), val_prop, quiet=True)
    val = read(tmp_path / "val.parquet")
    assert (stats["val_positives"], stats["train"]) == (expected, n_pairs - expected)
    assert int(val["label"].sum()) == expected
    assert pq.ParquetFile(tmp_path / "train.parquet").metadata.num_rows == n_pairs - expected
    assert expected == math.floor(n_pairs * val_prop + 0.5)


def test_same_seed_gives_identical_files_and_another_seed_does_not(skewed, tmp_path):
    copy = shutil.copytree(skewed, tmp_path / "copy")
    first, second = split(skewed, seed=7, quiet=True), split(copy, seed=7, quiet=True)
    for name in ("train.parquet", "val.parquet"):
        assert (skewed / name).read_bytes() == (copy / name).read_bytes()
    assert {k: v for k, v in first.items() if k not in TIMING} == {
        k: v for k, v in second.items() if k not in TIMING
    }
    split(copy, seed=8, quiet=True)
    for name in ("train.parquet", "val.parquet"):
        assert (skewed / name).read_bytes() != (copy / name).read_bytes()


def test_input_row_order_does_not_matter(tmp_path):
    src, dst = random_pairs(300, 6000)
    shuffled = np.random.default_rng(1).permutation(len(src))
    # Same pairs with the same weights, written in another order.
    sorted_dir = write_dataset(tmp_path / "sorted", src, dst, 300)
    table = pq.read_table(sorted_dir / "pairs.parquet").take(shuffled)
    shuffled_dir = shutil.copytree(sorted_dir, tmp_path / "shuffled")
    pq.write_table(table, shuffled_dir / "pairs.parquet")
    split(sorted_dir, quiet=True)
    split(shuffled_dir, quiet=True)
    for name in ("train.parquet", "val.parquet"):
        assert (sorted_dir / name).read_bytes() == (shuffled_dir / name).read_bytes()


def test_train_is_written_shuffled(skewed):
    split(skewed, quiet=True)
    train = read(skewed / "train.parquet")
    keys = train["src"].astype(np.int64) * 300 + train["dst"]
    rising = np.mean(keys[1:] > keys[:-1])
    assert 0.4 < rising < 0.6  # sorted would be 1.0; a random order about 0.5


def test_outputs_have_the_contract_schemas(skewed):
    split(skewed, quiet=True)
    for name, schema in (("train.parquet", TRAIN_SCHEMA), ("val.parquet", VAL_SCHEMA)):
        found = pq.read_schema(skewed / name)
        assert found.equals(schema)
        assert found.metadata[b"stage"] == b"split"
        assert found.metadata[b"format_version"] == b"2"
    val = read(skewed / "val.parquet")
    keys = val["src"].astype(np.int64) * 300 + val["dst"]
    assert (np.diff(keys) > 0).all()  # val is sorted by (src, dst)
    assert json.loads((skewed / "split.json").read_text())["val_prop"] == 0.33


def test_row_groups_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(split_module, "ROW_GROUP_ROWS", 100)
    split(write_dataset(tmp_path, *matching(1000), n_products=2000), quiet=True)
    train = pq.ParquetFile(tmp_path / "train.parquet").metadata
    val = pq.ParquetFile(tmp_path / "val.parquet").metadata
    train_groups = [train.row_group(i).num_rows for i in range(train.num_row_groups)]
    val_groups = [val.row_group(i).num_rows for i in range(val.num_row_groups)]
    assert train_groups == [100] * 6 + [70]  # 670 train pairs
    assert val_groups == [100] * 6 + [60]  # 330 positives + 330 negatives


def test_real_row_group_size(tmp_path):
    assert split_module.ROW_GROUP_ROWS == 262_144
    split(write_dataset(tmp_path, *matching(800_000), n_products=1_600_000), quiet=True)
    train = pq.ParquetFile(tmp_path / "train.parquet").metadata
    assert [train.row_group(i).num_rows for i in range(train.num_row_groups)] == [
        262_144,
        262_144,
        536_000 - 2 * 262_144,
    ]


def test_sample_negatives_reshuffles_and_accounts_for_every_candidate():
    src, dst = star(30)
    keys = src.astype(np.int64) * 31 + dst
    occurrences = np.concatenate([src[:15], dst[:15]]).astype(np.int32)
    neg_src, neg_dst, tally = sample_negatives(occurrences, keys, 31, 15, np.random.default_rng(0))
    assert len(neg_src) == 15 and (neg_src < neg_dst).all() and (neg_src > 0).all()
    assert len(set(zip(neg_src.tolist(), neg_dst.tolist()))) == 15
    # Half the array is the hub, so one shuffle cannot give 15 non-pairs.
    assert tally["rounds"] > 1
    assert tally["candidates"] == 15 + tally["self_pair"] + tally["true_pair"] + tally["duplicate"]
    assert tally["self_pair"] > 0 and tally["true_pair"] > 0


def test_sampling_gives_up_after_max_rounds(tmp_path, monkeypatch):
    monkeypatch.setattr(split_module, "MAX_ROUNDS", 1)
    data = write_dataset(tmp_path, *star(30), n_products=31)
    # 16 distinct val products give 8 candidates a shuffle: 15 negatives need 2.
    with pytest.raises(PipelineError, match="in 2 shuffles of 16 val products") as error:
        split(data, val_prop=0.5, quiet=True)
    assert "\n" not in str(error.value)
    assert not (data / "train.parquet").exists() and not (data / "val.parquet").exists()


def test_impossible_negatives_fail_at_once_and_write_nothing(tmp_path):
    # A complete graph on 5 products: no non-pairs at all.
    src, dst = np.triu_indices(5, k=1)
    data = write_dataset(tmp_path, src, dst, n_products=5)
    with pytest.raises(PipelineError, match="only 0 non-pairs") as error:
        split(data, val_prop=0.5, quiet=True)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in data.iterdir()) == ["pairs.parquet", "vocab.parquet"]


@pytest.mark.parametrize("missing", ["pairs.parquet", "vocab.parquet"])
def test_missing_input(tmp_path, missing):
    write_dataset(tmp_path, *matching(10), n_products=20)
    (tmp_path / missing).unlink()
    with pytest.raises(PipelineError, match=f"{missing}: not found.*pipeline pairs") as error:
        split(tmp_path, quiet=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("val_prop", [0, 1, -0.1, 1.5, float("nan")])
def test_val_prop_outside_zero_one(tmp_path, val_prop):
    write_dataset(tmp_path, *matching(10), n_products=20)
    with pytest.raises(PipelineError, match="--val-prop must be between 0 and 1"):
        split(tmp_path, val_prop=val_prop, quiet=True)


@pytest.mark.parametrize(
    ("n_pairs", "val_prop", "message"),
    [(0, 0.33, "no pairs"), (3, 0.1, "leaves val empty"), (3, 0.9, "leaves train empty")],
)
def test_empty_pairs_or_split(tmp_path, n_pairs, val_prop, message):
    write_dataset(tmp_path, *matching(n_pairs), n_products=20)
    with pytest.raises(PipelineError, match=message) as error:
        split(tmp_path, val_prop=val_prop, quiet=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("src", "dst", "n_products", "message"),
    [
        ([0, 1], [1, 7], 5, "outside the vocabulary"),
        ([0, 2], [1, 2], 5, "src >= dst"),
        ([0, 0, 1], [1, 1, 2], 5, "repeated pairs"),
    ],
)
def test_broken_pairs_are_refused(tmp_path, src, dst, n_products, message):
    write_dataset(tmp_path, src, dst, n_products)
    with pytest.raises(PipelineError, match=message):
        split(tmp_path, quiet=True)


def test_wrong_column_type_is_refused(tmp_path):
    write_dataset(tmp_path, *matching(10), n_products=20)
    table = pq.read_table(tmp_path / "pairs.parquet")
    pq.write_table(
        table.set_column(0, "src", table.column("src").cast(pa.int64())), tmp_path / "pairs.parquet"
    )
    with pytest.raises(PipelineError, match="src is int64, expected int32"):
        split(tmp_path, quiet=True)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(f"pipeline.{m}") for m in ("pairs", "synth")),
    reason="the CLI imports every stage; pipeline.pairs or pipeline.synth is not written yet",
)
def test_command_line(tmp_path):
    write_dataset(tmp_path, *matching(100), n_products=200)
    run = [sys.executable, "-m", "pipeline", "split", str(tmp_path), "--quiet"]
    done = subprocess.run([*run, "--seed", "3"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("split: train=67 val_positives=33 val_negatives=33")
    assert json.loads((tmp_path / "split.json").read_text())["seed"] == 3
    bad = subprocess.run([*run, "--val-prop", "1.5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: --val-prop")


def test_chunk_size_does_not_change_the_sample(monkeypatch):
    src, dst = random_pairs(300, 6000)
    keys = src * 300 + dst
    occurrences = np.concatenate([src[::3], dst[::3]]).astype(np.int32)
    count = len(occurrences) // 2
    big = sample_negatives(occurrences, keys, 300, count, np.random.default_rng(5))
    monkeypatch.setattr(split_module, "MIN_CHUNK", 1)  # top-ups in many small chunks
    small = sample_negatives(occurrences, keys, 300, count, np.random.default_rng(5))
    assert np.array_equal(big[0], small[0]) and np.array_equal(big[1], small[1])
    assert big[2] == small[2] and big[2]["rounds"] > 1


def _draws(protocol: str, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per product: occurrences among val positives and draws among val negatives."""
    split(directory, negatives=protocol, quiet=True)
    val = read(directory / "val.parquet")
    positive = val["label"] == 1
    ends = lambda rows: np.concatenate([val["src"][rows], val["dst"][rows]])  # noqa: E731
    occurs = np.bincount(ends(positive), minlength=4000)
    drawn = np.bincount(ends(~positive), minlength=4000)
    return occurs, drawn


@pytest.fixture
def sparse_skewed(tmp_path) -> Path:
    """4,000 products with skewed degrees (a hundredfold from first to last) but few
    pairs each: true pairs and repeats are rare among random candidates, so
    rejections barely bend the negatives' distribution."""
    pairs = random_pairs(4000, 30_000, seed=7, skew=0.6)
    return write_dataset(tmp_path / "sparse", *pairs, 4000)


def test_products_protocol_draws_every_val_product_equally(sparse_skewed):
    from scipy.stats import chisquare

    occurs, drawn = _draws("products", sparse_skewed)
    products = occurs > 0
    assert drawn[~products].sum() == 0  # negatives come from val products only
    # Equal chances: the draws fit a uniform distribution over the val products...
    assert chisquare(drawn[products]).pvalue > 0.01
    # ...and the products that occur most in val are drawn no more than the rarest.
    order = np.argsort(occurs[products])
    tenth = len(order) // 10
    frequent, rare = drawn[products][order[-tenth:]], drawn[products][order[:tenth]]
    assert occurs[products][order[-tenth:]].mean() > 8 * occurs[products][order[:tenth]].mean()
    assert 0.9 < frequent.mean() / rare.mean() < 1.1


def test_occurrences_protocol_draws_in_proportion_to_val_frequency(sparse_skewed):
    from scipy.stats import chisquare

    occurs, drawn = _draws("occurrences", sparse_skewed)
    products = occurs > 0
    assert drawn[~products].sum() == 0
    assert chisquare(drawn[products]).pvalue < 1e-12  # far from uniform
    expected = occurs[products] / occurs.sum() * drawn.sum()
    # Within 10% of proportional in each fifth of the products by val frequency.
    fifths = np.array_split(np.argsort(occurs[products]), 5)
    ratios = [drawn[products][f].sum() / expected[f].sum() for f in fifths]
    assert all(0.9 < ratio < 1.1 for ratio in ratios), ratios


def test_the_protocol_changes_only_the_negatives_and_is_recorded(skewed, tmp_path):
    other = shutil.copytree(skewed, tmp_path / "other")
    by_products = split(skewed, quiet=True)
    by_occurrences = split(other, negatives="occurrences", quiet=True)
    assert (by_products["negatives"], by_occurrences["negatives"]) == ("products", "occurrences")
    # The same train pairs in the same order; only the split id in the metadata differs.
    assert pq.read_table(skewed / "train.parquet").equals(pq.read_table(other / "train.parquet"))
    a, b = read(skewed / "val.parquet"), read(other / "val.parquet")
    positives = lambda v: rows({k: x[v["label"] == 1] for k, x in v.items()}, list(v))  # noqa: E731
    assert positives(a) == positives(b)
    assert rows(a, ["src", "dst"]) != rows(b, ["src", "dst"])
    for directory, protocol in [(skewed, "products"), (other, "occurrences")]:
        metadata = pq.read_schema(directory / "val.parquet").metadata
        assert metadata[b"negatives"] == protocol.encode()
        assert json.loads((directory / "split.json").read_text())["negatives"] == protocol


def test_unknown_protocol_is_refused(skewed):
    with pytest.raises(PipelineError, match="--negatives must be one of products, occurrences"):
        split(skewed, negatives="popular", quiet=True)
