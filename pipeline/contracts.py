"""The files between stages: fixed names, Parquet schemas, a format version and lineage.

Every stage reads its inputs through :func:`require` and stamps its outputs
with :func:`stamped`, so a file from an incompatible version or the wrong
stage is refused with one line instead of failing deep inside a join.

Lineage: each output records which inputs it was made from, as ids in its
Parquet metadata. ``products.parquet`` holds the SHA-256 of the raw file;
``vocab.parquet`` and ``pairs.parquet`` share a ``pairs_id`` derived from the
products' and the pairs options; ``train.parquet`` and ``val.parquet`` share
a ``split_id`` and carry the ``pairs_id`` of the vocabulary their ids index.
The ids are hashes of what decides a file (its inputs' ids and its options),
so the same input and options give the same ids and byte-identical files.
:func:`check_lineage` refuses, in one line naming both files, inputs that do
not belong together.

The trainer imports its file names and checks from here (split_names,
ranges, parse_features); this module imports no polars.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError

FORMAT_VERSION = "2"

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
EMBEDDINGS = "embeddings.parquet"
WALKS = "walks.parquet"
WALKS_STATS = "walks.json"
# A ratings dataset's files (pipeline ratings, pipeline split-ratings).
RATINGS = "ratings.parquet"
USERS = "users.parquet"
ITEMS = "items.parquet"
RATINGS_STATS = "ratings.json"
SPLIT_RATINGS_STATS = "split-ratings.json"  # beside its train and val files (split_ratings.py)
# Each user's ratings in time order (pipeline sequences).
SEQUENCES_TRAIN = "sequences-train.parquet"
SEQUENCES_VAL = "sequences-val.parquet"
NEXT_TRAIN = "next-train.parquet"
NEXT_EVAL = "next-eval.parquet"
SEQUENCES_STATS = "sequences.json"

# The stage that writes each file, and the command that runs it.
PRODUCERS = {
    PRODUCTS: ("parse", "python -m pipeline parse"),
    VOCAB: ("pairs", "python -m pipeline pairs"),
    PAIRS: ("pairs", "python -m pipeline pairs"),
    TRAIN: ("split", "python -m pipeline split"),
    VAL: ("split", "python -m pipeline split"),
    WALKS: ("walks", "python -m pipeline walks"),
    RATINGS: ("ratings", "python -m pipeline ratings"),
    USERS: ("ratings", "python -m pipeline ratings"),
    ITEMS: ("ratings", "python -m pipeline ratings"),
    SEQUENCES_TRAIN: ("sequences", "python -m pipeline sequences"),
    SEQUENCES_VAL: ("sequences", "python -m pipeline sequences"),
    NEXT_TRAIN: ("sequences", "python -m pipeline sequences"),
    NEXT_EVAL: ("sequences", "python -m pipeline sequences"),
    EMBEDDINGS: ("train", "python -m recsys_stream train"),
}

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


# Ratings in the raw file's order (repeats of a (user, item) resolved), ids
# 0..n-1 of users and items in the order of their first line.
RATINGS_SCHEMA = pa.schema(
    [
        ("user", pa.int32()),
        ("item", pa.int32()),
        ("rating", pa.float32()),
        ("timestamp", pa.int64()),
    ]
)

# A ratings val file: the ratings, and whether its train file has a rating
# of that user and of that item.
RATING_VAL_SCHEMA = pa.schema(
    [*RATINGS_SCHEMA, ("user_seen", pa.bool_()), ("item_seen", pa.bool_())]
)

# Runs of one user's ratings in time order (pipeline sequences), a row a run.
SEQUENCES_SCHEMA = pa.schema(
    [
        ("user", pa.int32()),
        ("items", pa.list_(pa.int32())),
        ("ratings", pa.list_(pa.float32())),
        ("timestamps", pa.list_(pa.int64())),
    ]
)

# A run whose last ``targets`` ratings are val ratings to predict, after the
# ratings before them.
SEQUENCE_VAL_SCHEMA = pa.schema([*SEQUENCES_SCHEMA, ("targets", pa.int32())])

# Leave-one-out: a user's items up to and including the val target (the
# second last), and the test target (the last).
NEXT_EVAL_SCHEMA = pa.schema(
    [("user", pa.int32()), ("items", pa.list_(pa.int32())), ("target", pa.int32())]
)

# Users or items in id order: a row's position is its id.
ENTITIES_SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("key", pa.string()),  # the raw file's id: MovieLens' number, Amazon's reviewerID or asin
        ("ratings", pa.int32()),
        ("title", pa.string()),
    ]
)


def stamped(schema: pa.Schema, stage: str, **facts: str) -> pa.Schema:
    """``schema`` with the format version, producing stage and ``facts`` in its metadata."""
    return schema.with_metadata({"format_version": FORMAT_VERSION, "stage": stage, **facts})


def lineage_id(*parts: object) -> str:
    """A short id for what decides a file: its stage, inputs' ids and options."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamps(parquet: pq.ParquetFile) -> dict[str, str]:
    """The metadata a file was stamped with (polars keeps it in the Arrow schema,
    pyarrow's writer also in the file's key-value metadata)."""
    found = {**(parquet.schema_arrow.metadata or {}), **(parquet.metadata.metadata or {})}
    return {k.decode(): v.decode() for k, v in found.items() if k != b"ARROW:schema"}


def made_by(path: str | Path) -> str:
    """The command that writes ``path``, for messages."""
    return producer(path)[1]


def producer(path: str | Path) -> tuple[str | None, str]:
    """(stage, command) of the stage that writes ``path``: by name, or by the prefix
    of split-ratings' train and val files (one pair, or one a fold)."""
    name = Path(path).name
    if name in PRODUCERS:
        return PRODUCERS[name]
    if name.startswith(("ratings-train", "ratings-val")):
        return "split-ratings", "python -m pipeline split-ratings"
    return None, "the stage that writes it"


def require(path: str | Path, schema: pa.Schema) -> pq.ParquetFile:
    """Open a stage's Parquet input, or fail in one line saying what is wrong.

    Refuses a file that is missing, unreadable, unstamped, of another format
    version or stage, or without the columns and types of ``schema``.
    """
    path = Path(path)
    stage, command = producer(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not found (it is made by `{command}`)")
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise PipelineError(f"{path}: not a readable Parquet file ({exc})") from None
    found = parquet.schema_arrow
    facts = stamps(parquet)
    version = facts.get("format_version")
    if version is None:
        raise PipelineError(f"{path}: no format_version stamp, not written by `{command}`")
    if version != FORMAT_VERSION:
        raise PipelineError(
            f"{path}: format version {version}, this code reads {FORMAT_VERSION}; rerun `{command}`"
        )
    if stage and facts.get("stage") != stage:
        written_by = facts.get("stage")
        raise PipelineError(
            f"{path}: written by stage {written_by!r}, expected {stage!r}; rerun `{command}`"
        )
    missing = [f.name for f in schema if f.name not in found.names]
    if missing:
        raise PipelineError(f"{path}: missing columns {', '.join(missing)}; rerun `{command}`")
    wrong = [
        f"{f.name} is {found.field(f.name).type}, expected {f.type}"
        for f in schema
        if not found.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise PipelineError(f"{path}: {'; '.join(wrong)}; rerun `{command}`")
    return parquet


def check_lineage(key: str, first: Path, second: Path, second_key: str | None = None) -> str:
    """The shared id ``key`` of two stage files; one line naming both if they differ.

    ``second_key``: the name the id has in the second file, when it differs.
    """
    ids = [
        stamps(pq.ParquetFile(path)).get(name)
        for path, name in ((first, key), (second, second_key or key))
    ]
    if None in ids or ids[0] != ids[1]:
        order = [*PRODUCERS]  # in stage order; split-ratings' files come after ITEMS
        order.insert(order.index(ITEMS) + 1, "split-ratings")
        later = max(
            (first, second),
            key=lambda p: order.index(p.name if p.name in PRODUCERS else "split-ratings"),
        )
        raise PipelineError(
            f"{first} and {second} do not belong together ({key} {ids[0]} and {ids[1]}); "
            f"rerun `{made_by(later)}`"
        )
    return ids[0]


def check_ids(parquet: pq.ParquetFile, path: Path, columns: list[str], size: int) -> bool:
    """Refuse ids outside 0..size-1, from the row groups' statistics.

    Returns False when a row group has no statistics, so the caller checks
    the values as it reads them.
    """
    for index in range(parquet.num_row_groups):
        group = parquet.metadata.row_group(index)
        for position in (parquet.schema_arrow.get_field_index(name) for name in columns):
            statistics = group.column(position).statistics
            if statistics is None or not statistics.has_min_max:
                return False
            if statistics.min < 0 or statistics.max >= size:
                raise PipelineError(
                    f"{path}: ids up to {statistics.max} for a vocabulary of {size:,} products "
                    f"(0..{size - 1}); rerun `{made_by(path)}`"
                )
    return True


def vocabulary_size(vocab: pq.ParquetFile, path: Path) -> int:
    """V, after checking that the vocabulary's ids are 0..V-1 in row order (a row's
    position is its id, which similar and the trainer rely on)."""
    ids = vocab.read(columns=["id"]).column("id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids), dtype=ids.dtype)):
        raise PipelineError(
            f"{path}: ids are not 0..{len(ids) - 1} in order; rerun `{made_by(path)}`"
        )
    return len(ids)


# The names of split-ratings' files, and the layout of sequences' list columns:
# what the trainer reads, so it imports them from here and never imports polars.


def split_names(folds: int) -> list[tuple[str, str]]:
    """The (train, val) file names of a split: one pair, or one a fold."""
    if folds <= 1:
        return [("ratings-train.parquet", "ratings-val.parquet")]
    return [
        (f"ratings-train-fold{k}.parquet", f"ratings-val-fold{k}.parquet")
        for k in range(1, folds + 1)
    ]


def ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions lo..hi-1 of every range, concatenated, and the list offsets
    (a list column's, or where each range starts in the positions)."""
    length = hi - lo
    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int32)
    index = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - lo, length)
    return index, offsets


# Side information a product vector can average with its own (side_info.py).
FEATURES = ("brand", "category", "price")


def parse_features(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"brand,category"`` (or a sequence) as a checked tuple of feature names."""
    names = tuple(n.strip() for n in text.split(",")) if isinstance(text, str) else tuple(text)
    names = tuple(n for n in names if n)
    unknown = [n for n in names if n not in FEATURES]
    if unknown or len(set(names)) != len(names):
        raise PipelineError(
            f"--side-info takes distinct names among {', '.join(FEATURES)}; got {','.join(names)!r}"
        )
    return names
