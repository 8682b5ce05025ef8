"""Stage 2: products.parquet to weighted, unordered product pairs and their vocabulary.

Writes ``vocab.parquet`` (id, asin, degree, title), ``pairs.parquet`` (src < dst
vocab ids, summed weight, relation bitmask; sorted by src, dst) and
``pairs.json`` (counts per filter, rows per relation, histograms, timings).

Every step over rows runs in polars' streaming engine, the row-level ones
as pair_rows.py's Arrow functions (which Spark runs too); the phases hand
over through temporary Parquet files in a hidden folder of the dataset
directory:

1. ``count``: one pass over the products: the filter of each product and the
   exploded rows per relation, from list lengths (nothing is exploded yet).
2. ``dictionary``: the distinct asins of kept products and of their lists,
   sorted, become a polars Enum, so an asin's physical code is its rank.
3. ``group``: the lists are exploded to (asin, other, relation code) rows by
   pair_rows.related_rows (the explode), both asins cast to
   their Enum code, self-pairs dropped, and the rows grouped on one uint64
   key ``lo << 32 | hi``; strings are never grouped or joined.
4. ``vocab``: degrees of the codes, ids by descending degree (ties by asin),
   titles joined from the catalog.
5. ``pairs``: codes remapped to ids, weights and bitmasks decoded
   (pair_rows.decoded_pairs), sorted.

A pair gets at most two rows of one relation (one from each side, as lists are
deduplicated and asins are distinct), so the group-by sums a 2-bit count per
relation in one integer, ``code``; weights are computed from those counts in a
fixed order, which keeps the float32 weights identical from run to run.
Memory does not grow with the exploded rows, only with the distinct asins (the
Enum, about 100 bytes each) and the distinct pairs (the group-by's hash table,
then the final sort): measured peaks are 0.8 GiB at 6.5M pairs, 2.2 GiB at 26M
and 2.6 GiB at 44M (tests/bench/bench_pairs.py, 2 cores).

Over 400 lines, as one job: the stage and its polars plans, which the tests
read and replace here (classified, grouped_pairs, remapped, _stats); the
row-level steps both engines run are pair_rows.py's.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cli import relation_weights
from pipeline.contracts import (
    PAIRS,
    PAIRS_SCHEMA,
    PAIRS_STATS,
    PRODUCTS,
    PRODUCTS_SCHEMA,
    RELATIONS,
    VOCAB,
    VOCAB_SCHEMA,
    lineage_id,
    made_by,
    require,
    stamped,
    stamps,
)
from pipeline.errors import PipelineError
from pipeline.memory import peak_rss_mb
from pipeline.options import EngineOptions, argument, option
from pipeline.pair_rows import (
    EXPLODED_SCHEMA,
    FILTERS,
    classified_rows,
    classified_schema,
    counts_schema,
    decoded_pairs,
    pair_counts,
    pair_weights,
    related_rows,
    relation_counts,
)
from pipeline.progress import progress
from pipeline.spark import check_engine, session
from pipeline.stage import StageRun

DEFAULT_WEIGHTS = {"bought_together": 1.2, "also_bought": 1.0, "also_viewed": 0.5}
ROW_GROUP_ROWS = 1 << 20  # rows per row group of pairs.parquet and vocab.parquet
PHASES = ("count", "dictionary", "group", "vocab", "pairs")
SPARK_PHASES = ("count", "group", "vocab", "pairs")  # Spark groups asins: no dictionary

_HIGH = 1 << 32  # pair key = lo * _HIGH + hi
_ENGINE = "streaming"


@dataclass(frozen=True, kw_only=True)
class PairsOptions(EngineOptions):
    """The arguments of ``python -m pipeline pairs``: :func:`build_pairs`'s."""

    data_dir: str = argument("dataset directory holding products.parquet", metavar="dir")
    weights: Mapping[str, float] = option(
        help="relation=weight,...", factory=DEFAULT_WEIGHTS.copy, parse=relation_weights
    )
    min_also_bought: int = option(2, "skip products with fewer distinct also_bought entries", low=0)
    require_title: bool = option(True, "skip products without a title")


@dataclass(frozen=True)
class PairsRun:
    """What an engine's runner of pairs takes: the checked options, the products,
    the lineage to stamp, the temporary outputs and work folder, and ``phase(name)``,
    which times each phase."""

    products: Path
    weights: dict[str, float]
    min_also_bought: int
    require_title: bool
    lineage: dict[str, str]
    vocab_path: Path
    pairs_path: Path
    work: Path
    phase: Callable[[str], AbstractContextManager]
    row_group_rows: int


def build_pairs(
    data_dir: str | os.PathLike,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    min_also_bought: int = PairsOptions.min_also_bought,
    require_title: bool = PairsOptions.require_title,
    quiet: bool = PairsOptions.quiet,
    engine: str = PairsOptions.engine,
    spark_master: str | None = PairsOptions.spark_master,
) -> dict:
    """Turn ``data_dir/products.parquet`` into vocab, pairs and stats; return the stats.

    ``weights`` maps a relation of contracts.RELATIONS to its weight; lists of
    relations it leaves out are ignored. Products are skipped without a title
    (when ``require_title``), with fewer than ``min_also_bought`` distinct
    also_bought entries, or without any entry in a weighted list; when none
    is left, or no pair, a PipelineError says which filters skipped them.
    ``engine`` "spark" runs on Spark at ``spark_master`` (pairs_spark.py):
    the same files and counts.
    """
    data_dir = Path(data_dir)
    weights = check_weights(weights)
    check_engine(engine)
    if min_also_bought < 0:
        raise PipelineError(f"--min-also-bought must be >= 0, got {min_also_bought}")
    products = data_dir / PRODUCTS
    products_id = stamps(require(products, PRODUCTS_SCHEMA)).get("products_id", "")
    pairs_id = lineage_id("pairs", products_id, weights, min_also_bought, require_title)
    lineage = {"pairs_id": pairs_id, "products_id": products_id}
    phase_seconds: dict[str, float] = {}
    phase_peak: dict[str, float] = {}  # peak RSS so far at the end of each phase
    phases = SPARK_PHASES if engine == "spark" else PHASES
    # Renames run last taken first: pairs, vocab, then pairs.json, the mark of a whole run.
    with (
        StageRun(data_dir, PAIRS_STATS) as run,
        progress(len(phases), "phase", "pairs", quiet) as bar,
    ):
        bar.unit_scale = False  # whole phases, not 1.00/5.00

        @contextlib.contextmanager
        def phase(name: str) -> Iterator[None]:
            bar.set_description(f"pairs: {name}")
            begun = time.perf_counter()
            yield
            phase_seconds[name] = round(time.perf_counter() - begun, 2)
            phase_peak[name] = peak_rss_mb()
            bar.update(1)

        job = PairsRun(
            products=products,
            weights=weights,
            min_also_bought=min_also_bought,
            require_title=require_title,
            lineage=lineage,
            work=run.work("pairs-work"),
            vocab_path=run.output(VOCAB),
            pairs_path=run.output(PAIRS),
            phase=phase,
            row_group_rows=ROW_GROUP_ROWS,
        )
        if engine == "spark":
            from pipeline.pairs_spark import pairs_on_spark

            with session(spark_master, quiet) as spark:
                counts, code_counts, summary = pairs_on_spark(spark, job)
        else:
            counts, code_counts, summary = _pairs_on_polars(job)
        bar.set_description("pairs")
        seconds = run.seconds
        stats = _stats(counts, code_counts, summary, weights)
        if not stats["pairs"]:  # split and train would only fail later, less clearly
            raise PipelineError(no_pairs(products, stats, min_also_bought))
        stats.update(
            {
                "engine": engine,
                "min_also_bought": min_also_bought,
                "require_title": require_title,
                **lineage,
                "phase_seconds": phase_seconds,
                "phase_peak_rss_mb": phase_peak,
                "seconds": round(seconds, 2),
                "exploded_rows_per_s": round(
                    stats["exploded_rows_after_list_dedup"] / max(seconds, 1e-9)
                ),
            }
        )
        run.finish(stats)
    return run.stats


def no_pairs(products: Path, stats: dict, min_also_bought: int) -> str:
    """Why no pair is left: the products each filter skipped and the option that
    relaxes it, or kept products whose lists name only themselves."""
    read, kept = stats["products_read"], stats["kept"]
    if not read:
        return f"{products}: no pairs: it holds no product"
    if kept:
        return f"{products}: no pairs: the {kept} products kept list only themselves"
    filters = {
        "no_title": "without a title (--no-require-title keeps them)",
        "few_also_bought": f"with fewer than {min_also_bought} also_bought entries "
        "(--min-also-bought)",
        "no_relation": "with no entry in a weighted list (--weights)",
    }
    skipped = [(stats[f"skipped_{name}"], filters[name]) for name in FILTERS]
    why = ", ".join(f"{n} {text}" for n, text in skipped if n)
    return f"{products}: no pairs: none of its {read} products passes the filters: {why}"


def _pairs_on_polars(run: PairsRun) -> tuple[dict, pl.DataFrame, dict]:
    """Write vocab and pairs with polars; return (counts, pairs per ``code``,
    vocabulary summary), the inputs of _stats."""
    weights, phase = run.weights, run.phase
    grouped = run.work / "grouped.parquet"
    catalog = classified(run.products, weights, run.min_also_bought, run.require_title)
    kept = catalog.filter(pl.col("status") == "kept")
    with phase("count"):
        counts = _counts(catalog, weights)
    with phase("dictionary"):
        asins = distinct_asins(kept, weights).collect(engine=_ENGINE).get_column("asin").sort()
    with phase("group"):
        grouped_pairs(kept, weights, pl.Enum(asins)).sink_parquet(grouped, engine=_ENGINE)
    with phase("vocab"):
        vocab = vocabulary(grouped, asins, run.products)
        table = vocab.select(VOCAB_SCHEMA.names).to_arrow()
        pq.write_table(
            table.cast(stamped(VOCAB_SCHEMA, "pairs", **run.lineage)),
            run.vocab_path,
            row_group_size=run.row_group_rows,
            compression="zstd",
        )
    with phase("pairs"):
        code_counts = (
            pl.scan_parquet(grouped).group_by("code").agg(pairs=pl.len()).collect(engine=_ENGINE)
        )
        remapped(grouped, vocab, weights).sink_parquet(
            run.pairs_path,
            arrow_schema=stamped(PAIRS_SCHEMA, "pairs", **run.lineage),
            row_group_size=run.row_group_rows,
            compression="zstd",
            engine=_ENGINE,
        )
    summary = {
        "vocabulary": vocab.height,
        "out_of_catalog": int((~vocab.get_column("in_catalog")).sum()),
        "without_title": int(vocab.get_column("title").null_count()),
        "degrees": int(vocab.get_column("degree").sum() or 0),
    }
    return counts, code_counts, summary


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` in RELATIONS order, or a PipelineError naming the bad entry."""
    unknown = [name for name in weights if name not in RELATIONS]
    if unknown:
        raise PipelineError(
            f"unknown relation {unknown[0]!r} in weights; expected some of {', '.join(RELATIONS)}"
        )
    checked = {}
    for name in RELATIONS:
        if name not in weights:
            continue
        try:
            value = float(weights[name])
        except (TypeError, ValueError):
            raise PipelineError(f"weight of {name} is {weights[name]!r}, not a number") from None
        if not math.isfinite(value) or value < 0:
            raise PipelineError(f"weight of {name} must be a finite number >= 0, got {value}")
        checked[name] = value
    if not checked:
        raise PipelineError(
            f"weights give no relation a weight; name some of {', '.join(RELATIONS)}"
        )
    return checked


def classified(
    products: Path, weights: Mapping[str, float], min_also_bought: int, require_title: bool
) -> pl.LazyFrame:
    """pair_rows.classified_rows of the products, batch by batch in the streaming engine:
    each product's asin, cleaned weighted lists and ``status``."""
    columns = ["asin", "title", *dict.fromkeys(["also_bought", *weights])]
    return (
        pl.scan_parquet(products)
        .select(columns)
        .map_batches(
            lambda batch: pl.from_arrow(
                classified_rows(batch.to_arrow(), weights, min_also_bought, require_title)
            ),
            schema=_polars_schema(classified_schema(weights)),
            streamable=True,
        )
    )


def _polars_schema(schema: pa.Schema) -> pl.Schema:
    """``schema`` in polars' types, for a map_batches' declared output."""
    return pl.from_arrow(schema.empty_table()).schema


def distinct_asins(kept: pl.LazyFrame, weights: Mapping[str, float]) -> pl.LazyFrame:
    """The distinct asins of kept products and of their weighted lists, unordered."""
    listed = [kept.select(pl.col(name).alias("asin")).explode("asin") for name in weights]
    return pl.concat([kept.select("asin"), *listed]).drop_nulls().unique()


def exploded(kept: pl.LazyFrame, weights: Mapping[str, float]) -> pl.LazyFrame:
    """pair_rows.related_rows of the kept products, batch by batch in the streaming engine."""
    return kept.select("asin", *weights).map_batches(
        lambda batch: pl.from_arrow(related_rows(batch.to_arrow(), weights)),
        schema=_polars_schema(EXPLODED_SCHEMA),
        streamable=True,
    )


def grouped_pairs(kept: pl.LazyFrame, weights: Mapping[str, float], asins: pl.Enum) -> pl.LazyFrame:
    """Distinct unordered pairs of dictionary codes: ``key`` = lo << 32 | hi, ``code`` sums.

    ``code`` holds, per relation, the number of rows (0, 1 or 2) linking the pair.
    """
    rows = exploded(kept, weights).select(
        a=pl.col("asin").cast(asins).to_physical().cast(pl.UInt64),
        b=pl.col("other").cast(asins).to_physical().cast(pl.UInt64),
        code="code",
    )
    key = pl.min_horizontal("a", "b") * _HIGH + pl.max_horizontal("a", "b")
    return (
        rows.filter(pl.col("a") != pl.col("b"))
        .group_by(key=key)
        .agg(code=pl.col("code").sum().cast(pl.UInt8))
    )


def _ends(grouped: Path) -> pl.LazyFrame:
    """The two dictionary codes of each grouped pair, as ``lo``, ``hi`` (uint32)."""
    return pl.scan_parquet(grouped).with_columns(
        lo=(pl.col("key") // _HIGH).cast(pl.UInt32), hi=(pl.col("key") % _HIGH).cast(pl.UInt32)
    )


def pair_degrees(grouped: Path) -> pl.LazyFrame:
    """The number of pairs each dictionary ``code`` is in, for codes in at least one."""
    ends = _ends(grouped)
    return (
        pl.concat([ends.select(code="lo"), ends.select(code="hi")])
        .group_by("code")
        .agg(degree=pl.len().cast(pl.Int32))
    )


def vocabulary(grouped: Path, asins: pl.Series, products: Path) -> pl.DataFrame:
    """Vocab rows in id order, plus ``code`` (the dictionary code) and ``in_catalog``.

    Ids go by descending degree, ties by asin, which is ascending code.
    """
    degrees = (
        pair_degrees(grouped)
        .collect(engine=_ENGINE)
        .sort(["degree", "code"], descending=[True, False])
        .with_row_index("id")
    )
    degrees = degrees.with_columns(
        pl.col("id").cast(pl.Int32), asin=asins.gather(degrees.get_column("code"))
    )
    catalog = pl.scan_parquet(products).select(
        "asin",
        title=pl.when(pl.col("title").str.strip_chars() != "").then("title"),
        in_catalog=pl.lit(True),
    )
    vocab = (
        degrees.lazy()
        .join(catalog, on="asin", how="left")
        .collect(engine=_ENGINE)
        .sort("id")
        .select("id", "asin", "degree", "title", "code", pl.col("in_catalog").fill_null(False))
    )
    if vocab.height != degrees.height:
        raise PipelineError(f"{products}: asins are not distinct; rerun `{made_by(products)}`")
    return vocab


def remapped(grouped: Path, vocab: pl.DataFrame, weights: Mapping[str, float]) -> pl.LazyFrame:
    """The rows of pairs.parquet: codes to vocab ids, then pair_rows.decoded_pairs
    (weight and bitmask); sorted by src, dst."""
    ids = vocab.lazy().select("code", "id")
    return (
        _ends(grouped)
        .join(ids.rename({"code": "lo", "id": "a"}), on="lo")
        .join(ids.rename({"code": "hi", "id": "b"}), on="hi")
        .select(src=pl.min_horizontal("a", "b"), dst=pl.max_horizontal("a", "b"), code="code")
        .map_batches(
            lambda batch: pl.from_arrow(decoded_pairs(batch.to_arrow(), weights)),
            schema=_polars_schema(PAIRS_SCHEMA),
            streamable=True,
        )
        .sort(pl.col("src").cast(pl.UInt64) * _HIGH + pl.col("dst").cast(pl.UInt64))
    )


def _counts(catalog: pl.LazyFrame, weights: Mapping[str, float]) -> dict:
    """pair_rows.pair_counts of the classified products, summed over their batches."""
    names = counts_schema(weights).names
    row = (
        catalog.map_batches(
            lambda batch: pl.DataFrame([pair_counts(batch.to_arrow(), weights)]),
            schema=dict.fromkeys(names, pl.Int64),
            streamable=True,
        )
        .sum()
        .collect(engine=_ENGINE)
        .row(0, named=True)
    )
    return {key: int(value or 0) for key, value in row.items()}


def _stats(counts: dict, code_counts: pl.DataFrame, vocab: dict, weights: dict) -> dict:
    """pairs.json, checking that rows, pairs and degrees add up.

    ``vocab``: the vocabulary's size, its products out of the catalog and
    without a title, and its degrees' sum.
    """
    rows = {name: counts[f"rows_{name}"] for name in weights}
    selfs = {name: counts[f"self_{name}"] for name in weights}
    by_weight: dict[float, int] = {}
    by_relations: dict[str, int] = {}
    code, count = (code_counts.get_column(name).to_numpy() for name in ("code", "pairs"))
    per = relation_counts(code, weights)
    # rows that are not self-pairs, counted back from the codes
    linked_rows = int((count * sum(per.values(), np.zeros(len(code), np.int64))).sum())
    for at, (weight, n) in enumerate(zip(pair_weights(code, weights).tolist(), count.tolist())):
        names = "+".join(name for name in weights if per[name][at])  # a few distinct codes
        by_weight[round(weight, 6)] = by_weight.get(round(weight, 6), 0) + n
        by_relations[names] = by_relations.get(names, 0) + n
    pairs = int(code_counts.get_column("pairs").sum() or 0)
    total_rows, total_selfs = sum(rows.values()), sum(selfs.values())
    degrees = vocab["degrees"]
    if linked_rows != total_rows - total_selfs or degrees != 2 * pairs:
        raise RuntimeError(
            f"pair accounting is off: rows {total_rows} - self {total_selfs} != {linked_rows}"
            f" or degrees {degrees} != 2 * {pairs}"
        )
    return {
        "products_read": counts["products_read"],
        **{f"skipped_{name}": counts[name] for name in FILTERS},
        "kept": counts["kept"],
        "exploded_rows_after_list_dedup": total_rows,
        "exploded_rows_after_list_dedup_by_relation": rows,
        "self_pair_rows_dropped": total_selfs,
        "self_pair_rows_dropped_by_relation": selfs,
        "pairs": pairs,
        "vocabulary": vocab["vocabulary"],
        "vocabulary_out_of_catalog": vocab["out_of_catalog"],
        "vocabulary_without_title": vocab["without_title"],
        "weight_histogram": {str(w): by_weight[w] for w in sorted(by_weight)},
        "pairs_by_relations": dict(sorted(by_relations.items())),
        "weights": weights,
    }
