"""The rating file formats: telling them apart, their rating scales, and decoding a block.

A block of whole lines becomes columns ``user_key``, ``item_key`` (strings),
``rating`` (float32), ``timestamp`` (int64) and ``line`` (int64, the line's
number in the file). A clean block is decoded in one call of Arrow's CSV or
JSON reader; a block where that fails or does not account for every line is
decoded again line by line, each refused line with its reason. So a bad line
costs its block the slow path, never the run, and never its neighbours.

A rating off its file's scale (:class:`Scale`) is a bad line too: outside
the scale, or between its steps (3.7 in a MovieLens file of half stars). A
file that holds 99 or 1e30 stars is not a file of this format, and a model
trained on it would report errors in tens of stars or diverge.

Formats:

- ``movielens-csv``: ``ratings.csv`` of latest-small, 25M and 32M; header
  ``userId,movieId,rating,timestamp``; CRLF tolerated. 0.5 to 5 stars in
  half stars.
- ``movielens-100k``: ``u.data``, tab-separated, no header. 1 to 5 whole stars.
- ``movielens-dat``: ``ratings.dat`` of 1M and 10M, ``::``-separated. 0.5 to 5
  in half stars: 1M's whole stars and 10M's half stars share the format.
- ``recbole``: RecBole's ``.inter`` files (``ml-100k.inter`` in its wheel),
  tab-separated under a typed header ``user_id:token item_id:token ...``. No
  scale of its own: RecBole converts every dataset to it (MovieLens' 1 to 5,
  Jester's -10 to 10, Book-Crossing's 0 to 10), so a run names it with
  ``--scale`` rather than have a guess keep part of a file.
- ``amazon``: Amazon review files, 2014 and 2018 (JSON lines: ``reviewerID``,
  ``asin``, ``overall``, ``unixReviewTime``; the rest is ignored). 1 to 5
  whole stars.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from pipeline.decode import Reject, count_lines, preview
from pipeline.errors import PipelineError
from pipeline.formats import open_raw

COLUMNS = pa.schema(
    [
        ("user_key", pa.string()),
        ("item_key", pa.string()),
        ("rating", pa.float32()),
        ("timestamp", pa.int64()),
        ("line", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Delimited:
    """A format of four separated fields a line: user, item, rating, timestamp."""

    separator: str
    header: str | None  # the first line (its start for a typed header), or None

    def arrow_fields(self) -> tuple[str, list[int]]:
        """Arrow's one-character delimiter, and which of its fields hold the four."""
        if len(self.separator) == 1:
            return self.separator, [0, 1, 2, 3]
        return self.separator[0], [0, 2, 4, 6]  # "::" reads as ":" with empty fields between


@dataclass(frozen=True)
class Scale:
    """The ratings a file may hold: ``low`` to ``high``, and with a ``step`` only
    ``low`` plus whole steps (MovieLens' half stars)."""

    low: float
    high: float
    step: float | None = None

    def to_json(self) -> dict:
        return {"min": self.low, "max": self.high, "step": self.step}

    def refusals(self, rating: np.ndarray) -> list[tuple[int, str]]:
        """(row, reason) of each rating off the scale, in row order.

        ``rating``: float32, as stored, so a rating is judged by its stored value.
        """
        value = rating.astype(np.float64)
        outside = ~((value >= self.low) & (value <= self.high))
        found = [(int(row), self.outside_reason) for row in np.flatnonzero(outside)]
        if self.step is not None:
            steps = (value - self.low) / self.step
            between = ~outside & (steps != np.round(steps))
            found = sorted(
                found + [(int(row), self.between_reason) for row in np.flatnonzero(between)]
            )
        return found

    @property
    def outside_reason(self) -> str:
        return f"rating outside the scale {self.low:g} to {self.high:g}"

    @property
    def between_reason(self) -> str:
        return f"rating between the scale's steps of {self.step:g}"


HALF_STARS = Scale(0.5, 5.0, 0.5)
WHOLE_STARS = Scale(1.0, 5.0, 1.0)
# Each format's scale (see the module doc); None: the run must name it (--scale).
SCALES: dict[str, Scale | None] = {
    "movielens-csv": HALF_STARS,
    "movielens-100k": WHOLE_STARS,
    "movielens-dat": HALF_STARS,
    "recbole": None,
    "amazon": WHOLE_STARS,
}

AMAZON_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")
FORMATS: dict[str, Delimited | None] = {
    "movielens-csv": Delimited(",", "userId,movieId,rating,timestamp"),
    "movielens-100k": Delimited("\t", None),
    "movielens-dat": Delimited("::", None),
    "recbole": Delimited("\t", "user_id:token\titem_id:token\trating:float\ttimestamp:float"),
    "amazon": None,  # JSON lines
}
_AMAZON_SCHEMA = pa.schema(
    [
        ("reviewerID", pa.string()),
        ("asin", pa.string()),
        ("overall", pa.float64()),
        ("unixReviewTime", pa.int64()),
    ]
)


def detect_format(raw: Path) -> str:
    """The format of ``raw``, from its first line."""
    with open_raw(raw) as (stream, _):
        try:
            first = stream.readline(1 << 16).decode("utf-8", "replace").rstrip("\r\n")
        except (EOFError, OSError) as exc:
            raise PipelineError(f"{raw}: truncated or corrupt gzip stream ({exc})") from None
    if not first.strip():
        raise PipelineError(f"{raw}: empty file, or an empty first line")
    if first.lstrip().startswith("{"):
        return "amazon"
    for name, fmt in FORMATS.items():
        if fmt is not None and fmt.header is not None and first.startswith(fmt.header):
            return name
    if "::" in first:
        return "movielens-dat"
    if first.count("\t") == 3:
        return "movielens-100k"
    raise PipelineError(
        f"{raw}: cannot tell the rating format from its first line; pass --format "
        f"({', '.join(FORMATS)})"
    )


def rating_scale(raw: Path, fmt: str, scale: str | tuple[float, float] | None) -> Scale:
    """The scale a run of ``fmt`` checks: ``scale`` (``"MIN:MAX"`` or a pair, any
    rating between; from ``--scale``) or the format's own."""
    if scale is None:
        if SCALES[fmt] is None:
            raise PipelineError(
                f"{raw}: a {fmt} file does not say its rating scale; pass --scale MIN:MAX "
                "(1:5 for MovieLens 100K and 1M)"
            )
        return SCALES[fmt]
    text = scale if isinstance(scale, str) else ":".join(map(str, scale))
    low, colon, high = text.partition(":")
    try:
        low, high = float(low), float(high)
    except ValueError:
        low = high = math.nan
    if not colon or not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise PipelineError(
            f"--scale must be MIN:MAX, two finite numbers with MIN < MAX, got {text!r}"
        )
    return Scale(low, high)


def check_header(raw: Path, fmt: str, first_line: bytes) -> None:
    """Refuse a file of a header format whose first line is not that header."""
    header = FORMATS[fmt].header
    text = first_line.decode("utf-8", "replace").rstrip("\r\n")
    if not text.startswith(header):
        raise PipelineError(f"{raw}: first line is {text[:60]!r}, not the {fmt} header {header!r}")


def decode_block(
    block: bytes, first_line: int, fmt: str, scale: Scale | None = None
) -> tuple[pa.RecordBatch, list[Reject]]:
    """The ratings of a block of whole lines, and its refused lines.

    ``scale``: refuse the ratings off it (the ratings stage always passes one).
    """
    lines = count_lines(block)
    decoded = _fast(block, FORMATS[fmt], scale)
    if decoded is not None and decoded.num_rows == lines:
        line = pa.array(range(first_line, first_line + lines), pa.int64())
        return pa.RecordBatch.from_arrays([*decoded.columns, line], schema=COLUMNS), []
    return _line_by_line(block, first_line, FORMATS[fmt], scale)


def _fast(block: bytes, fmt: Delimited | None, scale: Scale | None) -> pa.RecordBatch | None:
    """The block through Arrow's reader, or None when any line needs a closer look."""
    try:
        batch = _arrow_json(block) if fmt is None else _arrow_delimited(block, fmt)
    except (pa.ArrowInvalid, pa.ArrowTypeError, _Refused):
        return None
    if scale is not None and scale.refusals(batch.column("rating").to_numpy()):
        return None
    return batch


class _Refused(Exception):
    """A value the fast path will not take: the block goes line by line."""


def _arrow_delimited(block: bytes, fmt: Delimited) -> pa.RecordBatch:
    delimiter, used = fmt.arrow_fields()
    names = [f"f{i}" for i in range(max(used) + 1)]

    table = pacsv.read_csv(
        io.BytesIO(block),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, quote_char=False, invalid_row_handler=lambda _: "skip"
        ),  # a skipped line leaves the rows short of the lines: the block goes line by line
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )
    for name in set(names) - {names[i] for i in used}:  # "::": the fields between are empty
        if pc.any(pc.not_equal(table.column(name), "")).as_py():
            raise _Refused
    user, item, rating, timestamp = (table.column(names[i]) for i in used)
    rating = pc.cast(pc.utf8_trim_whitespace(rating), pa.float32())
    return _checked(user, item, rating, pc.cast(pc.utf8_trim_whitespace(timestamp), pa.int64()))


def _arrow_json(block: bytes) -> pa.RecordBatch:
    table = pajson.read_json(
        io.BytesIO(block),
        read_options=pajson.ReadOptions(use_threads=False, block_size=len(block) + 1),
        parse_options=pajson.ParseOptions(
            explicit_schema=_AMAZON_SCHEMA, unexpected_field_behavior="ignore"
        ),
    )
    columns = [table.column(name) for name in _AMAZON_SCHEMA.names]
    if any(column.null_count for column in columns):
        raise _Refused
    user, item, rating, timestamp = columns
    return _checked(user, item, pc.cast(rating, pa.float32()), timestamp)


def _checked(user, item, rating, timestamp) -> pa.RecordBatch:
    """The four columns as a batch, when every key is non-empty and every rating finite."""
    for key in (user, item):
        if pc.any(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(key)), 0)).as_py():
            raise _Refused
    if not pc.all(pc.is_finite(rating)).as_py():
        raise _Refused
    columns = [pc.utf8_trim_whitespace(user), pc.utf8_trim_whitespace(item), rating, timestamp]
    return pa.RecordBatch.from_arrays(
        [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns],
        names=COLUMNS.names[:4],
    )


def _line_by_line(
    block: bytes, first_line: int, fmt: Delimited | None, scale: Scale | None
) -> tuple[pa.RecordBatch, list[Reject]]:
    """Each line on its own: its rating, or its reason for refusal."""
    rows: dict[str, list] = {name: [] for name in COLUMNS.names}
    rejects: list[Reject] = []
    raw_lines = block.split(b"\n")
    for number, raw_line in enumerate(raw_lines, first_line):
        if number == first_line + block.count(b"\n") and not raw_line:
            break  # the block's final newline ends its last line
        try:
            text = raw_line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            rejects.append((number, "not UTF-8", preview(raw_line)))
            continue
        decoded = _json_line(text) if fmt is None else _delimited_line(text, fmt)
        if isinstance(decoded, str):
            rejects.append((number, decoded, preview(raw_line)))
            continue
        for name, value in zip(COLUMNS.names, (*decoded, number)):
            rows[name].append(value)
    batch = pa.RecordBatch.from_pydict(rows, schema=COLUMNS)
    off_scale = scale.refusals(batch.column("rating").to_numpy()) if scale is not None else []
    if off_scale:
        numbers = batch.column("line").to_numpy()
        rejects = sorted(
            rejects
            + [
                (int(numbers[row]), reason, preview(raw_lines[numbers[row] - first_line]))
                for row, reason in off_scale
            ]
        )
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[[row for row, _ in off_scale]] = False
        batch = batch.filter(pa.array(keep))
    return batch, rejects


def _delimited_line(text: str, fmt: Delimited) -> tuple | str:
    if not text.strip():
        return "empty line"
    fields = [field.strip() for field in text.split(fmt.separator)]
    if len(fields) != 4:
        return f"{len(fields)} fields, not 4"
    return _values(*fields)


def _json_line(text: str) -> tuple | str:
    if not text.strip():
        return "empty line"
    try:
        record = json.loads(text)
    except ValueError:
        return "not JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    for name in AMAZON_FIELDS:
        if record.get(name) is None:
            return f"no {name}"
    user, item = record["reviewerID"], record["asin"]
    if not isinstance(user, str) or not isinstance(item, str):
        return "reviewerID or asin is not a string"
    if not all(_is_number(record[name]) for name in ("overall", "unixReviewTime")):
        return "overall or unixReviewTime is not a JSON number"
    return _values(user.strip(), item.strip(), record["overall"], record["unixReviewTime"])


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _values(user: str, item: str, rating, timestamp) -> tuple | str:
    """(user, item, rating, timestamp), or the reason they are not a rating."""
    if not user:
        return "no user"
    if not item:
        return "no item"
    rating = _number(rating)
    if rating is None or not math.isfinite(rating):
        return "rating is not a finite number"
    timestamp = _number(timestamp)
    if timestamp is None or not timestamp.is_integer() or abs(timestamp) >= 2**63:
        return "timestamp is not an integer"
    return user, item, rating, int(timestamp)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
