"""Item titles for a ratings dataset, from the file that names them.

- MovieLens ``movies.csv`` (``movieId,title,genres``, quoted titles, UTF-8);
- MovieLens 100K ``u.item`` (``|``-separated, latin-1);
- MovieLens 1M and 10M ``movies.dat`` (``::``-separated; a title may hold ``:``;
  latin-1 in 1M, UTF-8 in 10M: decoded as UTF-8 where it is valid);
- an Amazon ``products.parquet`` made by ``pipeline parse`` (asin and title).

The kind is told from the content, not the name. Titles files are small
(tens of thousands of rows), so they are read whole.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.contracts import PRODUCTS_SCHEMA, require
from pipeline.errors import PipelineError


def read_titles(path: str | Path) -> pl.DataFrame:
    """``key`` (the items' raw ids) and ``title`` of every item the file names."""
    path = Path(path)
    try:
        head = path.read_bytes()[:4096]
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read ({exc.strerror})") from None
    if head.startswith(b"PAR1"):
        products = require(path, PRODUCTS_SCHEMA).read(columns=["asin", "title"])
        return pl.from_arrow(products).rename({"asin": "key"}).drop_nulls("title")
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    if first.startswith(b"movieId,title"):
        table = pacsv.read_csv(path, convert_options=_strings(["movieId", "title"]))
        return _frame(table.column("movieId"), table.column("title"))
    if b"::" in first:
        return _movies_dat(path)
    if first.count(b"|") >= 2:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding="latin-1", autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False),
            convert_options=_strings(["f0", "f1"]),
        )
        return _frame(table.column("f0"), table.column("f1"))
    raise PipelineError(
        f"{path}: not a titles file (movies.csv, u.item, movies.dat or products.parquet)"
    )


def _strings(names: list[str]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        include_columns=names, column_types=dict.fromkeys(names, pa.string())
    )


def _frame(keys, titles) -> pl.DataFrame:
    return pl.DataFrame({"key": pl.Series(keys).str.strip_chars(), "title": pl.Series(titles)})


def _movies_dat(path: Path) -> pl.DataFrame:
    """``MovieID::Title::Genres`` lines; each decoded as UTF-8 where valid, else latin-1."""
    keys, titles = [], []
    for raw in path.read_bytes().splitlines():
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        fields = line.rstrip("\r\n").split("::")
        if len(fields) >= 2 and fields[0].strip():
            keys.append(fields[0].strip())
            titles.append(fields[1])
    return pl.DataFrame(
        {"key": keys, "title": titles}, schema={"key": pl.String, "title": pl.String}
    )
