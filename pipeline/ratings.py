"""Ratings stage: a MovieLens or Amazon reviews file into ratings.parquet, with ids.

Writes, in the dataset directory:

- ``ratings.parquet``: ``user``, ``item`` (int32 ids), ``rating`` (float32),
  ``timestamp`` (int64), in the raw file's order;
- ``users.parquet`` and ``items.parquet``: ``id``, ``key`` (the raw file's id),
  ``ratings`` (how many kept ratings), ``title`` (items, from ``--titles``);
  ids count from 0 in the order of each key's first line;
- ``rejects.jsonl``: each refused line with its number, reason and first
  characters (a rating off the scale is refused too);
- ``ratings.json``: lines = ratings + repeated + rejected, rejects by reason,
  the scale checked (``min``, ``max``, ``step`` or null), the range of the
  ratings kept, users, items, seconds, peak RSS.

A file that yields no rating stops the stage with one line: its
``rejects.jsonl`` is written for the line to point at (unless the file had
no line but a header), and no other output, a previous run's included, is
left to look finished.

A (user, item) rated on several lines keeps its latest rating (the largest
timestamp, then the later line); the others count as ``repeated``.

Two phases. The raw file is read in blocks of whole lines and decoded
(:mod:`pipeline.rating_formats`) into a work file of keys; then polars'
streaming engine gives users and items their ids (a group-by over the keys),
swaps keys for ids (joins), resolves repeats (a group-by over the pairs) and
writes the files. Memory: a block, the users' and items' keys, and the
group-by over distinct (user, item) pairs, never the ratings themselves.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.blocks import line_blocks
from pipeline.contracts import (
    ENTITIES_SCHEMA,
    ITEMS,
    RATINGS,
    RATINGS_SCHEMA,
    RATINGS_STATS,
    REJECTS,
    USERS,
    lineage_id,
    stamped,
)
from pipeline.errors import PipelineError
from pipeline.formats import open_raw
from pipeline.options import QuietOptions, argument, option
from pipeline.progress import progress
from pipeline.rating_formats import (
    COLUMNS,
    FORMATS,
    Scale,
    check_header,
    decode_block,
    detect_format,
    rating_scale,
)
from pipeline.stage import StageRun
from pipeline.titles import read_titles

BLOCK_BYTES = 4 << 20  # bytes of whole lines decoded at once
ROW_GROUP_ROWS = 1 << 20
_ENGINE = "streaming"


@dataclass(frozen=True, kw_only=True)
class RatingsOptions(QuietOptions):
    """The arguments of ``python -m pipeline ratings``: :func:`ratings`'s."""

    raw: str = argument(
        "MovieLens ratings.csv, u.data or ratings.dat, RecBole .inter, "
        "or an Amazon reviews file (JSON lines); gzipped or not"
    )
    out: str = option(help="dataset directory to write")
    fmt: str | None = option(None, "default: detect", choices=FORMATS, flag="--format")
    titles: str | None = option(
        None, "item titles: movies.csv, u.item, movies.dat, or an Amazon products.parquet"
    )
    scale: str | None = option(
        None,
        "keep ratings from MIN to MAX instead of the format's scale (needed for RecBole "
        ".inter files; --scale=-10:10 for a negative MIN); default: MovieLens 0.5-5 in half "
        "stars (u.data 1-5), Amazon 1-5",
        metavar="MIN:MAX",
    )


def ratings(
    raw: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str | None = RatingsOptions.fmt,
    titles: str | os.PathLike | None = RatingsOptions.titles,
    quiet: bool = RatingsOptions.quiet,
    scale: str | tuple[float, float] | None = RatingsOptions.scale,
) -> dict:
    """Read the ratings file ``raw`` into the dataset directory ``out``; return the stats.

    ``fmt``: one of FORMATS, or None to tell it from the first line.
    ``titles``: a file naming the items (see :mod:`pipeline.titles`).
    ``scale``: ``"MIN:MAX"`` or (MIN, MAX), the ratings to keep instead of the
    format's scale (``--scale``; any value between, no steps).
    """
    raw, out = Path(raw), Path(out)
    if fmt is not None and fmt not in FORMATS:
        raise PipelineError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    fmt = fmt or detect_format(raw)
    checked = rating_scale(raw, fmt, scale)
    named = read_titles(titles) if titles is not None else None
    with StageRun(out, RATINGS_STATS) as run:
        work = run.work("ratings-work")
        users_tmp, items_tmp, ratings_tmp, rejects_tmp = (
            run.output(name) for name in (USERS, ITEMS, RATINGS, REJECTS)
        )
        keyed = work / "keyed.parquet"
        tally = _decode(raw, fmt, checked, keyed, rejects_tmp, quiet)
        if not tally["decoded"]:
            _stop_without_ratings(raw, out, checked, tally, rejects_tmp)
        ratings_id = lineage_id(
            "ratings", tally["raw_sha256"], fmt, _titles_id(named), checked.to_json()
        )
        facts = {"ratings_id": ratings_id}
        found = _identify(keyed, work, ratings_tmp, stamped(RATINGS_SCHEMA, "ratings", **facts))
        if named is not None:
            titled = (
                found["items"]
                .drop("title")
                .join(named.unique("key", keep="first"), on="key", how="left")
            )
            found["items"] = titled.sort("id").select(ENTITIES_SCHEMA.names)
        for frame, path in ((found["users"], users_tmp), (found["items"], items_tmp)):
            table = frame.to_arrow().cast(stamped(ENTITIES_SCHEMA, "ratings", **facts))
            pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        tally["repeated"] = found["repeated"]
        tally["ratings"] = tally["decoded"] - found["repeated"]
        del tally["decoded"]
        if tally["lines"] != tally["ratings"] + tally["repeated"] + tally["rejected"]:
            raise RuntimeError(f"line accounting is off: {tally}")
        seconds = run.seconds
        stats = run.finish(
            {
                "raw": str(raw),
                "format": fmt,
                "scale": checked.to_json(),
                **tally,
                "users": found["users"].height,
                "items": found["items"].height,
                "items_titled": int(found["items"].get_column("title").is_not_null().sum()),
                "rating_min": found["range"][0],
                "rating_max": found["range"][1],
                "ratings_id": ratings_id,
                "seconds": round(seconds, 2),
                "lines_per_s": round(tally["lines"] / max(seconds, 1e-9)),
            }
        )
    return stats


def _decode(
    raw: Path, fmt: str, scale: Scale, keyed: Path, rejects_path: Path, quiet: bool
) -> dict:
    """Stream ``raw`` into the work file of keys and into rejects.jsonl; the counts."""
    tally = {"lines": 0, "header_lines": 0, "decoded": 0, "rejected": 0, "bytes": 0}
    by_reason: collections.Counter[str] = collections.Counter()
    digest = hashlib.sha256()
    header = FORMATS[fmt] is not None and FORMATS[fmt].header is not None
    with (
        open_raw(raw, digest) as (stream, position),
        pq.ParquetWriter(keyed, COLUMNS, compression="lz4") as writer,
        open(rejects_path, "w", encoding="utf-8") as rejects,
        progress(raw.stat().st_size, "B", f"ratings {raw.name}", quiet) as bar,
    ):
        for block, first_line in line_blocks(stream, raw, tally, BLOCK_BYTES):
            if header and first_line == 1:
                cut = block.find(b"\n") + 1 or len(block)
                check_header(raw, fmt, block[:cut])
                block, first_line = block[cut:], 2
                tally["header_lines"] = 1
                if not block:
                    continue
            batch, refused = decode_block(block, first_line, fmt, scale)
            writer.write_batch(batch)
            tally["decoded"] += batch.num_rows
            for number, reason, text in refused:
                rejects.write(json.dumps({"line": number, "reason": reason, "text": text}) + "\n")
                by_reason[reason] += 1
            tally["rejected"] += len(refused)
            bar.update(position() - bar.n)
    tally["lines"] -= tally["header_lines"]
    tally["rejected_by_reason"] = dict(sorted(by_reason.items()))
    tally["raw_sha256"] = digest.hexdigest()
    return tally


def _stop_without_ratings(
    raw: Path, out: Path, scale: Scale, tally: dict, rejects_tmp: Path
) -> NoReturn:
    """End a run that kept no rating in one line; its rejects.jsonl, if it had lines.

    A previous run's outputs go: beside this run's rejects they would describe
    another file, and split-ratings or make would take them as this one's.
    """
    for name in (RATINGS_STATS, RATINGS, USERS, ITEMS, REJECTS):
        (out / name).unlink(missing_ok=True)
    if not tally["lines"]:
        holds = "only its header" if tally["header_lines"] else "no line"
        raise PipelineError(f"{raw}: no ratings: the file holds {holds}")
    os.replace(rejects_tmp, out / REJECTS)
    by_reason = sorted(tally["rejected_by_reason"].items(), key=lambda item: -item[1])
    counts = ", ".join(f"{n} {reason}" for reason, n in by_reason)
    hint = ""
    if scale.outside_reason in tally["rejected_by_reason"]:
        hint = "; --scale MIN:MAX keeps ratings on another scale"
    raise PipelineError(
        f"{raw}: no ratings in {tally['lines']} lines (every line rejected: {counts}; "
        f"see {out / REJECTS}){hint}"
    )


def _identify(keyed: Path, work: Path, out: Path, schema: pa.Schema) -> dict:
    """Ids for users and items, repeats resolved; writes ``out`` (the ratings with
    ids, in file order) and returns users, items, repeated and the rating range."""
    rows = pl.scan_parquet(keyed)
    found = {}
    for name, key in (("users", "user_key"), ("items", "item_key")):
        found[name] = (
            rows.group_by(key)
            .agg(first=pl.col("line").min())
            .sort("first")
            .with_row_index("id")
            .select(pl.col("id").cast(pl.Int32), pl.col(key).alias("key"))
            .collect(engine=_ENGINE)
        )
    with_ids = (
        rows.join(
            found["users"].lazy().rename({"id": "user", "key": "user_key"}),
            on="user_key",
            maintain_order="left",
        )
        .join(
            found["items"].lazy().rename({"id": "item", "key": "item_key"}),
            on="item_key",
            maintain_order="left",
        )
        .select("user", "item", "rating", "timestamp", "line")
    )
    with_ids.sink_parquet(work / "ids.parquet", engine=_ENGINE)
    ids = pl.scan_parquet(work / "ids.parquet")
    # Repeats are few: find the pairs rated more than once, then their lines
    # other than the latest, and drop those.
    repeated_pairs = ids.group_by("user", "item").agg(copies=pl.len()).filter(pl.col("copies") > 1)
    superseded = (
        ids.join(repeated_pairs, on=["user", "item"], how="semi")
        .sort("timestamp", "line")
        .filter(pl.int_range(pl.len()).over("user", "item") < pl.len().over("user", "item") - 1)
        .select("line")
        .collect(engine=_ENGINE)
    )
    kept = ids.join(superseded.lazy(), on="line", how="anti", maintain_order="left")
    kept.select(schema.names).sink_parquet(
        out, arrow_schema=schema, row_group_size=ROW_GROUP_ROWS, compression="zstd", engine=_ENGINE
    )
    kept = pl.scan_parquet(out)
    for name, column in (("users", "user"), ("items", "item")):
        counts = kept.group_by(column).agg(ratings=pl.len().cast(pl.Int32))
        table = found[name].join(counts.collect(engine=_ENGINE), left_on="id", right_on=column)
        table = table.with_columns(title=pl.lit(None, dtype=pl.String))
        found[name] = table.sort("id").select(ENTITIES_SCHEMA.names)  # every one kept a rating
    span = kept.select(low=pl.col("rating").min(), high=pl.col("rating").max())
    span = span.collect(engine=_ENGINE)
    found["repeated"] = superseded.height
    found["range"] = tuple(float(v) for v in span.row(0))
    return found


def _titles_id(titles: pl.DataFrame | None) -> str | None:
    if titles is None:
        return None
    return hashlib.sha256(titles.write_csv().encode()).hexdigest()[:16]
