"""Tests of the synthetic catalog generator: formats, planted structure and faults."""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections import Counter

import numpy as np
import pytest

from pipeline import synth, synth_lines
from pipeline.errors import PipelineError

N = 5000
KEYS_2014 = ["asin", "title", "price", "imUrl", "related", "salesRank", "brand", "categories"]
KEYS_2018 = [
    "category", "tech1", "description", "fit", "title", "also_buy", "image", "tech2", "brand",
    "feature", "rank", "also_view", "details", "main_cat", "similar_item", "date", "price", "asin",
]  # fmt: skip
LISTS_2014 = ("also_bought", "also_viewed", "bought_together")
ASIN = re.compile(r"[0-9A-Z]{10}")


def _load(text: str, fmt: str):
    """One line as the standard library reads it: a literal for py, JSON otherwise."""
    return ast.literal_eval(text) if fmt == "py" else json.loads(text)


def _read(path) -> list[bytes]:
    """The raw lines of a (possibly gzipped) file, without their newlines."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().split(b"\n")


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory) -> dict[str, tuple[dict, list[dict]]]:
    """A clean catalog of N products per format: (stats, records)."""
    out = {}
    for fmt in synth.FORMATS:
        path = tmp_path_factory.mktemp("synth") / f"catalog.{fmt}"
        stats = synth.generate(path, N, fmt=fmt, quiet=True)
        raw = path.read_bytes()
        assert raw.endswith(b"\n")
        out[fmt] = stats, [_load(line.decode(), fmt) for line in raw.splitlines()]
    return out


def _lists(record: dict) -> dict[str, list[str]]:
    """The related lists of a 2014 record, by name."""
    return record.get("related", {})


def _targets(records: list[dict], name: str | None = None) -> list[str]:
    """Every ASIN listed by the records (in lists ``name``, or in all lists)."""
    return [t for r in records for k, ts in _lists(r).items() if name in (None, k) for t in ts]


def test_same_seed_gives_identical_bytes(tmp_path):
    for fmt in synth.FORMATS:
        a, b, c = (tmp_path / f"{name}.{fmt}.gz" for name in "abc")
        synth.generate(a, 300, fmt=fmt, seed=7, quiet=True)
        synth.generate(b, 300, fmt=fmt, seed=7, quiet=True)
        synth.generate(c, 300, fmt=fmt, seed=8, quiet=True)
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_gzip_output_holds_the_plain_catalog(tmp_path):
    plain, packed = tmp_path / "c.json", tmp_path / "c.json.gz"
    stats = synth.generate(plain, 400, fmt="json", quiet=True)
    synth.generate(packed, 400, fmt="json", quiet=True)
    header = packed.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[3] == 0 and header[4:8] == bytes(4)  # no file name, mtime 0: reproducible
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert stats["bytes"] == plain.stat().st_size
    assert stats["lines"] == 400


@pytest.mark.parametrize("fmt", ["py", "json"])
def test_2014_records_have_the_keys_in_order(catalogs, fmt):
    stats, records = catalogs[fmt]
    assert stats["lines"] == len(records) == N
    for r in records:
        assert list(r) == [k for k in KEYS_2014 if k in r]
        assert ASIN.fullmatch(r["asin"])
        if "price" in r:
            assert isinstance(r["price"], float) and round(r["price"], 2) == r["price"] > 0
        assert all(ts for ts in _lists(r).values())  # present lists are never empty
        assert list(_lists(r)) == [k for k in LISTS_2014 if k in _lists(r)]
        (path,) = r["categories"]
        assert path[0] == synth.ROOT and len(path) == 3
        if "salesRank" in r:
            assert list(r["salesRank"]) == [path[1]] and isinstance(r["salesRank"][path[1]], int)


def test_py_lines_are_python_reprs(tmp_path):
    path = tmp_path / "c.py"
    synth.generate(path, N, quiet=True)
    lines = path.read_text().splitlines()
    assert all(repr(ast.literal_eval(line)) == line for line in lines)
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    double_quoted = sum("'title': \"" in line for line in lines) / len(lines)
    assert 0.02 < double_quoted < 0.09  # apostrophes in titles: Python picks "..."


def test_2018_records_have_every_key(catalogs):
    _, records = catalogs["json2018"]
    for r in records:
        assert list(r) == KEYS_2018
        assert ASIN.fullmatch(r["asin"])
        assert all(isinstance(r[k], list) for k in ("category", "also_buy", "also_view"))
        assert r["price"] == "" or re.fullmatch(r"\$[\d,]+\.\d\d", r["price"])
        assert r["rank"] == [] or re.fullmatch(r"[\d,]+ in .+ \(", r["rank"])
    assert any(r["title"] == "" for r in records)
    assert any("&amp;" in c for r in records for c in r["category"])


def test_formats_describe_the_same_products(catalogs):
    _, py = catalogs["py"]
    _, js = catalogs["json"]
    _, js18 = catalogs["json2018"]
    assert py == js
    assert [r["asin"] for r in js18] == [r["asin"] for r in py]
    assert [r["also_buy"] for r in js18] == [_lists(r).get("also_bought", []) for r in py]


def test_asins_are_distinct_and_counted(catalogs):
    for stats, records in catalogs.values():
        assert len({r["asin"] for r in records}) == stats["products"] == N
        assert stats["faults"] == {}


def test_lists_have_no_duplicates_or_self_references(catalogs):
    _, records = catalogs["py"]
    for r in records:
        for targets in _lists(r).values():
            assert len(set(targets)) == len(targets)
            assert r["asin"] not in targets
            assert all(ASIN.fullmatch(t) for t in targets)


def test_list_lengths_are_bounded_and_heavy_tailed(catalogs):
    _, records = catalogs["py"]
    lengths = {
        name: np.array([len(_lists(r).get(name, [])) for r in records]) for name in LISTS_2014
    }
    assert lengths["also_bought"].max() <= 100
    assert lengths["also_viewed"].max() <= 50
    assert lengths["bought_together"].max() <= 3
    for name in ("also_bought", "also_viewed"):
        assert np.percentile(lengths[name], 99) > 5 * np.median(lengths[name]) > 0


def test_about_15_percent_have_no_related(catalogs):
    _, records = catalogs["py"]
    share = sum("related" not in r for r in records) / len(records)
    assert 0.10 < share < 0.20


def test_about_10_percent_of_targets_are_outside_the_catalog(catalogs):
    _, records = catalogs["py"]
    catalog = {r["asin"] for r in records}
    targets = _targets(records)
    outside = sum(t not in catalog for t in targets) / len(targets)
    assert 0.05 < outside < 0.20


def test_popularity_has_a_heavy_tail(catalogs):
    _, records = catalogs["py"]
    counts = np.sort(np.array(list(Counter(_targets(records)).values())))[::-1]
    top = counts[: max(1, len(counts) // 100)]
    assert top.sum() > 0.10 * counts.sum()


def test_lists_follow_the_planted_clusters(catalogs):
    _, records = catalogs["py"]
    cluster = {r["asin"]: tuple(r["categories"][0]) for r in records}

    def same_cluster(name: str) -> float:
        pairs = [
            cluster[r["asin"]] == cluster[t]
            for r in records
            for t in _lists(r).get(name, [])
            if t in cluster
        ]
        return sum(pairs) / len(pairs)

    bought, viewed, together = (same_cluster(name) for name in LISTS_2014)
    assert together > 0.95
    assert 0.7 < bought < 0.9
    assert viewed < bought - 0.1


def test_titles_mostly_present_with_apostrophes_and_entities(catalogs):
    _, records = catalogs["json"]
    titles = [r.get("title") for r in records]
    assert 0.01 < titles.count(None) / N < 0.06
    assert any("'" in t for t in titles if t) and any("&amp;" in t for t in titles if t)
    assert 0.85 < sum("price" in r for r in records) / N < 0.95
    assert 0.35 < sum("brand" in r for r in records) / N < 0.45


@pytest.mark.parametrize("products", [0, -3])
def test_too_few_products_is_refused(tmp_path, products):
    with pytest.raises(PipelineError, match="--products must be at least 1"):
        synth.generate(tmp_path / "c.py", products, quiet=True)
    assert not list(tmp_path.iterdir())


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(PipelineError, match="--format"):
        synth.generate(tmp_path / "c.txt", 10, fmt="csv", quiet=True)


def test_a_single_product(tmp_path):
    stats = synth.generate(tmp_path / "c.py", 1, quiet=True)
    (line,) = (tmp_path / "c.py").read_text().splitlines()
    assert ast.literal_eval(line)["asin"] and stats["products"] == stats["lines"] == 1


def _classify(line: bytes, fmt: str) -> tuple[str, dict | None]:
    """What a parser should make of one messy line: a fault kind or 'ok', and the record."""
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        value = _load(text, fmt)
    except (ValueError, SyntaxError):
        return ("injection" if "__import__" in text else "truncated"), None
    return ("ok", value) if isinstance(value, dict) else ("not_a_dict", None)


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_messy_faults_are_planted_and_counted(tmp_path, fmt):
    n = 2000
    messy, clean = tmp_path / f"messy.{fmt}", tmp_path / f"clean.{fmt}"
    stats = synth.generate(messy, n, fmt=fmt, messy=True, quiet=True)
    synth.generate(clean, n, fmt=fmt, quiet=True)
    raw = messy.read_bytes()
    assert not raw.endswith(b"\n")
    lines = raw.split(b"\n")
    assert len(lines) == stats["lines"]

    found, seen, ok_lines = Counter({"no_final_newline": 1}), set(), set()
    for line in lines:
        kind, record = _classify(line, fmt)
        if record is not None:
            asin = record["asin"]
            if asin in seen:
                kind = "duplicate_asin"
            elif record.get("title") in synth_lines.ODD_TITLES:
                kind = "odd_titles"
            elif (
                fmt != "json2018" and record.get("related") and not any(record["related"].values())
            ):
                kind = "empty_lists"
            seen.add(asin)
        found[kind] += 1
        if kind == "ok":
            ok_lines.add(line)
    ok = found.pop("ok")

    assert set(stats["faults"]) == set(synth_lines.FAULT_KINDS)
    assert all(count >= 1 for count in stats["faults"].values())
    assert stats["faults"]["injection"] == 1
    expected = dict(stats["faults"])
    if fmt == "json2018":  # empty lists look like no lists: those lines pass as ok
        ok -= expected.pop("empty_lists")
    assert dict(found) == expected
    assert len(seen) == stats["products"] == n - expected["truncated"] - expected["invalid_utf8"]
    assert ok + stats["faults"]["odd_titles"] + stats["faults"]["empty_lists"] == stats["products"]
    assert 0.002 * n <= stats["faults"]["truncated"] <= 0.01 * n
    # Faults are drawn from a separate stream: the other lines are the clean catalog's.
    changed = ok_lines - set(clean.read_bytes().split(b"\n"))
    # (in 2018 an emptied product looks ok but differs, unless it had no lists anyway)
    assert len(changed) <= (stats["faults"]["empty_lists"] if fmt == "json2018" else 0)


def test_small_messy_catalogs_only_lose_the_final_newline(tmp_path):
    stats = synth.generate(tmp_path / "c.json", 20, fmt="json", messy=True, quiet=True)
    assert stats["faults"]["no_final_newline"] == 1
    assert sum(stats["faults"].values()) == 1
    raw = (tmp_path / "c.json").read_bytes()
    assert not raw.endswith(b"\n") and len(raw.split(b"\n")) == 20 == stats["products"]
