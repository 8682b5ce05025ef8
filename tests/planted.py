"""A planted-cluster dataset written straight in the stage-3 file format.

Products fall into clusters and pair up mostly inside their cluster, with
power-law popularity, so a model that learns the clusters beats popularity.
The trainer's tests use it without running the data stages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contracts import PRODUCTS_SCHEMA, TRAIN_SCHEMA, VAL_SCHEMA, VOCAB_SCHEMA, stamped

LINEAGE = {"pairs_id": "planted-pairs", "split_id": "planted-split"}
PRODUCTS_ID = "planted-products"


def write_planted(
    out: Path,
    products: int = 2000,
    pairs: int = 20000,
    clusters: int = 20,
    seed: int = 0,
    row_group: int = 4096,
    cold: float = 0.0,
) -> Path:
    """Write vocab/train/val parquet files for a planted graph into ``out``.

    Also products.parquet, whose leaf category is a product's cluster (brand
    and price are noise). ``cold``: the share of products whose pairs all go
    to val, so they have no train pair.
    """
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, products)
    popularity = rng.pareto(1.5, products) + 1
    members = [np.flatnonzero(cluster == c) for c in range(clusters)]
    a = rng.choice(products, pairs * 2, p=popularity / popularity.sum())
    same = rng.random(len(a)) < 0.85
    b = np.empty_like(a)
    for c in range(clusters):  # a loop over clusters, not pairs
        rows = np.flatnonzero(same & (cluster[a] == c))
        weights = popularity[members[c]]
        b[rows] = rng.choice(members[c], len(rows), p=weights / weights.sum())
    b[~same] = rng.choice(products, int((~same).sum()), p=popularity / popularity.sum())
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = np.unique(lo[lo != hi].astype(np.int64) * products + hi[lo != hi])[:pairs]
    key = rng.permutation(key)
    src, dst = (key // products).astype(np.int32), (key % products).astype(np.int32)
    weight = rng.choice(np.array([0.5, 1.0, 1.2, 1.5, 2.2], dtype=np.float32), len(src))
    n_val = round(len(src) * 0.33)
    if cold:  # pairs of the cold products first, so they fall in val
        is_cold = rng.random(products) < cold
        order = np.argsort(~(is_cold[src] | is_cold[dst]), kind="stable")
        src, dst = src[order], dst[order]
        assert (is_cold[src] | is_cold[dst]).sum() <= n_val, "too many cold pairs"
    train_src, train_dst = src[n_val:], dst[n_val:]
    in_train = np.zeros(products, bool)
    in_train[train_src] = in_train[train_dst] = True
    neg = rng.integers(0, products, (n_val * 3, 2))
    neg = np.sort(neg[neg[:, 0] != neg[:, 1]], axis=1)
    neg_key = neg[:, 0].astype(np.int64) * products + neg[:, 1]
    neg = neg[~np.isin(neg_key, key)][:n_val]
    out.mkdir(parents=True, exist_ok=True)
    degree = np.bincount(np.concatenate([src, dst]), minlength=products).astype(np.int32)
    vocab = pa.table(
        {
            "id": np.arange(products, dtype=np.int32),
            "asin": [f"P{i:09d}" for i in range(products)],
            "degree": degree,
            "title": [f"product {i} of cluster {cluster[i]}" for i in range(products)],
        }
    )
    pq.write_table(
        vocab.cast(stamped(VOCAB_SCHEMA, "pairs", products_id=PRODUCTS_ID, **LINEAGE)),
        out / "vocab.parquet",
        row_group_size=row_group,
    )
    _write_products(out / "products.parquet", vocab.column("asin").to_pylist(), cluster, seed)
    train = pa.table(
        {
            "src": train_src,
            "dst": train_dst,
            "weight": weight[n_val:],
            "relations": np.full(len(train_src), 2, np.uint8),
        }
    )
    pq.write_table(
        train.cast(stamped(TRAIN_SCHEMA, "split", **LINEAGE)),
        out / "train.parquet",
        row_group_size=row_group,
    )
    v_src = np.concatenate([src[:n_val], neg[:, 0].astype(np.int32)])
    v_dst = np.concatenate([dst[:n_val], neg[:, 1].astype(np.int32)])
    val = pa.table(
        {
            "src": v_src,
            "dst": v_dst,
            "label": np.r_[np.ones(n_val, np.int8), np.zeros(len(neg), np.int8)],
            "weight": np.r_[weight[:n_val], np.zeros(len(neg), np.float32)],
            "seen": in_train[v_src] & in_train[v_dst],
        }
    )
    # Negatives uniform over the products: the ``products`` protocol's kind.
    val_schema = stamped(VAL_SCHEMA, "split", negatives="products", **LINEAGE)
    pq.write_table(val.cast(val_schema), out / "val.parquet")
    return out


def _write_products(path: Path, asins: list[str], cluster: np.ndarray, seed: int) -> None:
    """The catalog: category [root, cluster], a brand of five and a price, both random."""
    rng = np.random.default_rng(seed + 1)  # apart from the pairs' generator
    n = len(asins)
    columns = {
        "line": np.arange(1, n + 1),
        "asin": asins,
        "title": [f"product {i}" for i in range(n)],
        "brand": [f"brand {b}" for b in rng.integers(0, 5, n)],
        "price": np.round(rng.lognormal(3, 1, n), 2),
        "categories": [[["Root", f"cluster {c}"]] for c in cluster],
    }
    schema = stamped(PRODUCTS_SCHEMA, "parse", products_id=PRODUCTS_ID)
    table = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema})
    pq.write_table(table.cast(schema), path)
