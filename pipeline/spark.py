"""The Spark engine's plumbing: a session, Arrow schemas in Spark's terms, part files.

``--engine spark`` runs a stage's global steps as Spark jobs (the stage's
``*_spark`` module) and its row-level steps as the same Arrow batch functions
the local engine runs, under ``mapInArrow``. PySpark is imported only here
and in those modules, and only when the engine is asked for, so the local
engine never needs it.

Spark writes a directory of part files; a stage reads them back in part order
and :func:`merge_parts` copies them into the one stamped Parquet file the
polars engine writes, with the same row groups, so every later stage and the
trainer read one kind of file. The merge streams a row group at a time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError

ENGINES = ("polars", "spark")
DEFAULT_ENGINE = "polars"
DEFAULT_SPARK_MASTER = "local[*]"
# Spark's local-mode driver runs every task: give it room beyond the 1 GB default.
LOCAL_DRIVER_MEMORY = "4g"


def check_engine(engine: str) -> None:
    """Refuse an unknown engine in one line."""
    if engine not in ENGINES:
        raise PipelineError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


@contextlib.contextmanager
def session(master: str | None = None, quiet: bool = False) -> Iterator:
    """The active Spark session, or a new one on ``master`` that is stopped afterwards.

    A session that already runs (a notebook's, the tests') is used as it is
    and left running; ``master`` then does not apply.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise PipelineError(
            "--engine spark needs PySpark and Java 17: pip install -e '.[spark]'"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    master = master or DEFAULT_SPARK_MASTER
    # Executors on this machine start this interpreter, which has our packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("recsys-stream")
        .config("spark.ui.showConsoleProgress", str(not quiet).lower())
        .config("spark.sql.session.timeZone", "UTC")
    )
    if master.startswith("local"):
        builder = builder.config("spark.driver.memory", LOCAL_DRIVER_MEMORY)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # no Java, a master that does not answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot start Spark on {master}: {first}") from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def spark_schema(schema: pa.Schema):
    """``schema`` as a Spark StructType (for ``mapInArrow``'s declared output)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def write_parts(frame, folder: Path) -> Path:
    """Write a Spark DataFrame as Parquet part files in ``folder``; return it."""
    frame.write.mode("overwrite").parquet(str(folder))
    return folder


def part_files(folder: Path) -> list[Path]:
    """The Parquet part files Spark wrote in ``folder``, in partition order."""
    return sorted(Path(folder).glob("part-*.parquet"))


def part_batches(folder: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of ``folder``'s part files in partition order, a batch at a time."""
    for part in part_files(folder):
        yield from pq.ParquetFile(part).iter_batches(columns=columns)


def merge_parts(
    batches: Iterator[pa.RecordBatch | pa.Table],
    path: Path,
    schema: pa.Schema,
    row_group_rows: int,
    **writer_options,
) -> int:
    """Write ``batches`` to one Parquet file of ``schema`` in row groups of
    ``row_group_rows`` (the last one shorter); return the rows written.

    Columns are taken by name and cast to the schema's types: Spark has no
    unsigned integers, and its lists name their element differently.
    """
    rows, pending, pending_rows = 0, [], 0
    with pq.ParquetWriter(path, schema, compression="zstd", **writer_options) as writer:

        def flush(count: int) -> None:
            nonlocal pending, pending_rows
            table = pa.concat_tables(pending)
            writer.write_table(table.slice(0, count), row_group_size=row_group_rows)
            rest = table.slice(count)
            pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

        for batch in batches:
            table = pa.table([batch.column(name) for name in schema.names], names=schema.names)
            pending.append(table.cast(schema))
            pending_rows += table.num_rows
            rows += table.num_rows
            while pending_rows >= row_group_rows:
                flush(row_group_rows)
        if pending_rows:
            flush(pending_rows)
    return rows
