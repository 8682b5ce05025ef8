"""pairs' global steps on Spark: the same filters, pairs, weights and ids as pairs.py.

The row-level steps are pair_rows' Arrow functions, the ones polars runs,
under ``mapInArrow``: a product's status and cleaned lists, the counts of
pairs.json, the explode, and the weight and bitmask decoded from a pair's
2-bit counts. The global steps mirror pairs.py's polars plans one for one
(the group-by per unordered pair, degrees, ids by descending degree then
asin), and the tests hold the two engines to the same files. Spark groups
the asins themselves: it needs no dictionary of codes to stay within
memory. Vocabulary ids are positions in the sorted vocabulary, assigned as
its part files are merged; the pairs then join the merged file back.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.contracts import PAIRS_SCHEMA, VOCAB_SCHEMA, made_by, stamped
from pipeline.errors import PipelineError
from pipeline.pair_rows import (
    EXPLODED_SCHEMA,
    classified_rows,
    classified_schema,
    counts_schema,
    decoded_pairs,
    pair_counts,
    related_rows,
)
from pipeline.pairs import PairsRun
from pipeline.spark import merge_parts, part_batches, spark_schema, write_parts

_NON_BLANK = r"(?U)\S"  # polars' strip_chars() strips Unicode White_Space; (?U)\s is the same
# pairs.parquet's rows as Spark holds them: it has no unsigned bytes.
_DECODED_SCHEMA = PAIRS_SCHEMA.set(3, pa.field("relations", pa.int8()))


def pairs_on_spark(spark, run: PairsRun) -> tuple[dict, pl.DataFrame, dict]:
    """Write vocab and pairs; return (counts, pairs per ``code``, vocabulary summary),
    the three inputs of pairs._stats."""
    from pyspark.sql import functions as F

    weights, phase = run.weights, run.phase
    catalog = spark.read.parquet(str(run.products))
    classify = functools.partial(
        classified_rows,
        weights=weights,
        min_also_bought=run.min_also_bought,
        require_title=run.require_title,
    )
    classified = catalog.select("asin", "title", *dict.fromkeys(["also_bought", *weights]))
    classified = classified.mapInArrow(
        _over_batches(classify), spark_schema(classified_schema(weights))
    )
    with phase("count"):
        tally = functools.partial(_tally, weights=weights)
        tallies = classified.mapInArrow(_over_batches(tally), spark_schema(counts_schema(weights)))
        row = tallies.agg(*[F.sum(name).alias(name) for name in tallies.columns]).first()
        counts = {key: int(value or 0) for key, value in row.asDict().items()}
    kept = classified.where(F.col("status") == "kept")
    with phase("group"):
        explode = _over_batches(functools.partial(related_rows, weights=weights))
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
        grouped = spark.read.parquet(str(write_parts(grouped, run.work / "grouped")))
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
            products = run.products
            raise PipelineError(f"{products}: asins are not distinct; rerun `{made_by(products)}`")
        numbered = run.work / "vocab.parquet"  # Spark reads no hidden file, such as vocab_path
        merge_parts(
            _numbered(part_batches(write_parts(vocab, run.work / "vocab"))),
            numbered,
            stamped(VOCAB_SCHEMA, "pairs", **run.lineage),
            run.row_group_rows,
        )
    with phase("pairs"):
        ids = spark.read.parquet(str(numbered)).select("asin", "id")
        decode = _over_batches(functools.partial(decoded_pairs, weights=weights), _DECODED_SCHEMA)
        pairs = (
            grouped.join(ids.toDF("lo", "a"), "lo")
            .join(ids.toDF("hi", "b"), "hi")
            .select(F.least("a", "b").alias("src"), F.greatest("a", "b").alias("dst"), "code")
            .mapInArrow(decode, spark_schema(_DECODED_SCHEMA))
            .orderBy("src", "dst")
        )
        merge_parts(
            part_batches(write_parts(pairs, run.work / "pairs")),
            run.pairs_path,
            stamped(PAIRS_SCHEMA, "pairs", **run.lineage),
            run.row_group_rows,
        )
        os.replace(numbered, run.vocab_path)
        code_counts = pl.from_arrow(
            grouped.groupBy("code").agg(F.count("*").alias("pairs")).toArrow()
        )
    return counts, code_counts, summary


def _over_batches(
    step: Callable[[pa.RecordBatch], pa.Table], schema: pa.Schema | None = None
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """``step`` over ``mapInArrow``'s batches, its tables cast to ``schema`` if given."""

    def over(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            table = step(batch)
            yield from (table.cast(schema) if schema is not None else table).to_batches()

    return over


def _tally(classified: pa.RecordBatch, weights: dict[str, float]) -> pa.Table:
    """pair_rows.pair_counts of a batch, as a one-row table."""
    return pa.Table.from_pylist([pair_counts(classified, weights)], counts_schema(weights))


def _numbered(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Vocab batches with ``id``: the running row position over all batches."""
    start = 0
    for batch in batches:
        ids = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int32))
        start += batch.num_rows
        yield pa.RecordBatch.from_arrays([ids, *batch.columns], names=["id", *batch.schema.names])
