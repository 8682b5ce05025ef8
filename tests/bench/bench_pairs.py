"""Benchmark stage 2 (pairs) on a synthetic products.parquet of a given size.

    python tests/bench/bench_pairs.py --products 500000
    python tests/bench/bench_pairs.py --products 2000000 --keep /tmp/books

Builds ``products.parquet`` with ``pipeline.synth`` then ``pipeline.parse``
(``--source synth``, the default when synth is there), or directly with numpy
(``--source numpy``: power-law popularity, 30% of listed asins outside the
catalog, some duplicates and self-references in lists, 5% without title); with
``--keep DIR`` an existing DIR/products.parquet is reused. Then runs
``build_pairs`` in a subprocess, so its peak RSS is its own, and prints one
JSON line: seconds, exploded rows/s, peak RSS (MiB), sizes. Targets: < 30 s at
500k products; < 3 min and < 4 GB peak RSS at 2M products (Books scale).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from common import ROOT, run_stage

sys.path.insert(0, str(ROOT))

from pipeline.contracts import PRODUCTS, PRODUCTS_SCHEMA, stamped

EXPONENT = 0.8  # listed asin probability ~ rank^-EXPONENT: a few hubs, a long tail
OUTSIDE = 0.3  # universe size beyond the catalog, as a share of it
# relation -> (length scale, maximum length, share of products without the list); at
# 2M products this gives about 26M exploded rows and 26M distinct pairs (Books: 26.6M).
LISTS = {
    "bought_together": (1, 3, 0.6),
    "also_bought": (16, 100, 0.2),
    "also_viewed": (12, 40, 0.3),
    "buy_after_viewing": (2, 4, 0.5),
}


def _asin_strings(ids: np.ndarray) -> pa.Array:
    """``B`` and 9 digits per id."""
    digits = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 9, "0")
    return pc.binary_join_element_wise("B", digits, "")


def _lists(rng, n: int, scale: float, cap: int, missing: float, universe, cdf) -> pa.Array:
    """``n`` lists of popularity-drawn asins, Pareto lengths; ``missing`` share null."""
    lengths = np.minimum(np.floor(rng.pareto(1.5, n) * scale / 2).astype(np.int64) + 1, cap)
    lengths[rng.random(n) < missing] = 0
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    drawn = np.searchsorted(cdf, rng.random(int(offsets[-1])))
    values = universe.take(pa.array(drawn))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(lengths == 0))


def numpy_products(path: Path, n: int, seed: int, scale: float = 1.0) -> None:
    """Write a products.parquet of ``n`` products with power-law relation lists.

    ``scale`` multiplies the list lengths (before the maximum).
    """
    rng = np.random.default_rng(seed)
    universe = _asin_strings(rng.permutation(int(n * (1 + OUTSIDE))))
    popularity = np.arange(1, len(universe) + 1, dtype=np.float64) ** -EXPONENT
    cdf = np.cumsum(rng.permutation(popularity))
    cdf /= cdf[-1]
    columns = {f.name: pa.nulls(n, f.type) for f in PRODUCTS_SCHEMA}
    columns["line"] = pa.array(np.arange(1, n + 1))
    columns["asin"] = universe.slice(0, n)
    titles = pc.binary_join_element_wise("title ", pc.cast(pa.array(np.arange(n)), pa.string()), "")
    no_title = pa.array(rng.random(n) < 0.05)
    columns["title"] = pc.if_else(no_title, pa.scalar(None, pa.string()), titles)
    for name, (length, cap, missing) in LISTS.items():
        columns[name] = _lists(rng, n, length * scale, cap, missing, universe, cdf)
    table = pa.table(columns, schema=stamped(PRODUCTS_SCHEMA, "parse"))
    pq.write_table(table, path, row_group_size=32_768, compression="zstd")


def synth_products(out: Path, n: int, seed: int) -> None:
    """products.parquet in ``out`` via the synthetic catalog and stage 1."""
    from pipeline import parse, synth

    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "meta.json"
        synth.generate(raw, n, fmt="py", seed=seed, quiet=True)
        parse.parse(raw, out, quiet=True)


def main() -> None:
    has_synth = importlib.util.find_spec("pipeline.synth") is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic catalog")
    parser.add_argument(
        "--source", choices=("synth", "numpy"), default="synth" if has_synth else "numpy"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="list lengths (numpy only)")
    parser.add_argument("--keep", help="build the input (and outputs) here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(args.keep or scratch)
        data_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        source = args.source if not (data_dir / PRODUCTS).exists() else "reused"
        if source != "reused":
            if args.source == "synth":
                synth_products(data_dir, args.products, args.seed)
            else:
                numpy_products(data_dir / PRODUCTS, args.products, args.seed, args.scale)
        build_seconds = time.perf_counter() - started
        stats = run_stage("pipeline.pairs", "build_pairs", data_dir)
    print(
        json.dumps(
            {
                "products": stats["products_read"],
                "source": source,
                "kept": stats["kept"],
                "exploded_rows": stats["exploded_rows_after_list_dedup"],
                "pairs": stats["pairs"],
                "vocabulary": stats["vocabulary"],
                "seconds": stats["seconds"],
                "wall_seconds": stats["wall_seconds"],
                "exploded_rows_per_s": stats["exploded_rows_per_s"],
                "peak_rss_mb": stats["peak_rss_mb"],
                "phase_seconds": stats["phase_seconds"],
                "phase_peak_rss_mb": stats["phase_peak_rss_mb"],
                "input_build_seconds": round(build_seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
