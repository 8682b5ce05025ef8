"""Stage 2: exact pairs on a hand-made catalog, a reference check, errors, atomicity."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import pairs as pairs_module
from pipeline.__main__ import main as cli_main
from pipeline.contracts import (
    PAIRS_SCHEMA,
    PRODUCTS_SCHEMA,
    RELATION_BIT,
    RELATIONS,
    VOCAB_SCHEMA,
    require,
    stamped,
)
from pipeline.errors import PipelineError
from pipeline.files import read_json
from pipeline.pairs import DEFAULT_WEIGHTS, build_pairs

ALL_WEIGHTS = {**DEFAULT_WEIGHTS, "buy_after_viewing": 0.25}


def write_products(data_dir: Path, rows: list[dict]) -> Path:
    """products.parquet from rows holding asin, title and any relation lists."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full = [
        {"line": i + 1, **{name: None for name in PRODUCTS_SCHEMA.names[1:]}, **row}
        for i, row in enumerate(rows)
    ]
    table = pa.Table.from_pylist(full, schema=stamped(PRODUCTS_SCHEMA, "parse"))
    pq.write_table(table, data_dir / "products.parquet")
    return data_dir


def read_pairs(data_dir: Path) -> dict[tuple[str, str], tuple[float, int]]:
    """{(asin, asin) in id order: (weight, relations)}, checking src < dst and the sort."""
    vocab = pq.read_table(data_dir / "vocab.parquet").to_pylist()
    asin = {row["id"]: row["asin"] for row in vocab}
    rows = pq.read_table(data_dir / "pairs.parquet").to_pylist()
    keys = [(r["src"], r["dst"]) for r in rows]
    assert all(src < dst for src, dst in keys)
    assert keys == sorted(set(keys))
    return {(asin[r["src"]], asin[r["dst"]]): (r["weight"], r["relations"]) for r in rows}


def read_vocab(data_dir: Path) -> list[tuple[int, str, int, str | None]]:
    table = pq.read_table(data_dir / "vocab.parquet")
    return [tuple(row.values()) for row in table.to_pylist()]


# Every case: both directions, repeated relations, in-list duplicates, null and empty
# entries, out-of-catalog asins (X1, X2, X3), self-pairs, and each filter.
CATALOG = [
    {
        "asin": "A",
        "title": "Alpha",
        "bought_together": ["B"],
        "also_bought": ["B", "C", "C", "X1"],
        "also_viewed": ["D", "A"],
        "buy_after_viewing": ["E"],
    },
    {
        "asin": "B",
        "title": "Beta",
        "bought_together": ["A"],
        "also_bought": ["A", "C"],
        "buy_after_viewing": ["A"],
    },
    {
        "asin": "C",
        "title": "Gamma",
        "also_bought": ["A", "D", "C", None, ""],
        "also_viewed": ["B", "F", "X2"],
    },
    {"asin": "D", "title": None, "also_bought": ["A", "B", "C"]},  # no title
    {"asin": "E", "title": "", "also_bought": ["A", "B"]},  # empty title
    {"asin": "F", "title": "Foxtrot", "also_bought": ["A"], "also_viewed": ["G"]},  # 1
    {"asin": "G", "title": "Golf"},  # no lists at all
    {"asin": "H", "title": "Hotel", "bought_together": [], "also_bought": ["X3", "X3"]},
    {"asin": "I", "title": "India", "also_bought": [None], "also_viewed": []},
]


@pytest.fixture
def catalog(tmp_path) -> Path:
    return write_products(tmp_path / "data", CATALOG)


def test_hand_catalog_pairs_vocab_and_stats(catalog):
    stats = build_pairs(catalog, quiet=True)
    assert read_pairs(catalog) == {
        ("A", "B"): (pytest.approx(4.4), 3),  # bought_together and also_bought, both ways
        ("C", "A"): (2.0, 2),
        ("C", "B"): (1.5, 6),  # also_bought from B, also_viewed from C
        ("C", "D"): (1.0, 2),  # D is filtered out (no title) but C lists it
        ("A", "D"): (0.5, 4),
        ("C", "F"): (0.5, 4),
        ("A", "X1"): (1.0, 2),
        ("C", "X2"): (0.5, 4),
    }
    # Degrees C 5, A 4, B 2, D 2, F 1, X1 1, X2 1: ties by asin.
    assert read_vocab(catalog) == [
        (0, "C", 5, "Gamma"),
        (1, "A", 4, "Alpha"),
        (2, "B", 2, "Beta"),
        (3, "D", 2, None),
        (4, "F", 1, "Foxtrot"),  # F itself was skipped: its title is still the catalog's
        (5, "X1", 1, None),
        (6, "X2", 1, None),
    ]
    expected = {
        "products_read": 9,
        "skipped_no_title": 2,
        "skipped_few_also_bought": 4,  # F, G, I, and H: its two entries are one asin
        "skipped_no_relation": 0,
        "kept": 3,
        "exploded_rows_after_list_dedup": 15,
        "exploded_rows_after_list_dedup_by_relation": {
            "bought_together": 2,
            "also_bought": 8,
            "also_viewed": 5,
        },
        "self_pair_rows_dropped": 2,
        "self_pair_rows_dropped_by_relation": {
            "bought_together": 0,
            "also_bought": 1,
            "also_viewed": 1,
        },
        "pairs": 8,
        "vocabulary": 7,
        "vocabulary_out_of_catalog": 2,
        "vocabulary_without_title": 3,
        "weight_histogram": {"0.5": 3, "1.0": 2, "1.5": 1, "2.0": 1, "4.4": 1},
        "pairs_by_relations": {
            "also_bought": 3,
            "also_bought+also_viewed": 1,
            "also_viewed": 3,
            "bought_together+also_bought": 1,
        },
        "weights": DEFAULT_WEIGHTS,
        "min_also_bought": 2,
        "require_title": True,
    }
    assert {key: stats[key] for key in expected} == expected
    assert read_json(catalog / "pairs.json") == stats
    assert stats["seconds"] >= 0 and stats["peak_rss_mb"] > 0
    assert set(stats["phase_seconds"]) == set(pairs_module.PHASES)


def test_buy_after_viewing_counts_only_with_a_weight(catalog):
    build_pairs(catalog, weights=ALL_WEIGHTS, quiet=True)
    found = read_pairs(catalog)
    assert found[("A", "B")] == (pytest.approx(4.65), 1 | 2 | 8)
    assert found[("A", "E")] == (0.25, 8)
    assert len(found) == 9
    # A and C tie at degree 5; E's empty title is no title.
    assert read_vocab(catalog)[:2] == [(0, "A", 5, "Alpha"), (1, "C", 5, "Gamma")]
    assert (4, "E", 1, None) in read_vocab(catalog)
    stats = read_json(catalog / "pairs.json")
    assert stats["exploded_rows_after_list_dedup_by_relation"]["buy_after_viewing"] == 2
    assert stats["weights"] == ALL_WEIGHTS


def test_weights_choose_the_relations(catalog):
    build_pairs(catalog, weights={"also_viewed": 2.0}, quiet=True)
    assert read_pairs(catalog) == {
        ("A", "D"): (2.0, 4),
        ("C", "B"): (2.0, 4),
        ("C", "F"): (2.0, 4),
        ("C", "X2"): (2.0, 4),
    }


def test_filters_can_be_turned_off(catalog):
    stats = build_pairs(catalog, min_also_bought=0, require_title=False, quiet=True)
    counts = [stats[f"skipped_{name}"] for name in ("no_title", "few_also_bought", "no_relation")]
    assert counts == [0, 0, 2]  # G has no lists, I only a null entry and an empty list
    assert stats["kept"] == 7
    found = read_pairs(catalog)
    assert found[("H", "X3")] == (1.0, 2)
    assert found[("F", "G")] == (0.5, 4)
    assert found[("A", "D")] == (1.5, 2 | 4)  # D's own also_bought now counts
    assert len(found) == 14  # new: B-D, A-E, B-E, A-F, F-G, H-X3


def test_empty_result(tmp_path):
    data = write_products(tmp_path / "d", [{"asin": "A", "title": None, "also_bought": ["B"]}])
    with pytest.raises(PipelineError, match="no pairs: none of its 1 products passes"):
        build_pairs(data, quiet=True)  # tests/test_messages.py checks the whole message
    assert not (data / "pairs.json").exists() and not (data / "pairs.parquet").exists()


# --- against an independent in-memory reference --------------------------------------


def random_catalog(seed: int, n: int = 3000, outside: int = 1000) -> list[dict]:
    """Power-law lists over n catalog + ``outside`` other asins, with every oddity."""
    rng = np.random.default_rng(seed)
    universe = [f"P{i:05d}" for i in rng.permutation(n + outside)]
    popularity = np.arange(1, n + outside + 1) ** -1.0
    popularity /= popularity.sum()
    rows = []
    for i in range(n):
        title = rng.choice(["t", None, "", " "], p=[0.85, 0.07, 0.05, 0.03])
        row = {"asin": universe[i], "title": None if title is None else f"{title}{i}".strip()}
        if title in ("", " "):
            row["title"] = title
        for name in RELATIONS:
            kind = rng.random()
            if kind < 0.2:
                continue  # null list
            if kind < 0.25:
                row[name] = []
                continue
            size = min(int(rng.pareto(1.2) * 3) + 1, 60)
            entries = [universe[j] for j in rng.choice(len(universe), size, p=popularity)]
            if rng.random() < 0.05:
                entries.append(universe[i])  # self-reference
            if rng.random() < 0.05:
                entries.append(None)
            row[name] = entries
        rows.append(row)
    return rows


def reference(rows: list[dict], weights: dict, min_also_bought: int, require_title: bool):
    """Pairs {(asin, asin) sorted: (weight, mask)} and degrees, by plain dicts and sets."""
    weight = defaultdict(float)
    mask = defaultdict(int)
    for row in rows:
        title_ok = bool(row["title"] and row["title"].strip())
        lists = {name: {a for a in row.get(name) or [] if a} for name in RELATIONS}
        if require_title and not title_ok:
            continue
        if len(lists["also_bought"]) < min_also_bought:
            continue
        for name, w in weights.items():
            for other in lists[name]:
                if other != row["asin"]:
                    key = tuple(sorted((row["asin"], other)))
                    weight[key] += w
                    mask[key] |= RELATION_BIT[name]
    degree = defaultdict(int)
    for a, b in weight:
        degree[a] += 1
        degree[b] += 1
    return {key: (weight[key], mask[key]) for key in weight}, degree


@pytest.mark.parametrize(
    ("weights", "min_also_bought", "require_title"),
    [(DEFAULT_WEIGHTS, 2, True), (ALL_WEIGHTS, 1, False), ({"also_bought": 1.0}, 0, True)],
)
def test_matches_reference_on_random_catalog(tmp_path, weights, min_also_bought, require_title):
    rows = random_catalog(seed=7)
    data = write_products(tmp_path / "d", rows)
    stats = build_pairs(data, weights, min_also_bought, require_title, quiet=True)
    expected, degree = reference(rows, weights, min_also_bought, require_title)
    found = read_pairs(data)
    assert {tuple(sorted(key)) for key in found} == set(expected)
    for (a, b), (w, mask) in found.items():
        want_w, want_mask = expected[tuple(sorted((a, b)))]
        assert math.isclose(w, want_w, rel_tol=1e-6) and mask == want_mask
    titles = {r["asin"]: r["title"] for r in rows if r["title"] and r["title"].strip()}
    order = sorted(degree, key=lambda asin: (-degree[asin], asin))
    assert read_vocab(data) == [(i, a, degree[a], titles.get(a)) for i, a in enumerate(order)]
    catalog_asins = {r["asin"] for r in rows}
    assert stats["vocabulary_out_of_catalog"] == len(set(degree) - catalog_asins)
    assert sum(stats["weight_histogram"].values()) == stats["pairs"] == len(expected)
    assert stats["pairs"] > 1000 and stats["vocabulary_out_of_catalog"] > 100


def test_same_input_gives_byte_identical_outputs(tmp_path):
    data = write_products(tmp_path / "d", random_catalog(seed=3))
    build_pairs(data, quiet=True)
    first = {name: (data / name).read_bytes() for name in ("vocab.parquet", "pairs.parquet")}
    build_pairs(data, quiet=True)
    assert {name: (data / name).read_bytes() for name in first} == first


def test_outputs_are_stamped_and_row_groups_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs_module, "ROW_GROUP_ROWS", 1000)
    data = write_products(tmp_path / "d", random_catalog(seed=5))
    stats = build_pairs(data, quiet=True)
    for name, schema in (("vocab.parquet", VOCAB_SCHEMA), ("pairs.parquet", PAIRS_SCHEMA)):
        parquet = require(data / name, schema)
        assert parquet.schema_arrow.metadata[b"format_version"] == b"2"
        assert parquet.schema_arrow.metadata[b"stage"] == b"pairs"
        groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        assert max(groups) <= 1000
    assert sum(groups) == stats["pairs"] and len(groups) > 2


def test_heavy_steps_run_in_the_streaming_engine(catalog):
    """No step of the row-scale plans falls back to the in-memory engine."""
    products = catalog / "products.parquet"
    weights = ALL_WEIGHTS
    kept = pairs_module.classified(products, weights, 2, True).filter(pl.col("status") == "kept")
    grouped = catalog / "grouped.parquet"
    pl.DataFrame(schema={"key": pl.UInt64, "code": pl.UInt8}).write_parquet(grouped)
    vocab = pl.DataFrame(schema={"code": pl.UInt32, "id": pl.Int32})
    plans = {
        "distinct_asins": pairs_module.distinct_asins(kept, weights),
        "grouped_pairs": pairs_module.grouped_pairs(kept, weights, pl.Enum(["A", "B"])),
        "pair_degrees": pairs_module.pair_degrees(grouped),
        "remapped": pairs_module.remapped(grouped, vocab, weights),
    }
    for name, plan in plans.items():
        graph = plan.show_graph(engine="streaming", plan_stage="physical", raw_output=True)
        assert "group-by" in graph or "sort" in graph or "unique" in graph or "join" in graph
        fallback = [line for line in graph.splitlines() if 'fillcolor="0.0 0.3 1.0"' in line]
        assert not fallback, f"{name} falls back to the in-memory engine: {fallback}"


# --- bad input, bad options, atomicity ---------------------------------------------------


def test_missing_products_file(tmp_path):
    with pytest.raises(PipelineError, match=r"products\.parquet: not found.*pipeline parse"):
        build_pairs(tmp_path, quiet=True)


def test_wrong_schema(tmp_path):
    pq.write_table(pa.table({"asin": ["A"], "title": ["t"]}), tmp_path / "products.parquet")
    with pytest.raises(PipelineError, match="no format_version stamp, not written by"):
        build_pairs(tmp_path, quiet=True)
    table = pa.table({"asin": ["A"], "title": ["t"]}).cast(
        stamped(pa.schema([("asin", pa.string()), ("title", pa.string())]), "parse")
    )
    pq.write_table(table, tmp_path / "products.parquet")
    with pytest.raises(PipelineError, match="missing columns line, brand, price"):
        build_pairs(tmp_path, quiet=True)
    schema = PRODUCTS_SCHEMA.set(
        PRODUCTS_SCHEMA.get_field_index("also_bought"), pa.field("also_bought", pa.string())
    )
    pq.write_table(stamped(schema, "parse").empty_table(), tmp_path / "products.parquet")
    with pytest.raises(PipelineError, match="also_bought is string, expected list"):
        build_pairs(tmp_path, quiet=True)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"also_bougt": 1.0}, "unknown relation 'also_bougt' in weights"),
        ({"also_bought": -1.0}, "weight of also_bought must be a finite number >= 0"),
        ({"also_viewed": float("nan")}, "weight of also_viewed must be a finite number"),
        ({}, "weights give no relation a weight"),
    ],
)
def test_bad_weights(catalog, weights, message):
    with pytest.raises(PipelineError, match=message):
        build_pairs(catalog, weights=weights, quiet=True)
    assert sorted(p.name for p in catalog.iterdir()) == ["products.parquet"]


def test_repeated_asins_are_refused(tmp_path):
    rows = [{"asin": "A", "title": "a", "also_bought": ["B", "C"]}] * 2
    with pytest.raises(PipelineError, match="asins are not distinct"):
        build_pairs(write_products(tmp_path / "d", rows), quiet=True)


def test_progress_names_each_phase(catalog, capsys):
    build_pairs(catalog)
    err = capsys.readouterr().err
    assert all(f"pairs: {name}" in err for name in pairs_module.PHASES)
    build_pairs(catalog, quiet=True)
    assert capsys.readouterr().err == ""


def test_failure_midway_leaves_no_output(catalog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    # vocab is written by then; the pairs sink fails.
    monkeypatch.setattr(pairs_module, "remapped", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_pairs(catalog, quiet=True)
    assert sorted(p.name for p in catalog.iterdir()) == ["products.parquet"]


def test_failure_keeps_previous_outputs_whole(catalog, monkeypatch):
    build_pairs(catalog, quiet=True)
    before = {p.name: p.read_bytes() for p in catalog.iterdir()}
    monkeypatch.setattr(pairs_module, "_stats", lambda *a: 1 / 0)  # after both sinks
    with pytest.raises(ZeroDivisionError):
        build_pairs(catalog, weights={"also_viewed": 1.0}, quiet=True)
    assert {p.name: p.read_bytes() for p in catalog.iterdir()} == before


def test_cli(catalog, capsys):
    assert cli_main(["pairs", str(catalog), "--quiet", "--weights", "also_viewed=1"]) == 0
    assert capsys.readouterr().out.startswith("pairs: products_read=9 pairs=4 vocabulary=6")
    assert cli_main(["pairs", str(catalog), "--weights", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown relation 'bogus'") and err.count("\n") == 1
