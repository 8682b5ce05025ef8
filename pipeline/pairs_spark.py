"""pairs' global steps on Spark: the same filters, pairs, weights and ids as pairs.py.

The explode is pairs.related_rows, the function polars runs, under
``mapInArrow``. The global steps mirror pairs.py's polars expressions one for
one (a product's status and cleaned lists, the group-by per unordered pair
with a 2-bit count per relation, degrees, ids by descending degree then
asin), and the tests hold the two engines to the same files. Spark groups
the asins themselves: it needs no dictionary of codes to stay within
memory. Vocabulary ids are positions in the sorted vocabulary, assigned as
its part files are merged; the pairs then join the merged file back.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.contracts import PAIRS_SCHEMA, RELATION_BIT, VOCAB_SCHEMA, made_by, stamped
from pipeline.errors import PipelineError
from pipeline.pairs import _SHIFT, EXPLODED_SCHEMA, FILTERS, ROW_GROUP_ROWS, related_rows
from pipeline.spark import merge_parts, part_batches, spark_schema, write_parts

_NON_BLANK = r"(?U)\S"  # polars' strip_chars() strips Unicode White_Space; (?U)\s is the same


def pairs_on_spark(
    spark,
    products: Path,
    weights: Mapping[str, float],
    min_also_bought: int,
    require_title: bool,
    lineage: dict[str, str],
    vocab_path: Path,
    pairs_path: Path,
    work: Path,
    phase,
) -> tuple[dict, pl.DataFrame, dict]:
    """Write vocab and pairs; return (counts, pairs per ``code``, vocabulary summary),
    the three inputs of pairs._stats. ``phase(name)`` times each phase."""
    from pyspark.sql import functions as F

    catalog = spark.read.parquet(str(products))
    cleaned = {
        name: F.array_distinct(F.filter(F.col(name), lambda entry: entry != "")) for name in weights
    }
    # size(null) is -1 or null, by spark.sql.legacy.sizeOfNull; polars' is null, then 0.
    lengths = {
        name: F.when(cleaned[name].isNull(), 0).otherwise(F.size(cleaned[name])) for name in weights
    }
    has_title = F.coalesce(F.col("title").rlike(_NON_BLANK), F.lit(False))
    has_relation = F.greatest(*[lengths[name] > 0 for name in weights], F.lit(False))
    also_bought = lengths.get("also_bought", F.lit(0))
    status = (
        F.when(F.lit(require_title) & ~has_title, "no_title")
        .when(also_bought < min_also_bought, "few_also_bought")
        .when(~has_relation, "no_relation")
        .otherwise("kept")
    )
    classified = catalog.select(
        "asin", *[cleaned[name].alias(name) for name in weights], status.alias("status")
    )
    with phase("count"):
        counts = _counts(classified, lengths, weights)
    kept = classified.where(F.col("status") == "kept")
    with phase("group"):
        explode = functools.partial(_related_batches, weights=dict(weights))
        rows = kept.select("asin", *weights).mapInArrow(explode, spark_schema(EXPLODED_SCHEMA))
        grouped = (
            rows.where(F.col("asin") != F.col("other"))
            .select(
                F.least("asin", "other").alias("lo"),
                F.greatest("asin", "other").alias("hi"),
                "code",
            )
            .groupBy("lo", "hi")
            .agg(F.sum("code").alias("code"))
        )
        grouped = spark.read.parquet(str(write_parts(grouped, work / "grouped")))
    with phase("vocab"):
        ends = grouped.select(F.col("lo").alias("asin")).unionByName(
            grouped.select(F.col("hi").alias("asin"))
        )
        degrees = ends.groupBy("asin").agg(F.count("*").cast("int").alias("degree"))
        titles = catalog.select(
            "asin",
            F.when(F.col("title").rlike(_NON_BLANK), F.col("title")).alias("title"),
            F.lit(True).alias("in_catalog"),
        )
        vocab = degrees.join(titles, "asin", "left").orderBy(F.desc("degree"), "asin")
        summary = vocab.agg(
            F.count("*").alias("vocabulary"),
            F.count_if(F.col("in_catalog").isNull()).alias("out_of_catalog"),
            F.count_if(F.col("title").isNull()).alias("without_title"),
            F.sum("degree").alias("degrees"),
        ).first()
        summary = {key: int(value or 0) for key, value in summary.asDict().items()}
        if summary["vocabulary"] != degrees.count():
            raise PipelineError(f"{products}: asins are not distinct; rerun `{made_by(products)}`")
        numbered = work / "vocab.parquet"  # Spark reads no hidden file, such as vocab_path
        merge_parts(
            _numbered(part_batches(write_parts(vocab, work / "vocab"))),
            numbered,
            stamped(VOCAB_SCHEMA, "pairs", **lineage),
            ROW_GROUP_ROWS,
        )
    with phase("pairs"):
        ids = spark.read.parquet(str(numbered)).select("asin", "id")
        count = {  # the 2-bit field of each relation
            name: F.shiftright(F.col("code"), _SHIFT[name].bit_length() - 1).bitwiseAND(3)
            for name in weights
        }
        weight = sum(
            (count[name].cast("double") * F.lit(w) for name, w in weights.items()),
            start=F.lit(0.0),
        )
        relations = sum(
            ((count[name] > 0).cast("int") * RELATION_BIT[name] for name in weights),
            start=F.lit(0),
        )
        pairs = (
            grouped.join(ids.toDF("lo", "a"), "lo")
            .join(ids.toDF("hi", "b"), "hi")
            .select(
                F.least("a", "b").alias("src"),
                F.greatest("a", "b").alias("dst"),
                weight.cast("float").alias("weight"),
                relations.alias("relations"),
            )
            .orderBy("src", "dst")
        )
        merge_parts(
            part_batches(write_parts(pairs, work / "pairs")),
            pairs_path,
            stamped(PAIRS_SCHEMA, "pairs", **lineage),
            ROW_GROUP_ROWS,
        )
        os.replace(numbered, vocab_path)
        code_counts = pl.from_arrow(
            grouped.groupBy("code").agg(F.count("*").alias("pairs")).toArrow()
        )
    return counts, code_counts, summary


def _counts(classified, lengths: dict, weights: Mapping[str, float]) -> dict:
    """Products per status, and rows and self-pair rows per relation of kept products."""
    from pyspark.sql import functions as F

    kept = F.col("status") == "kept"
    row = classified.agg(
        F.count("*").alias("products_read"),
        *[F.count_if(F.col("status") == status).alias(status) for status in (*FILTERS, "kept")],
        *[F.sum(F.when(kept, lengths[name])).alias(f"rows_{name}") for name in weights],
        *[
            F.count_if(
                kept & F.coalesce(F.array_contains(name, F.col("asin")), F.lit(False))
            ).alias(f"self_{name}")
            for name in weights
        ],
    ).first()
    return {key: int(value or 0) for key, value in row.asDict().items()}


def _related_batches(
    batches: Iterator[pa.RecordBatch], weights: dict[str, float]
) -> Iterator[pa.RecordBatch]:
    """pairs.related_rows over ``mapInArrow``'s batches."""
    for batch in batches:
        yield from related_rows(batch, weights).to_batches()


def _numbered(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Vocab batches with ``id``: the running row position over all batches."""
    start = 0
    for batch in batches:
        ids = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int32))
        start += batch.num_rows
        yield pa.RecordBatch.from_arrays([ids, *batch.columns], names=["id", *batch.schema.names])
