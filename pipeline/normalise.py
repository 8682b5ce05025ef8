"""Decoded metadata records to the columns of products.parquet.

Both schemas are read: the 2014 one (``related`` dict, ``categories`` paths,
``salesRank`` dict, float ``price``) and the 2018 one (top-level ``also_buy``
and ``also_view``, flat ``category``, ``rank`` text, ``"$3.17"`` prices, with
``""`` and ``[]`` standing for absent values). Absent, empty and junk values
become null; a field of the wrong type quarantines its record with a reason.
Titles and brands arrive with HTML entities (``Charge &amp; Sync``); they are
decoded once, here, so every later stage and ``similar`` see plain text.
"""

from __future__ import annotations

import html
import math
import re

import pyarrow as pa

from pipeline.contracts import PRODUCTS_SCHEMA, RELATIONS
from pipeline.decode import Decoded

_PRICE = re.compile(r"\$?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_RANK = re.compile(r"([\d,]+)\s+in\s+([^(\n]+?)\s*(?:\(|$)")
_FIELDS = PRODUCTS_SCHEMA.names[1:]  # every column but ``line``


class Rejected(Exception):
    """A record that cannot be a product; the message is the reason."""


_LIST_FIELDS_2018 = {"also_bought": "also_buy", "also_viewed": "also_view"}


def product(record: dict) -> tuple:
    """The values of one product in ``_FIELDS`` order; raises Rejected.

    Straight-line on the common shapes (it runs once per product line);
    the helpers below take the rare ones.
    """
    get = record.get
    asin = get("asin")
    if type(asin) is not str or not asin or asin.isspace():
        # Absent, null and blank are missing; 123 or a list is an asin of the wrong type.
        raise Rejected(
            "missing asin" if asin is None or type(asin) is str else "asin is not a string"
        )
    title, brand, price = get("title"), get("brand"), get("price")
    if type(title) is not str or not title or title.isspace():
        title = _text(title, "title")
    if type(brand) is not str or not brand or brand.isspace():
        brand = _text(brand, "brand")
    if title and "&" in title:
        title = html.unescape(title)
    if brand and "&" in brand:
        brand = html.unescape(brand)
    if type(price) is not float or not 0 <= price < math.inf:
        price = _price(price)
    related = get("related")
    if type(related) is dict:
        lists = [related.get(name) for name in RELATIONS]
    elif related is None:
        lists = [get(_LIST_FIELDS_2018.get(name, "")) for name in RELATIONS]
    else:
        raise Rejected("bad related")
    for i, value in enumerate(lists):
        if type(value) is not list or not value:
            lists[i] = _asins(value, RELATIONS[i])
    categories = get("categories")
    if (
        type(categories) is not list
        or not categories
        or type(categories[0]) is not list
        or str in map(type, categories)  # Arrow would take a string for a list of characters
    ):
        categories = _categories(record)
    rank = get("salesRank")
    if type(rank) is dict and len(rank) == 1:
        ((rank_category, rank),) = rank.items()
        if type(rank) is not int:
            rank = rank_category = None
    else:
        rank, rank_category = _sales_rank(record)
    return (asin.strip(), title, brand, price, categories, rank, rank_category, *lists)


def _text(value: object, field: str) -> str | None:
    if value is None or (type(value) is str and (not value or value.isspace())):
        return None
    if type(value) is not str:
        raise Rejected(f"bad {field}")
    return value


def _asins(value: object, field: str) -> list | None:
    if not value:  # None, [] or "": absent
        return None
    if type(value) is not list:
        raise Rejected(f"bad {field}")
    return value


def _price(value: object) -> float | None:
    if type(value) in (float, int):
        price = float(value)
    elif type(value) is str:
        match = _PRICE.fullmatch(value.strip())
        if not match:
            return None  # "", ranges, or HTML where a price should be
        price = float(match[1].replace(",", "") + (match[2] or ""))
    else:
        return None
    return price if math.isfinite(price) and price >= 0 else None


def _categories(record: dict) -> list | None:
    paths = record.get("categories")
    if paths is None:
        flat = _asins(record.get("category"), "category")
        return [flat] if flat else None
    if type(paths) is not list or not all(type(p) is list for p in paths):
        raise Rejected("bad categories")
    return paths or None


def _sales_rank(record: dict) -> tuple[int | None, str | None]:
    ranks = record.get("salesRank")
    if type(ranks) is dict and ranks:
        category, rank = next(iter(ranks.items()))
        return (rank, category) if type(rank) is int else (None, None)
    text = record.get("rank")
    for item in text if type(text) is list else [text]:
        match = _RANK.search(item) if type(item) is str else None
        if match:
            return int(match[1].replace(",", "")), match[2]
    return None, None


def to_batch(decoded: list[Decoded]) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
    """A products batch from decoded records, and (line, reason) for each one refused."""
    lines, rows, refused = [], [], []
    for number, record in decoded:
        try:
            rows.append(product(record))
            lines.append(number)
        except Rejected as reason:
            refused.append((number, str(reason)))
    try:
        return _arrow(lines, rows), refused
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _arrow_checked(lines, rows, refused), sorted(refused)


def _arrow(lines: list[int], rows: list[tuple]) -> pa.RecordBatch:
    columns = list(zip(*rows)) if rows else [[] for _ in _FIELDS]
    arrays = [pa.array(lines, pa.int64())] + [
        pa.array(column, PRODUCTS_SCHEMA.field(name).type) for name, column in zip(_FIELDS, columns)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PRODUCTS_SCHEMA)


def _arrow_checked(lines, rows, refused) -> pa.RecordBatch:
    """Slow path: convert row by row to find the rows Arrow refuses (a list
    holding a number, say), and refuse them too."""
    good_lines, good_rows = [], []
    for number, row in zip(lines, rows):
        bad = _first_bad_field(row)
        if bad:
            refused.append((number, f"bad {bad}"))
        else:
            good_lines.append(number)
            good_rows.append(row)
    return _arrow(good_lines, good_rows)


def _first_bad_field(row: tuple) -> str | None:
    for name, value in zip(_FIELDS, row):
        try:
            pa.array([value], PRODUCTS_SCHEMA.field(name).type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return name
    return None
