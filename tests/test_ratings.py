"""The ratings stage: every format, bad lines, repeats, ids, titles, counting, determinism."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA, write_lines
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.ratings as ratings_module
from pipeline.contracts import PRODUCTS_SCHEMA, stamped
from pipeline.decode import count_lines
from pipeline.errors import PipelineError
from pipeline.rating_formats import decode_block, detect_format
from pipeline.ratings import ratings

REPO = Path(__file__).resolve().parents[1]
# (user, item, rating, timestamp) of every format's sample below
ROWS = [("1", "10", 4.0, 100), ("2", "10", 3.5, 101), ("1", "20", 5.0, 102)]


def amazon(user, item, rating, timestamp, **extra) -> str:
    record = {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": timestamp}
    return json.dumps({**record, "reviewText": "fine, really", **extra})


SAMPLES = {
    "movielens-csv": (
        "ratings.csv",
        ["userId,movieId,rating,timestamp\r"] + [f"{u},{i},{r},{t}\r" for u, i, r, t in ROWS],
    ),
    "movielens-100k": ("u.data", [f"{u}\t{i}\t{math.ceil(r)}\t{t}" for u, i, r, t in ROWS]),
    "movielens-dat": ("ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in ROWS]),
    "recbole": (
        "ml-100k.inter",
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
        + [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ROWS],
    ),
    "amazon": (
        "reviews.json.gz",
        [amazon(f"U{u}", f"B{i}", math.ceil(r), t) for u, i, r, t in ROWS],
    ),
}


def read(path: Path) -> dict:
    return pq.read_table(path).to_pydict()


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_each_format_is_detected_and_read_exactly(tmp_path, fmt):
    name, lines = SAMPLES[fmt]
    raw = write_lines(tmp_path / name, lines)
    assert detect_format(raw) == fmt
    stats = ratings(raw, tmp_path / "out", quiet=True, scale="1:5" if fmt == "recbole" else None)
    assert (stats["format"], stats["lines"], stats["ratings"], stats["rejected"]) == (fmt, 3, 3, 0)
    found = read(tmp_path / "out" / "ratings.parquet")
    whole = fmt in ("movielens-100k", "amazon")  # whole stars: 3.5 is written as 4
    assert found["user"] == [0, 1, 0] and found["item"] == [0, 0, 1]
    assert found["rating"] == ([4.0, 4.0, 5.0] if whole else [4.0, 3.5, 5.0])
    assert found["timestamp"] == [100, 101, 102]
    users = read(tmp_path / "out" / "users.parquet")
    prefix = "U" if fmt == "amazon" else ""
    assert users["key"] == [f"{prefix}1", f"{prefix}2"] and users["ratings"] == [2, 1]
    items = read(tmp_path / "out" / "items.parquet")
    assert items["id"] == [0, 1] and items["ratings"] == [2, 1]
    metadata = pq.read_schema(tmp_path / "out" / "ratings.parquet").metadata
    assert (
        metadata[b"stage"] == b"ratings" and metadata[b"ratings_id"].decode() == stats["ratings_id"]
    )


def test_bad_lines_are_quarantined_with_their_reasons_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(ratings_module, "BLOCK_BYTES", 64)  # bad lines inside many blocks
    good = [f"{u},{i},{r},{t}" for u, i, r, t in ROWS * 10]
    bad = {
        5: "7,8,nan,1",
        9: "7,8,4",
        12: "",
        15: ",8,4,1",
        18: "7,8,four,1",
        21: "7,8,4,1.5",
        26: b"7,8,\xff4,1",
    }
    lines = ["userId,movieId,rating,timestamp", *good]
    for number, line in sorted(bad.items()):
        lines.insert(number - 1, line)
    raw = write_lines(tmp_path / "ratings.csv", lines)
    stats = ratings(raw, tmp_path, quiet=True)
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert {r["line"]: r["reason"] for r in rejects} == {
        5: "rating is not a finite number",
        9: "3 fields, not 4",
        12: "empty line",
        15: "no user",
        18: "rating is not a finite number",
        21: "timestamp is not an integer",
        26: "not UTF-8",
    }
    assert stats["lines"] == len(lines) - 1 == stats["ratings"] + stats["repeated"] + 7
    assert stats["rejected_by_reason"]["rating is not a finite number"] == 2
    assert stats["repeated"] == 27  # ROWS ten times: three distinct pairs
    assert read(tmp_path / "ratings.parquet")["rating"] == [4.0, 3.5, 5.0]


def test_a_repeated_pair_keeps_its_latest_rating(tmp_path):
    raw = write_lines(
        tmp_path / "u.data",
        ["1\t10\t1\t500", "1\t10\t2\t900", "2\t10\t3\t5", "1\t10\t4\t700", "2\t10\t5\t5"],
    )
    stats = ratings(raw, tmp_path, quiet=True)
    assert (stats["ratings"], stats["repeated"]) == (2, 3)
    found = read(tmp_path / "ratings.parquet")
    # user 1: timestamp 900 wins; user 2: a tie at 5, the later line wins; file order kept
    assert list(zip(found["user"], found["rating"], found["timestamp"])) == [
        (0, 2.0, 900),
        (1, 5.0, 5),
    ]


def test_amazon_lines_missing_fields_or_not_json_are_refused(tmp_path):
    lines = [
        amazon("A", "B1", 5.0, 1),
        '{"reviewerID": "A", "asin": "B2", "overall": 4.0}',
        "not json at all",
        '["a list"]',
        amazon("A", "B3", "5", 1),
        amazon("A", "B4", 3, 2),  # an integer rating is a rating
    ]
    stats = ratings(write_lines(tmp_path / "r.json", lines), tmp_path, quiet=True)
    assert stats["rejected_by_reason"] == {
        "no unixReviewTime": 1,
        "not JSON": 1,
        "not a JSON object": 1,
        "overall or unixReviewTime is not a JSON number": 1,
    }
    assert read(tmp_path / "items.parquet")["key"] == ["B1", "B4"]


def test_titles_from_each_kind_of_file(tmp_path):
    raw = write_lines(tmp_path / "u.data", ["1\t10\t4\t1", "1\t20\t3\t2", "1\t30\t3\t3"])
    files = {
        "movies.csv": write_lines(
            tmp_path / "movies.csv",
            ["movieId,title,genres", '10,"Heat, Again (1995)",Action', "20,Up (2009),Kids"],
        ),
        "u.item": write_lines(
            tmp_path / "u.item", ["10|Café (1995)|01-Jan-1995||x|0|1".encode("latin-1")]
        ),
        "movies.dat": write_lines(
            tmp_path / "movies.dat", ["10::Star Wars: Episode IV (1977)::Action", "20::Up::Kids"]
        ),
    }
    expected = {
        "movies.csv": ["Heat, Again (1995)", "Up (2009)", None],
        "u.item": ["Café (1995)", None, None],
        "movies.dat": ["Star Wars: Episode IV (1977)", "Up", None],
    }
    for name, titles in files.items():
        stats = ratings(raw, tmp_path / name.replace(".", "-"), titles=titles, quiet=True)
        items = read(tmp_path / name.replace(".", "-") / "items.parquet")
        assert items["title"] == expected[name], name
        assert stats["items_titled"] == sum(t is not None for t in expected[name])


def test_titles_from_an_amazon_products_file(tmp_path):
    products = pa.table(
        {"asin": ["B10", "B20"], "title": ["Guitar", None]},
    )
    columns = [
        products.column(f.name) if f.name in products.column_names else pa.nulls(2, f.type)
        for f in PRODUCTS_SCHEMA
    ]
    pq.write_table(
        pa.table(columns, schema=stamped(PRODUCTS_SCHEMA, "parse")), tmp_path / "products.parquet"
    )
    raw = write_lines(tmp_path / "r.json", [amazon("A", "B10", 5, 1), amazon("A", "B20", 4, 2)])
    ratings(raw, tmp_path / "out", titles=tmp_path / "products.parquet", quiet=True)
    assert read(tmp_path / "out" / "items.parquet")["title"] == ["Guitar", None]


def test_the_same_input_gives_the_same_files(tmp_path):
    lines = [f"{u % 7},{(u * 13) % 11},{u % 5 + 1},{u}" for u in range(300)]
    raw = write_lines(tmp_path / "ratings.csv", ["userId,movieId,rating,timestamp", *lines])
    outputs = []
    for run in range(2):
        ratings(raw, tmp_path / str(run), quiet=True)
        outputs.append(
            [(tmp_path / str(run) / n).read_bytes() for n in ("ratings.parquet", "users.parquet")]
        )
    assert outputs[0] == outputs[1]


def test_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="cannot tell the rating format"):
        ratings(write_lines(tmp_path / "x.txt", ["hello world"]), tmp_path / "a", quiet=True)
    with pytest.raises(PipelineError, match="not the movielens-csv header"):
        ratings(
            write_lines(tmp_path / "y.csv", ["1,2,3,4"]),
            tmp_path / "b",
            "movielens-csv",
            quiet=True,
        )
    with pytest.raises(PipelineError, match="no ratings in 2 lines"):
        raw = write_lines(tmp_path / "z.data", ["a\tb", "c\td"])
        ratings(raw, tmp_path / "c", "movielens-100k", quiet=True)
    assert not (tmp_path / "c" / "ratings.parquet").exists()  # nothing that looks finished
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "ratings", str(tmp_path / "nope.csv"), "--out", "o"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ") and "cannot read" in done.stderr


def test_movielens_latest_small(tmp_path, shared_sample):
    raw = shared_sample(SHARED_DATA / "ml-latest-small" / "ratings.csv")
    movies = SHARED_DATA / "ml-latest-small" / "movies.csv"
    stats = ratings(raw, tmp_path, titles=movies, quiet=True)
    assert (stats["ratings"], stats["users"], stats["items"]) == (100_836, 610, 9_724)
    assert (stats["rejected"], stats["repeated"], stats["items_titled"]) == (0, 0, 9_724)
    assert (stats["rating_min"], stats["rating_max"]) == (0.5, 5.0)


@pytest.mark.parametrize(
    "name, counts",
    [
        ("amazon-2014-reviews/reviews_Musical_Instruments_5.json.gz", (10_261, 0, 1_429, 900)),
        ("amazon-2018-reviews/Magazine_Subscriptions_5.json.gz", (2_302, 73, 348, 157)),
    ],
)
def test_amazon_review_samples(tmp_path, shared_sample, name, counts):
    stats = ratings(shared_sample(SHARED_DATA / name), tmp_path, quiet=True)
    assert (stats["ratings"], stats["repeated"], stats["users"], stats["items"]) == counts
    assert stats["rejected"] == 0 and stats["lines"] == counts[0] + counts[1]


fields = st.text(alphabet="0123456789abc.-: \t,", max_size=6)
lines = st.lists(fields, min_size=0, max_size=5).map(",".join)


@given(st.lists(lines | st.binary(max_size=20).map(repr), min_size=1, max_size=40))
@settings(max_examples=300)
def test_every_line_of_any_block_is_decoded_or_refused_once(block_lines):
    block = "\n".join(block_lines).encode()
    batch, rejects = decode_block(block, 7, "movielens-csv")
    numbers = sorted(batch.column("line").to_pylist() + [n for n, _, _ in rejects])
    assert numbers == list(range(7, 7 + count_lines(block)))


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.integers(0, 10**6),
            st.floats(0, 10, allow_nan=False),
            st.integers(0, 2**40),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["movielens-csv", "movielens-100k", "movielens-dat", "amazon"]),
)
@settings(max_examples=200)
def test_valid_lines_decode_exactly_in_every_format(rows, fmt):
    separator = {"movielens-csv": ",", "movielens-100k": "\t", "movielens-dat": "::"}.get(fmt)
    if fmt == "amazon":
        text = [amazon(str(u), str(i), r, t) for u, i, r, t in rows]
    else:
        text = [separator.join(map(str, row)) for row in rows]
    batch, rejects = decode_block("\n".join(text).encode(), 1, fmt)
    assert rejects == []
    assert batch.column("user_key").to_pylist() == [str(u) for u, _, _, _ in rows]
    assert batch.column("rating").to_pylist() == pytest.approx([r for _, _, r, _ in rows])
    assert batch.column("timestamp").to_pylist() == [t for _, _, _, t in rows]
