"""parse's global steps on Spark; its row-level step is parse.parse_block, as locally.

Spark reads the raw file as lines (split on ``\\n`` only, as the local
reader does, and gzip told by the ``.gz`` extension, as Hadoop does). A
line's number is its split's first line plus its place in the split: the
splits' line counts are one small job. ``mapInArrow`` hands batches of
(line, bytes) to :func:`decoded_lines`, which rejoins each run of consecutive
lines into a block for parse_block, the function the local engine runs on
its blocks; its output carries each product, or each reject with its reason.
The first occurrence of an asin (its smallest line) is kept, as locally.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.blocks import line_blocks
from pipeline.contracts import PRODUCTS_SCHEMA, lineage_id, stamped
from pipeline.errors import PipelineError
from pipeline.formats import open_raw
from pipeline.parse import DICTIONARY_COLUMNS, ROW_GROUP_ROWS, parse_block
from pipeline.spark import merge_parts, part_batches, spark_schema, write_parts

# A row of the decoded lines: a product, or a refused line (``reason`` set).
PARSED_SCHEMA = pa.schema([*PRODUCTS_SCHEMA, ("reason", pa.string()), ("text", pa.string())])
_READ_BYTES = 16 << 20


def decoded_lines(batches: Iterator[pa.RecordBatch], python_literal: bool):
    """PARSED_SCHEMA batches from batches of (``line``, ``text`` bytes without the newline)."""
    for batch in batches:
        numbers = batch.column("line").to_numpy()
        texts = batch.column("text").to_pylist()
        starts = [0, *(np.flatnonzero(np.diff(numbers) != 1) + 1).tolist(), len(numbers)]
        for begin, end in itertools.pairwise(starts):
            block = b"\n".join(texts[begin:end]) + b"\n"
            products, rejects = parse_block(block, int(numbers[begin]), python_literal)
            yield _with_reasons(products)
            if rejects:
                yield _rejected(rejects)


def _with_reasons(products: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of products as PARSED_SCHEMA rows: no reason, no text."""
    empty = pa.nulls(products.num_rows, pa.string())
    return pa.RecordBatch.from_arrays([*products.columns, empty, empty], schema=PARSED_SCHEMA)


def _rejected(rejects: list) -> pa.RecordBatch:
    """Rejects (line, reason, text) as PARSED_SCHEMA rows, every product column null."""
    numbers, reasons, texts = zip(*rejects)
    given = {"line": numbers, "reason": reasons, "text": texts}
    arrays = [
        pa.array(given[f.name], f.type) if f.name in given else pa.nulls(len(rejects), f.type)
        for f in PARSED_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PARSED_SCHEMA)


def parse_on_spark(
    spark,
    raw: Path,
    fmt: str,
    products_path: Path,
    rejects_path: Path,
    work: Path,
) -> dict:
    """Write products and rejects from ``raw``; return the counts parse.json holds."""
    with open(raw, "rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
    if gzipped != raw.name.endswith(".gz"):
        kind = "gzip" if gzipped else "not gzip"
        raise PipelineError(
            f"{raw}: the file is {kind} but its name says otherwise; Spark tells gzip by "
            "the .gz extension, so rename it"
        )
    digest: dict = {}
    reader = threading.Thread(target=_digest, args=(raw, digest), daemon=True)
    reader.start()  # hashes the file beside the Spark jobs
    try:
        counts, products_dir = _products_and_rejects(spark, raw, fmt, rejects_path, work)
    except Exception:
        reader.join()
        if "error" in digest:  # a truncated gzip file fails Spark's reader too: say why
            raise digest["error"] from None
        raise
    reader.join()
    if "error" in digest:
        raise digest["error"]
    sha256 = digest["sha256"]
    lineage = {"raw_sha256": sha256, "products_id": lineage_id("parse", sha256, fmt)}
    products = merge_parts(
        part_batches(products_dir),
        products_path,
        stamped(PRODUCTS_SCHEMA, "parse", **lineage),
        ROW_GROUP_ROWS,
        use_dictionary=DICTIONARY_COLUMNS,
    )
    return {
        "lines": counts["lines"],
        "products": products,
        "duplicates": counts["valid"] - products,
        "rejected": sum(counts["by_reason"].values()),
        "bytes": digest["bytes"],
        "worker_peak_rss_mb": None,
        **lineage,
        "rejected_by_reason": dict(sorted(counts["by_reason"].items())),
    }


def _products_and_rejects(spark, raw: Path, fmt: str, rejects_path: Path, work: Path):
    """The Spark jobs: write the rejects file and the products' part files (first
    occurrences, in line order); return the counts and the parts' folder."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    lines = spark.read.option("lineSep", "\n").text(str(raw))
    text = lines.select(
        F.input_file_block_start().alias("block"),
        F.monotonically_increasing_id().alias("row"),
        F.col("value").cast("binary").alias("text"),
    )
    splits = text.groupBy("block").agg(F.count("*").alias("n"), F.min("row").alias("first"))
    shift, first_line = {}, 1
    for block, n, first in sorted(splits.collect()):
        shift[block] = first_line - first
        first_line += n
    shifts = F.create_map(*[F.lit(v) for item in shift.items() for v in item])
    numbered = text.select(
        (F.col("row") + F.element_at(shifts, F.col("block"))).alias("line"), "text"
    )
    decode = functools.partial(decoded_lines, python_literal=fmt == "py")
    parsed_dir = write_parts(
        numbered.mapInArrow(decode, spark_schema(PARSED_SCHEMA)), work / "parsed"
    )
    parsed = spark.read.parquet(str(parsed_dir))

    first = Window.partitionBy("asin").orderBy("line")
    valid = parsed.where(F.col("reason").isNull()).drop("reason", "text")
    kept = valid.withColumn("_nth", F.row_number().over(first)).where("_nth = 1").drop("_nth")
    products_dir = write_parts(kept.orderBy("line"), work / "products")
    by_reason: dict[str, int] = {}
    with open(rejects_path, "w", encoding="utf-8") as rejects_file:
        rejected = parsed.where(F.col("reason").isNotNull()).select("line", "reason", "text")
        for number, reason, preview in rejected.orderBy("line").toLocalIterator():
            record = {"line": number, "reason": reason, "text": preview}
            rejects_file.write(json.dumps(record) + "\n")
            by_reason[reason] = by_reason.get(reason, 0) + 1
    counts = {"lines": first_line - 1, "valid": valid.count(), "by_reason": by_reason}
    return counts, products_dir


def _digest(raw: Path, out: dict) -> None:
    """The raw file's SHA-256 and its decompressed bytes, into ``out`` (runs in a thread).

    Read through the local engine's line_blocks, so a truncated gzip file is
    its error, naming the same last whole line.
    """
    try:
        digest, tally = hashlib.sha256(), {"lines": 0, "bytes": 0}
        with open_raw(raw, digest) as (stream, _):
            for _ in line_blocks(stream, raw, tally, _READ_BYTES):
                pass
        out.update(sha256=digest.hexdigest(), bytes=tally["bytes"])
    except PipelineError as exc:
        out["error"] = exc
