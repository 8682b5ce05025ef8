"""The files between stages: fixed names, Parquet schemas and a format version.

Every stage reads its inputs through :func:`require` and stamps its outputs
with :func:`stamped`, so a file from an incompatible version or the wrong
stage is refused with one line instead of failing deep inside a join.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError

FORMAT_VERSION = "1"

# Stage outputs, relative to a dataset directory.
PRODUCTS = "products.parquet"
REJECTS = "rejects.jsonl"
PARSE_STATS = "parse.json"
VOCAB = "vocab.parquet"
PAIRS = "pairs.parquet"
PAIRS_STATS = "pairs.json"
TRAIN = "train.parquet"
VAL = "val.parquet"
SPLIT_STATS = "split.json"

# Relation lists of a product; a pair's ``relations`` column has bit i set
# when relation i links it (bit values 1, 2, 4, 8).
RELATIONS = ("bought_together", "also_bought", "also_viewed", "buy_after_viewing")
RELATION_BIT = {name: 1 << i for i, name in enumerate(RELATIONS)}

_asin_list = pa.list_(pa.string())

PRODUCTS_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),  # 1-based line of the raw file the row came from
        ("asin", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("categories", pa.list_(pa.list_(pa.string()))),
        ("sales_rank", pa.int64()),
        ("sales_rank_category", pa.string()),
        *[(name, _asin_list) for name in RELATIONS],
    ]
)

# Rows in id order, ids 0..V-1 by descending degree: a row's position is its id.
VOCAB_SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("asin", pa.string()),
        ("degree", pa.int32()),
        ("title", pa.string()),
    ]
)

PAIRS_SCHEMA = pa.schema(
    [
        ("src", pa.int32()),
        ("dst", pa.int32()),
        ("weight", pa.float32()),
        ("relations", pa.uint8()),
    ]
)

TRAIN_SCHEMA = PAIRS_SCHEMA

VAL_SCHEMA = pa.schema(
    [
        ("src", pa.int32()),
        ("dst", pa.int32()),
        ("label", pa.int8()),
        ("weight", pa.float32()),
        ("seen", pa.bool_()),
    ]
)


def stamped(schema: pa.Schema, stage: str, **facts: str) -> pa.Schema:
    """``schema`` with the format version, producing stage and ``facts`` in its metadata."""
    return schema.with_metadata({"format_version": FORMAT_VERSION, "stage": stage, **facts})


def require(path: str | Path, schema: pa.Schema, made_by: str) -> pq.ParquetFile:
    """Open a stage's Parquet input, or fail in one line saying what is wrong.

    ``made_by`` names the command that produces the file, for the message.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not found (it is made by `{made_by}`)")
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise PipelineError(f"{path}: not a readable Parquet file ({exc})") from None
    found = parquet.schema_arrow
    version = (found.metadata or {}).get(b"format_version", b"").decode()
    if version and version != FORMAT_VERSION:
        raise PipelineError(
            f"{path}: format version {version}, this code reads {FORMAT_VERSION}; rerun `{made_by}`"
        )
    missing = [f.name for f in schema if f.name not in found.names]
    if missing:
        raise PipelineError(f"{path}: missing columns {', '.join(missing)}; rerun `{made_by}`")
    wrong = [
        f"{f.name} is {found.field(f.name).type}, expected {f.type}"
        for f in schema
        if not found.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise PipelineError(f"{path}: {'; '.join(wrong)}; rerun `{made_by}`")
    return parquet
