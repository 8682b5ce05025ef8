"""pairs' row-level steps, as Arrow batch functions both engines run.

polars runs them on its streaming batches (``map_batches``, pairs.py), Spark
under ``mapInArrow`` (pairs_spark.py); the engines differ only in the global
steps around them (grouping, joins, sorts). Each step is defined once here:

- :func:`classified_rows`: a product's cleaned weighted lists and ``status``,
  ``kept`` or the first filter it fails (FILTERS order);
- :func:`pair_counts`: products per status, and rows and self-pair rows per
  relation of the kept products, for pairs.json's accounting;
- :func:`related_rows`: the explode, one row per entry of a weighted list;
- :func:`relation_counts` and :func:`decoded_pairs`: the 2-bit count per
  relation that a grouped pair's ``code`` sums, and the weight and relation
  bitmask computed from it in a fixed order, so the float32 weights are the
  same in both engines and from run to run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import RELATION_BIT, RELATIONS

FILTERS = ("no_title", "few_also_bought", "no_relation")  # checked in this order
STATUSES = (*FILTERS, "kept")
SHIFT = {name: 4**i for i, name in enumerate(RELATIONS)}  # 2-bit count per relation
# Unicode's White_Space, what polars' strip_chars() strips and Java's (?U)\s matches.
_NOT_WHITE_SPACE = (
    r"[^\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
)

# A row of the explode: one entry of a weighted list, ``code`` 1 in its relation's field.
EXPLODED_SCHEMA = pa.schema([("asin", pa.string()), ("other", pa.string()), ("code", pa.int8())])


def classified_schema(weights: Mapping[str, float]) -> pa.Schema:
    """The rows of :func:`classified_rows`: asin, the cleaned weighted lists, status."""
    lists = [(name, pa.list_(pa.string())) for name in weights]
    return pa.schema([("asin", pa.string()), *lists, ("status", pa.string())])


def has_text(titles: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Whether each title holds a character other than white space (null: no)."""
    found = pc.match_substring_regex(titles, _NOT_WHITE_SPACE)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def cleaned(lists: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """``lists`` without null or empty entries or repeats (a null list stays null).

    The entries of a cleaned list keep no particular order: every later step
    counts or groups them.
    """
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    owners = pc.list_parent_indices(lists).to_numpy()
    keep = pc.fill_null(pc.not_equal(values, ""), False).to_numpy(zero_copy_only=False)
    values, owners = values.filter(keep), owners[keep]
    codes = pc.dictionary_encode(values).indices.to_numpy()
    key = owners.astype(np.int64) * (int(codes.max(initial=0)) + 1) + codes
    _, first = np.unique(key, return_index=True)  # one entry per (list, value), by list
    lengths = np.bincount(owners[first], minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    mask = lists.is_null() if lists.null_count else None
    return pa.ListArray.from_arrays(offsets, values.take(first), mask=mask)


def list_lengths(lists: pa.Array) -> np.ndarray:
    """The entries of each list; a null list has none."""
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)


def classified_rows(
    products: pa.RecordBatch | pa.Table,
    weights: Mapping[str, float],
    min_also_bought: int,
    require_title: bool,
) -> pa.Table:
    """Each product's asin, cleaned weighted lists and ``status``: kept or the filter
    failed (no title when ``require_title``, fewer than ``min_also_bought`` distinct
    also_bought entries, no entry in a weighted list), in classified_schema."""
    lists = {
        name: cleaned(products.column(name)) for name in dict.fromkeys([*weights, "also_bought"])
    }
    has_relation = np.zeros(products.num_rows, dtype=bool)
    for name in weights:
        has_relation |= list_lengths(lists[name]) > 0
    no_title = ~has_text(products.column("title")) if require_title else False
    few = list_lengths(lists["also_bought"]) < min_also_bought
    status = np.select([no_title, few, ~has_relation], list(FILTERS), default="kept").astype(object)
    columns = [products.column("asin"), *[lists[name] for name in weights], pa.array(status)]
    return pa.table(columns, schema=classified_schema(weights))


def counts_schema(weights: Mapping[str, float]) -> pa.Schema:
    """The counts of :func:`pair_counts`, in its order."""
    per_relation = [f"{kind}_{name}" for name in weights for kind in ("rows", "self")]
    return pa.schema([(name, pa.int64()) for name in ("products_read", *STATUSES, *per_relation)])


def pair_counts(classified: pa.RecordBatch | pa.Table, weights: Mapping[str, float]) -> dict:
    """Products per status, and rows and self-pair rows (a list naming its own
    product) per relation of the kept products, of :func:`classified_rows`' rows."""
    status = classified.column("status").to_numpy(zero_copy_only=False)
    kept = status == "kept"
    counts = {"products_read": len(status)}
    counts.update({name: int(np.count_nonzero(status == name)) for name in STATUSES})
    asins = classified.column("asin")
    for name in weights:
        lists = classified.column(name)
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        owners = pc.list_parent_indices(lists).to_numpy()
        own = pc.equal(pc.list_flatten(lists), asins.take(owners)).to_numpy(zero_copy_only=False)
        counts[f"rows_{name}"] = int(list_lengths(lists)[kept].sum())
        # A cleaned list names its product at most once: a self-pair row is a product.
        counts[f"self_{name}"] = int(np.count_nonzero(own & kept[owners]))
    return counts


def related_rows(products: pa.RecordBatch | pa.Table, weights: Mapping[str, float]) -> pa.Table:
    """The explode: one row (asin, other, code) per entry of a weighted list of
    ``products`` (kept products, lists cleaned), in EXPLODED_SCHEMA."""
    parts = []
    for name in weights:
        lists = products.column(name)
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        # Null lists hold no entries (list_flatten skips them, whatever their offsets say).
        owners = np.repeat(np.arange(len(lists)), list_lengths(lists))
        code = np.full(len(owners), SHIFT[name], dtype=np.int8)
        columns = [products.column("asin").take(owners), pc.list_flatten(lists), code]
        parts.append(pa.table(columns, schema=EXPLODED_SCHEMA))
    return pa.concat_tables(parts)


def relation_counts(code: np.ndarray, weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """The 2-bit decode: per weighted relation, the rows (0, 1 or 2) that link each
    pair, from the ``code`` its rows sum to (one row of a relation adds SHIFT)."""
    code = np.asarray(code, dtype=np.int64)
    return {name: (code // SHIFT[name]) % 4 for name in weights}


def pair_weights(code: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """Each pair's weight in float64: its rows of each relation times the relation's
    weight, summed in the order of ``weights``."""
    total = np.zeros(len(code))
    for name, count in relation_counts(code, weights).items():
        total += count * weights[name]
    return total


def decoded_pairs(pairs: pa.RecordBatch | pa.Table, weights: Mapping[str, float]) -> pa.Table:
    """(src, dst, code) rows as pairs.parquet's: src, dst, float32 weight and the
    ``relations`` bitmask (contracts.RELATION_BIT)."""
    code = pairs.column("code").to_numpy()
    relations = np.zeros(len(code), dtype=np.uint8)
    for name, count in relation_counts(code, weights).items():
        relations |= np.where(count > 0, RELATION_BIT[name], 0).astype(np.uint8)
    weight = pair_weights(code, weights).astype(np.float32)
    names = ["src", "dst", "weight", "relations"]
    return pa.table([pairs.column("src"), pairs.column("dst"), weight, relations], names=names)
