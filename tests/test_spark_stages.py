"""--engine spark: parse, pairs and split give the polars engine's files and counts.

Every Spark test shares the session fixture (one JVM for the whole run) and
the xdist group that keeps them on one worker.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from repo import fresh_copy, make

from pipeline import parse_spark
from pipeline.contracts import PAIRS_SCHEMA, stamps
from pipeline.errors import PipelineError
from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.spark import merge_parts, part_batches
from pipeline.split import shuffle_keys, split
from pipeline.synth import generate

pytestmark = pytest.mark.slow  # starts Spark

# Stats that measure the run rather than describe the data.
RUN_FACTS = {
    "seconds",
    "mb_per_s",
    "peak_rss_mb",
    "worker_peak_rss_mb",
    "workers",
    "engine",
    "phase_seconds",
    "phase_peak_rss_mb",
    "exploded_rows_per_s",
    "pairs_per_s",
    "data_dir",
}


def run_stages(raw: Path, out: Path, engine: str, negatives: str) -> dict:
    """parse, pairs and split of ``raw`` into ``out`` on ``engine``; their stats."""
    return {
        "parse": parse(raw, out, workers=1, quiet=True, engine=engine),
        "pairs": build_pairs(out, quiet=True, engine=engine),
        "split": split(out, negatives=negatives, quiet=True, engine=engine),
    }


def assert_same_files(polars_dir: Path, spark_dir: Path) -> None:
    """Every stage file holds the same rows, schema and stamps; rejects are byte-equal."""
    for name in ("products", "vocab", "pairs", "train", "val"):
        expected = pq.read_table(polars_dir / f"{name}.parquet")
        found = pq.read_table(spark_dir / f"{name}.parquet")
        assert found.schema.equals(expected.schema), name
        assert found.equals(expected), name
        files = [pq.ParquetFile(d / f"{name}.parquet") for d in (polars_dir, spark_dir)]
        assert stamps(files[1]) == stamps(files[0]), name
        assert files[1].metadata.num_row_groups == files[0].metadata.num_row_groups, name
    rejects = [(d / "rejects.jsonl").read_bytes() for d in (polars_dir, spark_dir)]
    assert rejects[1] == rejects[0]


@pytest.mark.xdist_group("spark")
@pytest.mark.parametrize(
    ("fmt", "name", "crlf", "negatives"),
    [
        ("py", "meta.json.gz", False, "products"),
        ("json", "meta.json", True, "occurrences"),
        ("json2018", "meta.json", False, "products"),
    ],
)
def test_spark_engine_gives_the_polars_files_and_counts(
    spark, tmp_path, fmt, name, crlf, negatives
):
    raw = tmp_path / name
    generate(raw, 600, fmt=fmt, seed=7, messy=True, quiet=True)
    if crlf:  # Windows line ends: both engines split on \n and keep the \r on its line
        raw.write_bytes(raw.read_bytes().replace(b"\n", b"\r\n"))
    # Several file splits (a gzip file is one), so line numbers continue across them.
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(64 << 10))
    try:
        polars_stats = run_stages(raw, tmp_path / "polars", "polars", negatives)
        spark_stats = run_stages(raw, tmp_path / "spark", "spark", negatives)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert_same_files(tmp_path / "polars", tmp_path / "spark")
    for stage, stats in polars_stats.items():
        found = spark_stats[stage]
        assert found["engine"] == "spark" and stats["engine"] == "polars"
        assert {k: v for k, v in found.items() if k not in RUN_FACTS} == {
            k: v for k, v in stats.items() if k not in RUN_FACTS
        }, stage
    parsed = spark_stats["parse"]
    assert parsed["rejected"] > 0 and parsed["duplicates"] > 0  # the messy lines are there
    assert (tmp_path / "spark" / "split.json").is_file()
    leftovers = [p.name for p in (tmp_path / "spark").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.xdist_group("spark")
def test_spark_parse_that_fails_leaves_nothing_finished(spark, tmp_path, monkeypatch):
    raw = tmp_path / "meta.json"
    generate(raw, 200, fmt="json", quiet=True)

    def fail(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(parse_spark, "merge_parts", fail)
    with pytest.raises(OSError, match="disk gone"):
        parse(raw, tmp_path / "out", quiet=True, engine="spark")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.xdist_group("spark")
def test_spark_parse_of_a_truncated_gzip_is_one_clear_error(spark, tmp_path):
    raw = tmp_path / "meta.json.gz"
    generate(raw, 2000, fmt="json", quiet=True)
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    with pytest.raises(PipelineError, match=r"gzip stream after line [1-9]") as local:
        parse(raw, tmp_path / "local", fmt="json", workers=1, quiet=True)
    with pytest.raises(PipelineError) as caught:  # the same line, the last one decompressed
        parse(raw, tmp_path / "out", fmt="json", quiet=True, engine="spark")
    assert str(caught.value) == str(local.value)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.xdist_group("spark")
def test_spark_parse_refuses_gzip_named_otherwise(spark, tmp_path):
    raw = tmp_path / "meta.json"
    raw.write_bytes(gzip.compress(b'{"asin": "A"}\n'))
    with pytest.raises(PipelineError, match=r"Spark tells gzip by the \.gz extension"):
        parse(raw, tmp_path / "out", quiet=True, engine="spark")
    assert not (tmp_path / "out" / "parse.json").exists()


def test_unknown_engine_is_one_line_error(tmp_path):
    raw = tmp_path / "meta.json"
    raw.write_text('{"asin": "A"}\n')
    with pytest.raises(PipelineError, match="--engine must be one of polars, spark"):
        parse(raw, tmp_path / "out", engine="dask")
    with pytest.raises(PipelineError, match="--engine must be one of polars, spark"):
        split(tmp_path, engine="dask")


def test_merge_parts_keeps_order_and_cuts_row_groups(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    rows = 0
    for index, size in enumerate([5, 0, 12, 3]):  # an empty part, as Spark may write
        values = np.arange(rows, rows + size, dtype=np.int32)
        part = pa.table(
            {
                "relations": pa.array(values % 16, pa.int16()),  # Spark's type for uint8
                "weight": values.astype(np.float32),
                "dst": values + 1,
                "src": values,
            }
        )
        pq.write_table(part, folder / f"part-{index:05d}-x.snappy.parquet")
        rows += size
    (folder / "_SUCCESS").touch()
    out = tmp_path / "merged.parquet"
    assert merge_parts(part_batches(folder), out, PAIRS_SCHEMA, 8) == 20
    merged = pq.ParquetFile(out)
    assert [merged.metadata.row_group(i).num_rows for i in range(merged.num_row_groups)] == [
        8,
        8,
        4,
    ]
    table = merged.read()
    assert table.schema.equals(PAIRS_SCHEMA)
    assert table.column("src").to_pylist() == list(range(20))
    assert table.column("relations").to_pylist() == [v % 16 for v in range(20)]


def test_shuffle_keys_are_distinct_and_seeded():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 2**31 - 1, 200_000, dtype=np.int32)
    dst = rng.integers(0, 2**31 - 1, 200_000, dtype=np.int32)
    pairs = np.unique(src.astype(np.int64) << 32 | dst)
    src, dst = (pairs >> 32).astype(np.int32), (pairs & 0xFFFFFFFF).astype(np.int32)
    keys = shuffle_keys(src, dst, 42)
    assert keys.dtype == np.int64 and len(np.unique(keys)) == len(keys)  # a bijection: no ties
    assert np.array_equal(keys, shuffle_keys(src, dst, 42))
    other = shuffle_keys(src, dst, 43)
    # Orders of two seeds are unrelated: rank correlation near 0.
    correlation = np.corrcoef(np.argsort(np.argsort(keys)), np.argsort(np.argsort(other)))[0, 1]
    assert abs(correlation) < 0.01
    # The val share (the smallest keys) is an unbiased sample: its mean src is the mean src.
    first = np.argsort(keys)[: len(keys) // 3]
    assert abs(src[first].mean() / src.mean() - 1) < 0.01


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_passes_the_engine_to_the_data_stages_only(tmp_path):
    raw = tmp_path / "meta.json"
    generate(raw, 100, fmt="json", quiet=True)
    copy = fresh_copy(tmp_path)
    master = "spark://head:7077"
    planned = make(copy, "-n", "books", f"RAW={raw}", "ENGINE=spark", f"SPARK_MASTER={master}")
    assert planned.returncode == 0, planned.stderr[-2000:]
    commands = [line.split() for line in planned.stdout.splitlines() if " -m " in line]
    engine = ["--engine", "spark", "--spark-master", master]
    for words in commands:
        stage = words[words.index("-m") + 2]
        flagged = words[-len(engine) :] == engine or words[-len(engine) - 1 : -1] == engine
        assert flagged == (stage in ("parse", "pairs", "split")), words
    assert {words[words.index("-m") + 2] for words in commands} >= {"parse", "pairs", "split"}


def test_spark_engine_without_pyspark_is_one_line_error(tmp_path, monkeypatch):
    raw = tmp_path / "meta.json"
    raw.write_text('{"asin": "A"}\n')
    for name in [m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now fails
    with pytest.raises(PipelineError, match=r"needs PySpark and Java 17: pip install -e"):
        parse(raw, tmp_path / "out", quiet=True, engine="spark")
    assert not (tmp_path / "out" / "parse.json").exists()
