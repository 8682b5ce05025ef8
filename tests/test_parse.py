"""Stage 1: parsing each format, every fault, the line accounting, atomicity."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import DIGITAL_MUSIC_2014, MAGAZINES_2018, write_lines

from pipeline import parse as parse_module
from pipeline.errors import PipelineError
from pipeline.parse import parse


def products(out) -> list[dict]:
    return pq.read_table(out / "products.parquet").to_pylist()


def rejects(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def by_asin(out) -> dict[str, dict]:
    return {row["asin"]: row for row in products(out)}


PRODUCT_2014 = {
    "asin": "B000000001",
    "title": 'Kid\'s "Deluxe" Cable \\ 2m',
    "price": 9.49,
    "imUrl": "http://example.com/a.jpg",
    "related": {
        "also_bought": ["B000000002", "B000000003"],
        "also_viewed": ["B000000004"],
        "bought_together": ["B000000002"],
        "buy_after_viewing": ["B000000005"],
    },
    "salesRank": {"Electronics": 1234},
    "brand": "Acme",
    "categories": [["Electronics", "Cables"], ["Electronics", "Audio"]],
}
EXPECTED_2014 = {
    "line": 1,
    "asin": "B000000001",
    "title": 'Kid\'s "Deluxe" Cable \\ 2m',
    "brand": "Acme",
    "price": 9.49,
    "categories": [["Electronics", "Cables"], ["Electronics", "Audio"]],
    "sales_rank": 1234,
    "sales_rank_category": "Electronics",
    "bought_together": ["B000000002"],
    "also_bought": ["B000000002", "B000000003"],
    "also_viewed": ["B000000004"],
    "buy_after_viewing": ["B000000005"],
}


@pytest.mark.parametrize("fmt", ["py", "json"])
def test_2014_schema_in_both_encodings(tmp_path, fmt):
    line = repr(PRODUCT_2014) if fmt == "py" else json.dumps(PRODUCT_2014)
    raw = write_lines(tmp_path / "meta.json", [line])
    stats = parse(raw, tmp_path / "out", workers=1, quiet=True)
    assert stats["format"] == fmt
    assert products(tmp_path / "out") == [EXPECTED_2014]


def test_2018_schema_normalises_blanks_and_junk(tmp_path):
    base = {
        "category": ["Electronics", "Cables &amp; Adapters"],
        "tech1": "",
        "description": [],
        "title": "",
        "also_buy": ["B000000002"],
        "also_view": [],
        "brand": "",
        "rank": "1,234 in Electronics (",
        "main_cat": "Electronics",
        "price": "$3.17",
        "asin": "B000000001",
    }
    junk = dict(base, asin="B000000009", price=".a-box-inner{background-color:#fff}", rank=[])
    raw = write_lines(tmp_path / "meta.json", [json.dumps(base), json.dumps(junk)])
    stats = parse(raw, tmp_path / "out", workers=1, quiet=True)
    assert stats["format"] == "json2018"
    rows = by_asin(tmp_path / "out")
    first = rows["B000000001"]
    assert first["title"] is None and first["brand"] is None
    assert first["price"] == 3.17
    assert (first["sales_rank"], first["sales_rank_category"]) == (1234, "Electronics")
    assert first["categories"] == [["Electronics", "Cables &amp; Adapters"]]
    assert first["also_bought"] == ["B000000002"]
    assert first["also_viewed"] is None and first["bought_together"] is None
    junk_row = rows["B000000009"]
    assert junk_row["price"] is None and junk_row["sales_rank"] is None


def test_real_2014_sample_parses_without_rejects(tmp_path, shared_sample):
    stats = parse(shared_sample(DIGITAL_MUSIC_2014), tmp_path, workers=1, quiet=True)
    assert stats["format"] == "py"
    assert (stats["lines"], stats["products"], stats["rejected"]) == (7419, 7419, 0)
    table = pq.read_table(tmp_path / "products.parquet")
    assert table.column("asin").to_pylist()[:2] == ["5555991584", "6308051551"]
    assert table.column("title").to_pylist()[1] == "Don't Drink His Blood"
    # Edge totals from SOURCES.md: the lists survive intact.
    for relation, edges in [
        ("also_bought", 319_267),
        ("bought_together", 6_908),
        ("also_viewed", 5_093),
        ("buy_after_viewing", 21_179),
    ]:
        assert sum(len(v or []) for v in table.column(relation).to_pylist()) == edges


def test_real_2018_sample_keeps_first_of_repeated_asins(tmp_path, shared_sample):
    stats = parse(shared_sample(MAGAZINES_2018), tmp_path, workers=1, quiet=True)
    assert stats["format"] == "json2018"
    assert (stats["lines"], stats["products"], stats["duplicates"], stats["rejected"]) == (
        3385,
        2320,
        1065,
        0,
    )
    lines = pq.read_table(tmp_path / "products.parquet").column("line").to_pylist()
    assert lines == sorted(lines) and len(set(lines)) == 2320


GOOD = [
    repr({"asin": f"B00000000{i}", "title": f"t{i}", "related": {"also_bought": ["X"]}})
    for i in range(4)
]


def test_every_fault_is_quarantined_with_its_reason(tmp_path):
    marker = tmp_path / "pwned"
    lines = [
        GOOD[0],
        GOOD[1][:30],  # truncated
        GOOD[2].encode().replace(b"t2", b"t\xff2"),  # invalid UTF-8
        "[1, 2, 3]",  # not an object
        f"__import__('os').system('touch {marker}')",  # code, never run
        "",  # blank
        repr({"title": "no asin"}),
        repr({"asin": "B0000000X1", "related": ["not", "a", "dict"]}),
        repr({"asin": "B0000000X2", "related": {"also_bought": [1, 2]}}),
        repr({"asin": "B0000000X4", "categories": [["Books"], "Music"]}),  # not a list of chars
        repr({"asin": "B0000000X5", "related": {"also_viewed": "B000000001"}}),
        GOOD[0].replace("t0", "second copy"),  # duplicate asin: first wins
        repr({"asin": "B0000000X3", "related": {"also_bought": []}, "title": ""}),
        GOOD[3],
    ]
    raw = write_lines(tmp_path / "meta.json", lines, final_newline=False)
    stats = parse(raw, tmp_path / "out", fmt="py", workers=1, quiet=True)
    assert not marker.exists()
    assert [(r["line"], r["reason"]) for r in rejects(tmp_path / "out")] == [
        (2, "truncated line"),
        (3, "invalid UTF-8"),
        (4, "not an object"),
        (5, "not a Python literal"),
        (6, "blank line"),
        (7, "missing asin"),
        (8, "bad related"),
        (9, "bad also_bought"),
        (10, "bad categories"),
        (11, "bad also_viewed"),
    ]
    assert rejects(tmp_path / "out")[3]["text"].startswith("__import__('os')")
    assert stats["lines"] == 14
    assert (stats["products"], stats["duplicates"], stats["rejected"]) == (3, 1, 10)
    rows = by_asin(tmp_path / "out")
    assert rows["B000000000"]["title"] == "t0"  # the first occurrence
    assert rows["B0000000X3"]["also_bought"] is None and rows["B0000000X3"]["title"] is None
    assert rows["B000000003"]["line"] == 14  # the last line, without a newline


def test_bad_lines_inside_large_blocks_are_isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(parse_module, "BLOCK_BYTES", 4096)
    lines = [json.dumps({"asin": f"A{i:09d}", "title": "x" * (i % 50)}) for i in range(2000)]
    for bad in (17, 500, 501, 1999):
        lines[bad] = lines[bad][:-1]  # drop the closing brace
    raw = write_lines(tmp_path / "meta.json", lines)
    stats = parse(raw, tmp_path / "out", workers=1, quiet=True)
    assert [r["line"] for r in rejects(tmp_path / "out")] == [18, 501, 502, 2000]
    assert stats["products"] == 1996
    assert products(tmp_path / "out")[17]["asin"] == "A000000018"


def test_worker_processes_give_the_same_output(tmp_path, monkeypatch):
    monkeypatch.setattr(parse_module, "BLOCK_BYTES", 2048)
    lines = [repr({"asin": f"A{i % 700:09d}", "title": f"it's {i}"}) for i in range(1000)]
    lines[10] = "{'asin': 'broken"
    raw = write_lines(tmp_path / "meta.json.gz", lines)
    one = parse(raw, tmp_path / "one", workers=1, quiet=True)
    two = parse(raw, tmp_path / "two", workers=2, quiet=True)
    assert pq.read_table(tmp_path / "one/products.parquet").equals(
        pq.read_table(tmp_path / "two/products.parquet")
    )
    assert rejects(tmp_path / "one") == rejects(tmp_path / "two")
    for key in ("lines", "products", "duplicates", "rejected"):
        assert one[key] == two[key]
    assert one["worker_peak_rss_mb"] is None and 20 < two["worker_peak_rss_mb"] < 1000
    # The broken line 11 held asin 10; its repeat on line 711 is the first valid one.
    assert (one["products"], one["duplicates"], one["rejected"]) == (700, 299, 1)
    assert by_asin(tmp_path / "two")["A000000010"]["line"] == 711


def test_crlf_line_endings(tmp_path):
    raw = tmp_path / "meta.json"
    raw.write_bytes(b"".join(json.dumps({"asin": f"A{i}"}).encode() + b"\r\n" for i in range(50)))
    stats = parse(raw, tmp_path / "out", workers=1, quiet=True)
    assert (stats["products"], stats["rejected"]) == (50, 0)


def test_truncated_gzip_is_one_clear_error_and_leaves_nothing(tmp_path):
    data = gzip.compress(
        b"".join(
            json.dumps({"asin": f"A{i:09d}", "title": "t" * 200}).encode() + b"\n"
            for i in range(20000)
        )
    )
    raw = tmp_path / "meta.json.gz"
    raw.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        PipelineError,
        match=r"meta\.json\.gz: truncated or corrupt gzip stream "
        r"after line \d+",
    ):
        parse(raw, tmp_path / "out", fmt="json", workers=1, quiet=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_format_detection_failure_and_missing_file(tmp_path):
    raw = write_lines(tmp_path / "notes.txt", ["hello", "world"])
    with pytest.raises(PipelineError, match="cannot tell the format"):
        parse(raw, tmp_path / "out", quiet=True)
    with pytest.raises(PipelineError, match="cannot read"):
        parse(tmp_path / "absent.json", tmp_path / "out", quiet=True)


def test_cli_prints_one_line_error_for_missing_file(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "parse",
            str(tmp_path / "nope.json"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=parse_module.__file__.rsplit("/pipeline/", 1)[0],
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope.json: cannot read" in result.stderr


def test_cli_runs_and_reports(tmp_path):
    raw = write_lines(tmp_path / "meta.json", GOOD)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "parse",
            str(raw),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=parse_module.__file__.rsplit("/pipeline/", 1)[0],
    )
    assert result.returncode == 0, result.stderr
    assert "products=4" in result.stdout and result.stderr == ""
    stats = json.loads((tmp_path / "out" / "parse.json").read_text())
    assert stats["lines"] == stats["products"] + stats["duplicates"] + stats["rejected"] == 4
