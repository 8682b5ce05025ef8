"""Stage 1: stream-parse a metadata file into products.parquet.

Writes ``products.parquet`` (one row per distinct asin, first occurrence
wins), ``rejects.jsonl`` (each refused line with its number, reason and first
characters) and ``parse.json`` (counts, with lines = products + duplicates +
rejected). Memory is bounded by the block size and the row group size, plus
the set of asins seen so far (about 100 bytes a product) for deduplication.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.blocks import line_blocks
from pipeline.contracts import (
    PARSE_STATS,
    PRODUCTS,
    PRODUCTS_SCHEMA,
    REJECTS,
    lineage_id,
    stamped,
)
from pipeline.decode import Reject, decode_block, preview
from pipeline.errors import PipelineError
from pipeline.formats import FORMATS, detect_format, open_raw
from pipeline.memory import peak_rss_mb
from pipeline.normalise import to_batch
from pipeline.options import EngineOptions, argument, option
from pipeline.progress import progress
from pipeline.spark import check_engine, session
from pipeline.stage import StageRun

BLOCK_BYTES = 4 << 20  # bytes of whole lines handed to a parser at once
ROW_GROUP_ROWS = 32_768
# Columns with few distinct values; dictionary-encoding the rest costs time and,
# under zstd, no space.
DICTIONARY_COLUMNS = ["brand", "categories.list.element.list.element", "sales_rank_category"]


@dataclass(frozen=True, kw_only=True)
class ParseOptions(EngineOptions):
    """The arguments of ``python -m pipeline parse``: :func:`parse`'s."""

    raw: str = argument("metadata file: .json or .jsonl, optionally .gz")
    out: str = option(help="dataset directory to write")
    fmt: str | None = option(None, "default: detect", choices=FORMATS, flag="--format")
    workers: int = option(
        min(2, os.cpu_count() or 1), "parser processes of the polars engine", low=1
    )


def parse(
    raw: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str | None = ParseOptions.fmt,
    workers: int = ParseOptions.workers,
    quiet: bool = ParseOptions.quiet,
    engine: str = ParseOptions.engine,
    spark_master: str | None = ParseOptions.spark_master,
) -> dict:
    """Parse the metadata file ``raw`` into the dataset directory ``out``; return the stats.

    ``fmt`` is one of FORMATS, or None to detect it from the first lines.
    ``workers`` > 1 parses blocks in that many processes (local engine).
    ``engine`` "spark" runs on Spark at ``spark_master`` (parse_spark.py):
    the same files and counts. A file that gives no product is a PipelineError
    counting the rejects' reasons; rejects.jsonl stays, nothing else.
    """
    raw, out = Path(raw), Path(out)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PipelineError(f"--workers must be at least 1, got {workers!r}")
    fmt = fmt or detect_format(raw)
    if fmt not in FORMATS:
        raise PipelineError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    check_engine(engine)
    with StageRun(out, PARSE_STATS) as run:
        products_tmp, rejects_tmp = run.output(PRODUCTS), run.output(REJECTS)
        with contextlib.ExitStack() as stack:
            gc_was_enabled = gc.isenabled()
            gc.disable()  # millions of small acyclic containers: the collector only costs time
            stack.callback(lambda: gc_was_enabled and gc.enable())
            if engine == "spark":
                from pipeline.parse_spark import parse_on_spark

                spark = stack.enter_context(session(spark_master, quiet))
                work = run.work("parse-work")
                tally = parse_on_spark(spark, raw, fmt, products_tmp, rejects_tmp, work)
            else:
                tally = _write(raw, fmt, products_tmp, rejects_tmp, workers, quiet)
        seconds = run.seconds
        if tally["lines"] != tally["products"] + tally["duplicates"] + tally["rejected"]:
            raise RuntimeError(f"line accounting is off: {tally}")
        if tally["products"]:
            stats = run.finish(
                {
                    "raw": str(raw),
                    "raw_bytes": raw.stat().st_size,
                    "format": fmt,
                    **tally,
                    "seconds": round(seconds, 2),
                    "mb_per_s": round(tally["bytes"] / 1e6 / max(seconds, 1e-9), 1),
                    "workers": workers,
                    "engine": engine,
                }
            )
    if not tally["products"]:
        # Nothing that looks finished (an earlier run's files would pass for this
        # input's); the rejects stay, if any, as the evidence the message points at.
        for name in (PRODUCTS, PARSE_STATS) + (() if tally["lines"] else (REJECTS,)):
            (out / name).unlink(missing_ok=True)
        raise PipelineError(no_product(raw, out, tally))
    return stats


def no_product(raw: Path, out: Path, tally: dict) -> str:
    """Why parse of ``raw`` gave no product: an empty file, or each line's rejection."""
    if not tally["lines"]:
        return f"{raw}: empty file"
    reasons = sorted(tally["rejected_by_reason"].items(), key=lambda item: -item[1])
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons)
    return (
        f"{raw}: no product in {tally['lines']} lines (every line rejected: {counts}; "
        f"see {out / REJECTS})"
    )


def parse_block(
    block: bytes, first_line: int, python_literal: bool
) -> tuple[pa.RecordBatch, list[Reject]]:
    """Products and rejects of one block of whole lines (runs in a worker)."""
    decoded, rejects = decode_block(block, first_line, python_literal)
    batch, refused = to_batch(decoded)
    if refused:
        lines = block.split(b"\n")
        rejects += [(n, reason, preview(lines[n - first_line])) for n, reason in refused]
        rejects.sort()
    return batch, rejects


def _write(
    raw: Path, fmt: str, products_path: Path, rejects_path: Path, workers: int, quiet: bool
) -> dict:
    """Stream ``raw`` into the two output files; return the counts."""
    tally = {"lines": 0, "products": 0, "duplicates": 0, "rejected": 0, "bytes": 0}
    tally["worker_peak_rss_mb"] = 0.0 if workers > 1 else None
    by_reason: collections.Counter[str] = collections.Counter()
    seen: set[str] = set()
    pending: list[pa.RecordBatch] = []
    schema = stamped(PRODUCTS_SCHEMA, "parse")
    digest = hashlib.sha256()
    with (
        open_raw(raw, digest) as (stream, position),
        pq.ParquetWriter(
            products_path, schema, compression="zstd", use_dictionary=DICTIONARY_COLUMNS
        ) as writer,
        open(rejects_path, "w", encoding="utf-8") as rejects_file,
        progress(raw.stat().st_size, "B", f"parse {raw.name}", quiet) as bar,
    ):
        blocks = line_blocks(stream, raw, tally, BLOCK_BYTES)
        for batch, rejects in _parsed(blocks, fmt == "py", workers, tally):
            batch = _first_occurrences(batch, seen, tally)
            tally["products"] += batch.num_rows
            pending.append(batch)
            if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema))
                pending.clear()
            for number, reason, text in rejects:
                record = {"line": number, "reason": reason, "text": text}
                rejects_file.write(json.dumps(record) + "\n")
                by_reason[reason] += 1
            tally["rejected"] += len(rejects)
            bar.update(position() - bar.n)
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema))
        tally["raw_sha256"] = digest.hexdigest()
        tally["products_id"] = lineage_id("parse", tally["raw_sha256"], fmt)
        writer.add_key_value_metadata(
            {"raw_sha256": tally["raw_sha256"], "products_id": tally["products_id"]}
        )
    tally["rejected_by_reason"] = dict(sorted(by_reason.items()))
    return tally


def _first_occurrences(batch: pa.RecordBatch, seen: set[str], tally: dict) -> pa.RecordBatch:
    """Drop rows whose asin came earlier in the file; count them as duplicates."""
    keep = [not (asin in seen or seen.add(asin)) for asin in batch.column(1).to_pylist()]
    dropped = len(keep) - sum(keep)
    if not dropped:
        return batch
    tally["duplicates"] += dropped
    return batch.filter(pa.array(keep))


def _parsed(
    blocks, python_literal: bool, workers: int, tally: dict
) -> Iterator[tuple[pa.RecordBatch, list[Reject]]]:
    """parse_block over ``blocks`` in order, in-process or in a bounded process pool
    (whose largest peak RSS goes to ``tally``)."""
    if workers == 1:
        for block, first_line in blocks:
            yield parse_block(block, first_line, python_literal)
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=gc.disable) as pool:
        window: collections.deque = collections.deque()
        for block, first_line in blocks:
            window.append(pool.submit(_parse_in_worker, block, first_line, python_literal))
            if len(window) > 2 * workers:  # bounded read-ahead: memory stays flat
                yield _result(window.popleft(), tally)
        while window:
            yield _result(window.popleft(), tally)


def _parse_in_worker(block: bytes, first_line: int, python_literal: bool) -> tuple:
    """parse_block's result and the worker's peak RSS so far."""
    return *parse_block(block, first_line, python_literal), peak_rss_mb()


def _result(future, tally: dict) -> tuple[pa.RecordBatch, list[Reject]]:
    batch, rejects, worker_peak = future.result()
    tally["worker_peak_rss_mb"] = max(tally["worker_peak_rss_mb"], worker_peak)
    return batch, rejects
