"""Synthetic Amazon product catalogs with planted taste clusters, in the real dumps' formats.

The catalog imitates the 2014 Electronics metadata closely enough to exercise every stage:

- A universe of about 1.12 N products: the first N are the catalog lines; the rest are
  "ghosts" that only appear inside related lists (about 10% of related ASINs, as in the
  real files, point outside the catalog).
- Each product belongs to a cluster, a subcategory under one of up to 20 top categories
  (about N / 500 clusters). Popularity is Pareto distributed, so a few products collect a
  large share of all links.
- Related lists draw popularity-weighted targets: mostly from the product's own cluster,
  otherwise from a sibling subcategory or from anywhere. ``also_viewed`` is noisier,
  ``bought_together`` short and concentrated on the cluster's head. Lists hold no
  duplicates and no self-references; about 15% of products have no related lists.

Formats, one product per line: ``py`` (2014: a Python dict literal, ``repr`` of the
dict), ``json`` (the same records as JSON) and ``json2018`` (the 2018 schema: all 18 keys
on every line, absent values as ``""`` or ``[]``, no ``bought_together``).

``messy=True`` plants the faults real dumps have (:mod:`pipeline.synth_lines`
lists them and what the parser is expected to do with each).
"""

from __future__ import annotations

import contextlib
import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from pipeline.cli import check_seed
from pipeline.errors import PipelineError
from pipeline.files import atomic_output
from pipeline.options import QuietOptions, argument, option, seed_option
from pipeline.progress import progress
from pipeline.synth_lines import RENDERERS, Faults, Product, catalog_lines, plan_faults
from pipeline.synth_words import BRANDS, FLOURISHES, MODIFIERS, TOPS, WORDS

FORMATS = ("py", "json", "json2018")

ROOT = "Electronics"
GHOST_SHARE = 0.12  # ghosts per catalog product
PRODUCTS_PER_CLUSTER = 500
MIN_CLUSTERS = 4
POPULARITY_TAIL = 1.2  # Pareto index: the smaller, the heavier the tail
NO_RELATED = 0.15
NO_TITLE = 0.03
HAS_PRICE = 0.90
HAS_BRAND = 0.40
HAS_RANK = 0.95
CHUNK = 10_000  # products drawn and written per batch; part of what a seed means


WORDS_PER_CLUSTER = 3


class _Relation(NamedTuple):
    """How one related list is drawn: its length distribution and where targets come from."""

    name: str
    max_len: int
    mu: float  # length = floor(exp(mu + sigma * normal)), clipped to max_len
    sigma: float
    same: float  # chance a target is from the product's own cluster
    sibling: float  # chance it is from a sibling subcategory; else from anywhere
    squared: bool  # weight targets by popularity squared: the cluster's head only


RELATIONS = (
    _Relation("also_bought", 100, 1.5, 1.0, 0.85, 0.12, False),
    _Relation("also_viewed", 50, 0.9, 1.1, 0.6, 0.3, False),
    _Relation("bought_together", 3, -0.3, 0.8, 1.0, 0.0, True),
)
RELATION_NAMES = tuple(relation.name for relation in RELATIONS)


@dataclass(frozen=True)
class _Taxonomy:
    """Top categories and their subcategories; a subcategory is a taste cluster."""

    top: np.ndarray  # per cluster: index of its top category
    first: np.ndarray  # per cluster: first cluster of its top category
    siblings: np.ndarray  # per cluster: clusters in its top category
    sub_names: list[str]
    paths: list[list[str]]  # per cluster: [ROOT, top category, subcategory]
    words: np.ndarray  # (clusters, WORDS_PER_CLUSTER) indices into WORDS


@dataclass(frozen=True)
class _Universe:
    """Every product that exists: the catalog (first N) and the ghosts after it."""

    asins: np.ndarray  # object array of str
    cluster: np.ndarray
    weight: np.ndarray  # popularity
    taxonomy: _Taxonomy


@dataclass(frozen=True)
class _Catalog:
    """Per-product attributes of the N catalog products, drawn at once."""

    has_title: np.ndarray
    word: np.ndarray
    brand: np.ndarray
    brand_shown: np.ndarray
    model: np.ndarray  # object array of str like "HX-4821"
    flourish: np.ndarray
    price: np.ndarray  # NaN when absent
    rank: np.ndarray  # 0 when absent
    image: np.ndarray  # object array of image ids
    has_related: np.ndarray


class _Sampler:
    """Popularity-weighted draws, within one cluster or from the whole universe.

    Products are sorted by cluster, so each cluster owns one interval of the cumulative
    weight and a draw is a uniform number in it, located with ``searchsorted``.
    """

    def __init__(self, cluster: np.ndarray, weight: np.ndarray, n_clusters: int):
        self.order = np.argsort(cluster, kind="stable")
        cum = np.concatenate(([0.0], np.cumsum(weight[self.order])))
        starts = np.concatenate(([0], np.cumsum(np.bincount(cluster, minlength=n_clusters))))
        self.cum = cum[1:]
        self.lo = cum[starts[:-1]]
        self.hi = cum[starts[1:]]

    def draw(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        """One product index per entry of ``clusters``; an entry of -1 draws from all."""
        anywhere = clusters < 0
        lo = np.where(anywhere, 0.0, self.lo[clusters])
        hi = np.where(anywhere, self.cum[-1], self.hi[clusters])
        at = np.searchsorted(self.cum, lo + rng.random(len(clusters)) * (hi - lo), "right")
        return self.order[np.minimum(at, len(self.order) - 1)]


@dataclass(frozen=True, kw_only=True)
class SynthOptions(QuietOptions):
    """The arguments of ``python -m pipeline synth``: :func:`generate`'s."""

    out: str = argument("output file; gzipped when it ends in .gz")
    products: int = option(help="catalog size", parse=int, low=1)
    fmt: str = option(
        "py",
        "py: 2014 Python literals; json: the same as JSON; json2018: the 2018 schema",
        choices=FORMATS,
        flag="--format",
    )
    seed: int = seed_option()
    messy: bool = option(False, "plant the faults real dumps have")


def generate(
    out: str | Path,
    products: int,
    fmt: str = SynthOptions.fmt,
    seed: int = SynthOptions.seed,
    messy: bool = SynthOptions.messy,
    quiet: bool = SynthOptions.quiet,
) -> dict:
    """Write a synthetic catalog of ``products`` products to ``out``; return its stats.

    The same arguments give a byte-identical file (gzipped when ``out`` ends in ``.gz``).
    ``messy`` adds faulty lines without changing the clean products' draws. Stats:
    ``products`` (distinct valid catalog products), ``lines``, ``faults`` (count per
    kind, empty unless messy), ``bytes`` (uncompressed) and ``seconds``.
    """
    if products < 1:
        raise PipelineError("--products must be at least 1")
    seed = check_seed(seed)
    if fmt not in FORMATS:
        raise PipelineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    start = time.perf_counter()
    data_seed, fault_seed = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(data_seed)
    universe = _universe(rng, products)
    catalog = _catalog(rng, universe, products)
    samplers = _samplers(universe)
    faults = plan_faults(np.random.default_rng(fault_seed), products, fmt) if messy else Faults()
    render = RENDERERS[fmt]
    n_lines = n_bytes = 0
    with (
        atomic_output(out) as tmp,
        open_output(tmp, gz=str(out).endswith(".gz")) as f,
        progress(products, "products", "synth", quiet) as bar,
    ):
        for begin in range(0, products, CHUNK):
            end = min(begin + CHUNK, products)
            related = _related(rng, universe, samplers, catalog.has_related[begin:end], begin)
            chunk = _products(universe, catalog, related, begin, end)
            lines = list(catalog_lines(chunk, begin, faults, render, RELATION_NAMES))
            data = (b"\n" if begin else b"") + "\n".join(lines).encode("utf-8", "surrogateescape")
            f.write(data)
            n_lines += len(lines)
            n_bytes += len(data)
            bar.update(end - begin)
        if not messy:
            f.write(b"\n")
            n_bytes += 1
    lost = faults.counts.get("truncated", 0) + faults.counts.get("invalid_utf8", 0)
    return {
        "products": products - lost,
        "lines": n_lines,
        "faults": faults.counts,
        "bytes": n_bytes,
        "seconds": round(time.perf_counter() - start, 3),
    }


@contextlib.contextmanager
def open_output(path: Path, gz: bool) -> Iterator[BinaryIO]:
    """A binary file to write; gzip with no name or timestamp in the header, so runs match."""
    with open(path, "wb") as raw:
        if not gz:
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as f:
            yield f


def _taxonomy(rng: np.random.Generator, n_clusters: int) -> _Taxonomy:
    """Spread ``n_clusters`` subcategories over the top categories (about 3+ each)."""
    n_tops = min(len(TOPS), max(2, n_clusters // 3))
    per_top = np.full(n_tops, n_clusters // n_tops)
    per_top[: n_clusters % n_tops] += 1
    top = np.repeat(np.arange(n_tops), per_top)
    first = np.repeat(np.cumsum(per_top) - per_top, per_top)
    subs = [_sub_name(TOPS[t][1], j) for t, j in zip(top, np.arange(n_clusters) - first)]
    return _Taxonomy(
        top=top,
        first=first,
        siblings=np.repeat(per_top, per_top),
        sub_names=subs,
        paths=[[ROOT, TOPS[t][0], sub] for t, sub in zip(top, subs)],
        words=rng.integers(len(WORDS), size=(n_clusters, WORDS_PER_CLUSTER)),
    )


def _sub_name(nouns: tuple[str, ...], j: int) -> str:
    """The ``j``-th subcategory name of a top category: its nouns, then modifier + noun."""
    rounds = j // len(nouns)
    if not rounds:
        return nouns[j]
    modifier = MODIFIERS[(rounds - 1) % len(MODIFIERS)]
    series = (rounds - 1) // len(MODIFIERS)
    return f"{modifier} {nouns[j % len(nouns)]}" + (f" {series + 1}" if series else "")


def _universe(rng: np.random.Generator, n: int) -> _Universe:
    """Catalog and ghost products: ASIN, cluster (uneven sizes) and Pareto popularity."""
    size = n + round(GHOST_SHARE * n)
    taxonomy = _taxonomy(rng, max(MIN_CLUSTERS, n // PRODUCTS_PER_CLUSTER))
    share = rng.lognormal(0.0, 0.5, len(taxonomy.top))
    return _Universe(
        asins=_asins(rng, size),
        cluster=rng.choice(len(share), size=size, p=share / share.sum()),
        weight=rng.pareto(POPULARITY_TAIL, size) + 1.0,
        taxonomy=taxonomy,
    )


def _asins(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random ASINs: 'B0' + 8 base-36 digits, and 5% ISBN-like numbers."""
    n_isbn = n // 20
    store = _digits(rng.choice(36**8, n - n_isbn, replace=False), 36, 8)
    store = np.hstack([np.full((n - n_isbn, 2), [ord("B"), ord("0")], np.uint8), store])
    isbn = _digits(rng.choice(10**10, n_isbn, replace=False), 10, 10)
    return _strings(np.vstack([store, isbn])[rng.permutation(n)])


def _digits(values: np.ndarray, base: int, width: int) -> np.ndarray:
    """``values`` as a (len, width) array of ASCII digits '0-9A-Z' in ``base``."""
    alphabet = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", np.uint8)
    powers = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return alphabet[values[:, None] // powers % base]


def _strings(chars: np.ndarray) -> np.ndarray:
    """Rows of an ASCII uint8 matrix as an object array of str."""
    rows = np.ascontiguousarray(chars).view(f"S{chars.shape[1]}").ravel()
    return np.array(rows.astype(str).tolist(), dtype=object)


def _catalog(rng: np.random.Generator, universe: _Universe, n: int) -> _Catalog:
    """Draw titles' parts, price, brand, sales rank and image of the catalog products."""
    cluster = universe.cluster[:n]
    letters = rng.integers(ord("A"), ord("Z") + 1, size=(n, 2), dtype=np.uint8)
    numbers = rng.integers(100, 10_000, size=n)
    model = [f"{a}-{b}" for a, b in zip(_strings(letters), numbers.tolist())]
    image = np.frombuffer(
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8
    )[rng.integers(62, size=(n, 11))]
    price = np.maximum(np.round(rng.lognormal(3.0, 1.0, n), 2), 0.01)
    rank = _sales_ranks(rng, universe.taxonomy.top[cluster], universe.weight[:n])
    return _Catalog(
        has_title=rng.random(n) >= NO_TITLE,
        word=universe.taxonomy.words[cluster, rng.integers(WORDS_PER_CLUSTER, size=n)],
        brand=rng.integers(len(BRANDS), size=n),
        brand_shown=rng.random(n) < HAS_BRAND,
        model=np.array(model, dtype=object),
        flourish=rng.choice(len(FLOURISHES), size=n, p=[p for _, p in FLOURISHES]),
        price=np.where(rng.random(n) < HAS_PRICE, price, np.nan),
        rank=np.where(rng.random(n) < HAS_RANK, rank, 0),
        image=_strings(image),
        has_related=rng.random(n) >= NO_RELATED,
    )


def _sales_ranks(rng: np.random.Generator, top: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """1-based rank of each product within its top category by noisy popularity."""
    order = np.lexsort((-weight * rng.lognormal(0.0, 0.5, len(weight)), top))
    sorted_top = top[order]
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order)) - np.searchsorted(sorted_top, sorted_top) + 1
    return ranks


def _samplers(universe: _Universe) -> dict[bool, _Sampler]:
    """Target samplers by popularity (False) and by popularity squared (True)."""
    n_clusters = len(universe.taxonomy.top)
    return {
        squared: _Sampler(universe.cluster, universe.weight ** (2 if squared else 1), n_clusters)
        for squared in (False, True)
    }


def _related(
    rng: np.random.Generator,
    universe: _Universe,
    samplers: dict[bool, _Sampler],
    has_related: np.ndarray,
    begin: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Related lists of catalog products ``begin...``: name -> (offsets, target indices)."""
    owners = begin + np.arange(len(has_related))
    related = {}
    for rel in RELATIONS:
        lengths = np.exp(rel.mu + rel.sigma * rng.standard_normal(len(owners))).astype(np.int64)
        lengths = np.where(has_related, np.minimum(lengths, rel.max_len), 0)
        if rel.name == "also_bought":  # a product with related lists has some also_bought
            lengths = np.maximum(lengths, has_related)
        at, targets = _draw_targets(rng, universe, samplers[rel.squared], rel, owners, lengths)
        offsets = np.concatenate(([0], np.cumsum(np.bincount(at, minlength=len(owners)))))
        related[rel.name] = (offsets, targets)
    return related


def _draw_targets(
    rng: np.random.Generator,
    universe: _Universe,
    sampler: _Sampler,
    rel: _Relation,
    owners: np.ndarray,
    lengths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``lengths`` distinct targets per owner, as (owner position, target), in draw order.

    Draws half as many again (+2) as needed, then drops repeats and self-references, so
    lists of the cluster's head come out a little shorter, as saturated lists do.
    """
    tries = np.where(lengths > 0, lengths + lengths // 2 + 2, 0)
    at = np.repeat(np.arange(len(owners)), tries)
    own = universe.cluster[owners[at]]
    tax = universe.taxonomy
    sibling = tax.first[own] + (rng.random(len(at)) * tax.siblings[own]).astype(np.int64)
    source = rng.random(len(at))
    clusters = np.where(
        source < rel.same, own, np.where(source < rel.same + rel.sibling, sibling, -1)
    )
    targets = sampler.draw(rng, clusters)
    keep = np.zeros(len(at), bool)
    keep[np.unique(at * len(universe.cluster) + targets, return_index=True)[1]] = True
    keep &= targets != owners[at]
    at, targets = at[keep], targets[keep]
    place = np.arange(len(at)) - np.searchsorted(at, at)  # position within its list
    keep = place < lengths[at]
    return at[keep], targets[keep]


def _products(
    universe: _Universe,
    catalog: _Catalog,
    related: dict[str, tuple[np.ndarray, np.ndarray]],
    begin: int,
    end: int,
) -> list[Product]:
    """Assemble the catalog products ``begin:end`` from their drawn parts."""
    tax = universe.taxonomy
    part = slice(begin, end)
    lists = {name: (off.tolist(), universe.asins[t].tolist()) for name, (off, t) in related.items()}
    columns = zip(
        universe.asins[part].tolist(),
        catalog.has_title[part].tolist(),
        catalog.word[part].tolist(),
        catalog.brand[part].tolist(),
        catalog.brand_shown[part].tolist(),
        catalog.model[part].tolist(),
        catalog.flourish[part].tolist(),
        catalog.price[part].tolist(),
        catalog.image[part].tolist(),
        catalog.rank[part].tolist(),
        universe.cluster[part].tolist(),
    )
    products = []
    for i, (asin, titled, word, brand, shown, model, flourish, price, image, rank, c) in enumerate(
        columns
    ):
        name = BRANDS[brand]
        title = f"{name} {WORDS[word]} {tax.sub_names[c]} {model}{FLOURISHES[flourish][0]}"
        products.append(
            Product(
                asin=asin,
                title=title if titled else None,
                price=None if price != price else price,  # NaN: no price
                image=image,
                related={
                    n: ts[off[i] : off[i + 1]]
                    for n, (off, ts) in lists.items()
                    if off[i + 1] > off[i]
                },
                top=tax.paths[c][1],
                rank=rank or None,
                brand=name if shown else None,
                path=tax.paths[c],
            )
        )
    return products
