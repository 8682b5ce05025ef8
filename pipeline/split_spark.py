"""split's seeded order on Spark: the pairs sorted by split.shuffle_keys.

Spark computes each pair's shuffle key with the same numpy function as the
local engine (``mapInArrow``) and sorts the pairs by it. The driver then reads
the sorted part files once, in order: the first ``n_val`` pairs are the val
positives, the rest are written to the train file as they pass, in row groups
of split.ROW_GROUP_ROWS. Negative sampling stays on the driver in both
engines: it is one seeded sequence of shuffles.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipeline.spark import merge_parts, part_batches, write_parts
from pipeline.split import ROW_GROUP_ROWS, SplitOff, SplitRun, shuffle_keys


def keyed(batches: Iterator[pa.RecordBatch], seed: int) -> Iterator[pa.RecordBatch]:
    """The pairs' batches with their shuffle key as a last column, ``key``."""
    for batch in batches:
        src = batch.column("src").to_numpy()
        dst = batch.column("dst").to_numpy()
        key = pa.array(shuffle_keys(src, dst, seed))
        yield pa.RecordBatch.from_arrays([*batch.columns, key], [*batch.schema.names, "key"])


def split_on_spark(spark, run: SplitRun) -> SplitOff:
    """Write the train file; return the val positives and what val needs of train."""
    from pyspark.sql.types import LongType, StructField, StructType

    frame = spark.read.parquet(str(run.pairs))
    schema = StructType([*frame.schema.fields, StructField("key", LongType(), nullable=False)])
    with_keys = frame.mapInArrow(functools.partial(keyed, seed=run.seed), schema)
    ordered = with_keys.orderBy("key").drop("key")
    head: list[pa.RecordBatch] = []
    in_train = np.zeros(run.n_products, dtype=bool)

    def train_rows() -> Iterator[pa.RecordBatch]:
        taken = 0
        for batch in part_batches(write_parts(ordered, run.work / "ordered")):
            run.bar.update(batch.num_rows)
            if taken < run.n_val:
                head.append(batch.slice(0, run.n_val - taken))
                taken += head[-1].num_rows
                batch = batch.slice(head[-1].num_rows)
            if batch.num_rows:
                in_train[batch.column("src").to_numpy()] = True
                in_train[batch.column("dst").to_numpy()] = True
                yield batch

    n_train = merge_parts(train_rows(), run.train_path, run.train_schema, ROW_GROUP_ROWS)
    val = pa.Table.from_batches(head).combine_chunks()
    src, dst, weight = (val.column(name).to_numpy() for name in ("src", "dst", "weight"))
    order = np.argsort(src.astype(np.int64) * run.n_products + dst)
    return SplitOff(src[order], dst[order], weight[order], in_train, n_train)
