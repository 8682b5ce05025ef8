"""pairs' row-level Arrow functions, which both engines run, on small exact examples."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.pair_rows import (
    classified_rows,
    cleaned,
    counts_schema,
    decoded_pairs,
    has_text,
    pair_counts,
    related_rows,
    relation_counts,
)

WEIGHTS = {"bought_together": 1.2, "also_bought": 1.0, "also_viewed": 0.5}
LISTS = pa.list_(pa.string())


def products() -> pa.Table:
    """Five products, one for each status and one that lists itself."""
    return pa.table(
        {
            "asin": ["A", "B", "C", "D", "E"],
            "title": ["a", " \t\u3000", "c", "d", "e"],
            "bought_together": pa.array([["B", "B", ""], None, [], [], ["E", "A"]], LISTS),
            "also_bought": pa.array(
                [["C", "D", None], ["A", "C"], ["A"], ["A", "B"], ["A", "B"]], LISTS
            ),
            "also_viewed": pa.array([None, None, None, [""], None], LISTS),
        }
    )


def as_sets(lists: pa.Array) -> list:
    return [None if entries is None else sorted(entries) for entries in lists.to_pylist()]


def test_cleaning_drops_null_and_empty_entries_and_repeats_and_keeps_null_lists():
    lists = pa.array([["a", None, "", "a", "b"], None, [], ["b", "b"], [None]], LISTS)
    assert as_sets(cleaned(lists)) == [["a", "b"], None, [], ["b"], []]
    assert as_sets(cleaned(lists.slice(1))) == [None, [], ["b"], []]


def test_a_title_of_white_space_is_no_title():
    titles = pa.array(["a", " ", "\u2028\u00a0", None, "", " x ", "\u200b"])
    assert has_text(titles).tolist() == [True, False, False, False, False, True, True]


def test_classification_takes_the_filters_in_order():
    table = classified_rows(products(), WEIGHTS, min_also_bought=2, require_title=True)
    statuses = ["kept", "no_title", "few_also_bought", "kept", "kept"]
    assert table.column("status").to_pylist() == statuses
    assert as_sets(table.column("bought_together")) == [["B"], None, [], [], ["A", "E"]]
    assert as_sets(table.column("also_viewed")) == [None, None, None, [], None]
    relaxed = classified_rows(products(), WEIGHTS, min_also_bought=0, require_title=False)
    assert relaxed.column("status").to_pylist() == ["kept"] * 5
    only_viewed = classified_rows(products(), {"also_viewed": 1.0}, 0, False)
    assert only_viewed.column("status").to_pylist() == ["no_relation"] * 5


def test_counts_of_statuses_rows_and_self_pairs():
    table = classified_rows(products(), WEIGHTS, min_also_bought=2, require_title=True)
    counts = pair_counts(table, WEIGHTS)
    assert list(counts) == counts_schema(WEIGHTS).names
    assert counts == {
        "products_read": 5,
        "no_title": 1,
        "few_also_bought": 1,
        "no_relation": 0,
        "kept": 3,
        "rows_bought_together": 3,  # A: B; E: E, A
        "self_bought_together": 1,  # E lists E
        "rows_also_bought": 6,
        "self_also_bought": 0,
        "rows_also_viewed": 0,
        "self_also_viewed": 0,
    }


def test_the_explode_is_one_row_per_entry():
    table = classified_rows(products(), WEIGHTS, min_also_bought=2, require_title=True)
    kept = table.filter(pc.equal(table.column("status"), "kept"))
    rows = related_rows(kept, WEIGHTS).to_pylist()
    got = sorted((row["asin"], row["other"], row["code"]) for row in rows)
    bought_together = [("A", "B", 1), ("E", "A", 1), ("E", "E", 1)]
    also_bought = [("A", "C", 4), ("A", "D", 4), ("D", "A", 4), ("D", "B", 4), ("E", "A", 4)]
    assert got == sorted([*bought_together, *also_bought, ("E", "B", 4)])


def test_the_two_bit_decode_gives_weights_and_bitmasks():
    # codes: both sides bought together (2), one also_bought (4), all four fields mixed
    code = np.array([2, 4, 2 + 4 + 16, 1 + 8 + 32], dtype=np.uint8)
    counts = relation_counts(code, WEIGHTS)
    assert {name: values.tolist() for name, values in counts.items()} == {
        "bought_together": [2, 0, 2, 1],
        "also_bought": [0, 1, 1, 2],
        "also_viewed": [0, 0, 1, 2],
    }
    pairs = pa.table({"src": [0, 1, 2, 3], "dst": [5, 6, 7, 8], "code": code})
    decoded = decoded_pairs(pairs, WEIGHTS)
    assert decoded.column("weight").type == pa.float32()
    expected = np.array([2.4, 1.0, 2.4 + 1.0 + 0.5, 1.2 + 2.0 + 1.0], dtype=np.float32)
    assert decoded.column("weight").to_numpy().tolist() == expected.tolist()
    assert decoded.column("relations").to_pylist() == [1, 2, 1 | 2 | 4, 1 | 2 | 4]
    assert decoded.column("relations").type == pa.uint8()
