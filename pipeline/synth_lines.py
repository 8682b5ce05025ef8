"""A synthetic catalog's products as lines of each format, with the faults ``messy`` plants.

:mod:`pipeline.synth` draws the products (:class:`Product`); this module
renders them as the 2014 dump's Python literals or JSON, or as the 2018
schema, and plans and plants the faulty lines below.

``messy=True`` plants the faults real dumps have, about 0.5% of lines per kind (at least
one each when N >= 50; none below, apart from the missing final newline). What the
parser is expected to do with each kind:

- ``truncated``: a product line cut in the middle (newline kept). Reject the line; the
  product is lost.
- ``invalid_utf8``: a product line with a ``0xff`` byte spliced into its ``asin`` value.
  Reject the line; the product is lost.
- ``not_a_dict``: a line that parses but is not a dict (``[1, 2, 3]``, a string, ``42``,
  ``None``/``null``). Reject the line.
- ``injection``: one line ``__import__('os').system('echo pwned')``. Reject it without
  evaluating it (``ast.literal_eval`` or ``json.loads`` only).
- ``duplicate_asin``: a later copy of an earlier product line, half of them with a
  different title. Count it as a duplicate and keep the first occurrence.
- ``empty_lists``: a product whose related lists are present but empty. Accept it; it
  has no links. (In ``json2018`` every key is always present, so it looks like a product
  that never had lists.)
- ``odd_titles``: a product whose title holds quotes, backslashes, tabs, newlines or
  non-ASCII text. Accept it with the title unchanged.
- ``no_final_newline``: the last line has no trailing newline. Accept that line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

FAULT_RATE = 0.005

MIN_MESSY = 50  # catalogs this large get every fault kind at least once

IMAGE_2014 = "http://ecx.images-amazon.com/images/I/{}.jpg"

IMAGE_2018 = "https://images-na.ssl-images-amazon.com/images/I/{}._SS40_.jpg"

# Faults (``messy``), in the order their lines are planned.
FAULT_KINDS = (
    "truncated",
    "invalid_utf8",
    "not_a_dict",
    "injection",
    "duplicate_asin",
    "empty_lists",
    "odd_titles",
    "no_final_newline",
)

DAMAGE_KINDS = ("truncated", "invalid_utf8", "empty_lists", "odd_titles")

ODD_TITLES = (
    "Café – “Deluxe” 日本",
    'The "Best" Cable You\'ll Ever Buy',
    "C:\\Drivers\\usb.inf \\ Backslash Edition",
    "Tab\tSeparated\tTitle",
    "Two Line\nTitle\r\n",
    '12" Vinyl Sleeves',
    "Emoji 🎧 Headphones ünïcödé",
)

NOT_A_DICT = {
    "py": ("[1, 2, 3]", "'just a string'", "42", "None"),
    "json": ("[1, 2, 3]", '"just a string"', "42", "null"),
}

INJECTION = "__import__('os').system('echo pwned')"

INVALID_BYTE = "\udcff"  # encodes to b"\xff" under surrogateescape


class Product(NamedTuple):
    """One catalog product, before it is written in a format."""

    asin: str
    title: str | None
    price: float | None
    image: str
    related: dict[str, list[str]]  # relation name -> ASINs; empty lists left out
    top: str
    rank: int | None
    brand: str | None
    path: list[str]


@dataclass
class Faults:
    """Where ``messy`` faults go, by catalog line index."""

    counts: dict[str, int] = field(default_factory=dict)
    damage: dict[int, tuple[str, int]] = field(default_factory=dict)  # -> (kind, variant)
    copies: dict[int, tuple[int, bool]] = field(default_factory=dict)  # -> (slot, retitle)
    extra: dict[int, list[str]] = field(default_factory=dict)  # slot -> lines after it


def _render_py(p: Product) -> str:
    """The 2014 line: ``repr`` of the dict, as the original dump was written."""
    return repr(_record_2014(p))


def _render_json(p: Product) -> str:
    """The 2014 record as strict JSON."""
    return json.dumps(_record_2014(p), ensure_ascii=False)


def _record_2014(p: Product) -> dict:
    """The 2014 metadata dict; absent fields are missing keys."""
    record: dict = {"asin": p.asin}
    if p.title is not None:
        record["title"] = p.title
    if p.price is not None:
        record["price"] = p.price
    record["imUrl"] = IMAGE_2014.format(p.image)
    if p.related:
        record["related"] = p.related
    if p.rank is not None:
        record["salesRank"] = {p.top: p.rank}
    if p.brand is not None:
        record["brand"] = p.brand
    record["categories"] = [p.path]
    return record


def _render_2018(p: Product) -> str:
    """The 2018 line: every key present, absent values as "" or [], HTML-escaped '&'."""
    main_cat = _html(p.top)
    return json.dumps(
        {
            "category": [_html(c) for c in p.path],
            "tech1": "",
            "description": [],
            "fit": "",
            "title": p.title or "",
            "also_buy": p.related.get("also_bought", []),
            "image": [IMAGE_2018.format(p.image)],
            "tech2": "",
            "brand": p.brand or "",
            "feature": [],
            "rank": f"{p.rank:,} in {main_cat} (" if p.rank is not None else [],
            "also_view": p.related.get("also_viewed", []),
            "details": {},
            "main_cat": main_cat,
            "similar_item": "",
            "date": "",
            "price": f"${p.price:,.2f}" if p.price is not None else "",
            "asin": p.asin,
        },
        ensure_ascii=False,
    )


def _html(text: str) -> str:
    """'&' as the 2018 scrape wrote it."""
    return text.replace("&", "&amp;")


RENDERERS: dict[str, Callable[[Product], str]] = {
    "py": _render_py,
    "json": _render_json,
    "json2018": _render_2018,
}


def plan_faults(rng: np.random.Generator, n: int, fmt: str) -> Faults:
    """Choose which catalog lines are damaged or copied and where junk lines go."""
    each = max(1, round(FAULT_RATE * n)) if n >= MIN_MESSY else 0
    faults = Faults(
        counts={kind: each for kind in FAULT_KINDS}
        | {"injection": min(each, 1), "no_final_newline": 1}
    )
    picked = rng.choice(n, size=5 * each, replace=False).tolist()
    for k, kind in enumerate(DAMAGE_KINDS):
        for variant, i in enumerate(picked[k * each : (k + 1) * each]):
            faults.damage[i] = (kind, variant)
    sources = np.array(picked[4 * each :], dtype=np.int64)
    slots = sources + (rng.random(each) * (n - sources)).astype(np.int64)
    for j, (i, slot) in enumerate(zip(sources.tolist(), slots.tolist())):
        faults.copies[i] = (slot, j % 2 == 1)
    junk = NOT_A_DICT["py" if fmt == "py" else "json"]
    lines = [junk[j % len(junk)] for j in range(each)] + [INJECTION] * faults.counts["injection"]
    for slot, line in zip(rng.integers(n, size=len(lines)).tolist(), lines):
        faults.extra.setdefault(slot, []).append(line)
    return faults


def catalog_lines(
    products: list[Product],
    begin: int,
    faults: Faults,
    render: Callable[[Product], str],
    relations: tuple[str, ...],
) -> Iterator[str]:
    """The lines of catalog products ``begin...``, with their planned faults (``relations``:
    the related lists an ``empty_lists`` fault leaves present and empty, in order).

    Copies of a product are queued in ``faults.extra`` and junk lines are taken from it
    as their slots come up, so a plan is used up by one pass.
    """
    for i, p in enumerate(products, begin):
        kind, variant = faults.damage.get(i, ("", 0))
        if kind == "empty_lists":
            p = p._replace(related={name: [] for name in relations})
        elif kind == "odd_titles":
            p = p._replace(title=ODD_TITLES[variant % len(ODD_TITLES)])
        line = render(p)
        if kind == "truncated":
            line = line[: len(line) // 2]
        elif kind == "invalid_utf8":
            cut = line.index(p.asin) + 5
            line = line[:cut] + INVALID_BYTE + line[cut:]
        yield line
        if i in faults.copies:
            slot, retitle = faults.copies[i]
            copy = render(p._replace(title=f"Renewed: {p.title or p.asin}")) if retitle else line
            faults.extra.setdefault(slot, []).append(copy)
        yield from faults.extra.pop(i, ())
