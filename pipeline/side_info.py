"""Side information: each vocabulary product's brand, leaf category and price bucket, as codes.

A product's metadata comes from ``products.parquet`` through the vocabulary
(``vocab.parquet``, checked to be made from those products); vocabulary
products outside the catalog (a related asin never listed itself) have none.
For each feature the result is an int32 code per vocabulary id: 0 means
unknown (no value, or a value fewer than MIN_PRODUCTS vocabulary products
share: a value only one product holds tells nothing about any other); codes
1.. go to the values by descending count, ties by value, so they are
deterministic. The leaf category is the last name of a product's first
category path; price buckets are the PRICE_BUCKETS quantile ranges of the
vocabulary's known prices. One streaming join; the result holds a few int32
arrays of the vocabulary's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.contracts import (
    FEATURES,
    PRODUCTS,
    PRODUCTS_SCHEMA,
    VOCAB,
    VOCAB_SCHEMA,
    check_lineage,
    made_by,
    parse_features,
    require,
    vocabulary_size,
)
from pipeline.errors import PipelineError

MIN_PRODUCTS = 2
PRICE_BUCKETS = 10


@dataclass
class SideInfo:
    """Codes of each product's features: ``codes[name][id]``, 0 for unknown."""

    codes: dict[str, np.ndarray]  # feature -> (V,) int32
    sizes: dict[str, int]  # feature -> codes it uses, 0 included

    def known_share(self) -> dict[str, float]:
        """Per feature, the share of vocabulary products with a known value."""
        return {name: float((codes > 0).mean()) for name, codes in self.codes.items()}


def side_info(data_dir: str | os.PathLike, features: tuple[str, ...] = FEATURES) -> SideInfo:
    """The codes of ``features`` for every product of ``data_dir``'s vocabulary."""
    directory = Path(data_dir)
    features = parse_features(features)
    products, vocab = directory / PRODUCTS, directory / VOCAB
    require(products, PRODUCTS_SCHEMA)
    size = vocabulary_size(require(vocab, VOCAB_SCHEMA), vocab)
    check_lineage("products_id", products, vocab)
    metadata = pl.scan_parquet(products).select(
        "asin",
        brand=pl.col("brand").str.strip_chars().replace("", None),
        category=pl.col("categories").list.first().list.last().str.strip_chars().replace("", None),
        price=pl.col("price"),
    )
    frame = (
        pl.scan_parquet(vocab)
        .select("id", "asin")
        .join(metadata, on="asin", how="left")
        .sort("id")
        .collect(engine="streaming")
    )
    if frame.height != size or not (frame["id"] == np.arange(size)).all():
        raise PipelineError(f"{products}: an asin is listed twice; rerun `{made_by(products)}`")
    codes = {}
    for name in features:
        column = frame.get_column(name)
        codes[name] = _price_buckets(column) if name == "price" else _value_codes(column)
    sizes = {
        name: PRICE_BUCKETS + 1 if name == "price" else int(c.max(initial=0)) + 1
        for name, c in codes.items()
    }
    return SideInfo(codes, sizes)


def _value_codes(values: pl.Series) -> np.ndarray:
    """1.. by descending count (ties by value) for values MIN_PRODUCTS products share; else 0."""
    counts = values.drop_nulls().value_counts(name="count")
    kept = counts.filter(pl.col("count") >= MIN_PRODUCTS).sort(
        ["count", values.name], descending=[True, False]
    )
    mapping = pl.Series(range(1, kept.height + 1), dtype=pl.Int32)
    coded = values.replace_strict(kept.get_column(values.name), mapping, default=0)
    return coded.cast(pl.Int32).to_numpy(writable=True)


def _price_buckets(price: pl.Series) -> np.ndarray:
    """1..PRICE_BUCKETS by the known prices' quantiles; 0 where the price is unknown."""
    values = price.to_numpy().astype(np.float64)
    known = np.isfinite(values)
    if not known.any():
        return np.zeros(len(values), dtype=np.int32)
    edges = np.quantile(values[known], np.linspace(0, 1, PRICE_BUCKETS + 1)[1:-1])
    buckets = 1 + np.searchsorted(edges, values, side="right")
    return np.where(known, buckets, 0).astype(np.int32)
