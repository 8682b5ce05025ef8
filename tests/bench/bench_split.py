"""Benchmark stage 3 (split) on a synthetic pairs.parquet + vocab.parquet of a given size.

    python tests/bench/bench_split.py --pairs 4000000 --products 450000
    python tests/bench/bench_split.py --pairs 26600000 --products 2000000 --keep /tmp/books

Builds the inputs with numpy (power-law product degrees; distinct, sorted
(src < dst) pairs) in a temporary directory, runs ``split`` in a subprocess,
and prints one JSON line: seconds, pairs/s, peak RSS (MiB). The inputs are
built in a subprocess too: Linux carries a parent's peak RSS over into a
forked child's ru_maxrss, so a big parent would inflate the figure.
Targets: < 20 s at 4M pairs / 450k products; < 3 GB at 26.6M / 2M.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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

from pipeline.contracts import PAIRS, PAIRS_SCHEMA, VOCAB, VOCAB_SCHEMA, stamped

EXPONENT = 0.8  # endpoint probability ~ rank^-EXPONENT: a few hubs, a long tail


def synthetic_pairs(n_pairs: int, n_products: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` distinct (src < dst) pairs sorted by (src, dst), power-law degrees."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, n_products + 1, dtype=np.float64) ** -EXPONENT
    cdf = np.cumsum(rng.permutation(weights))  # hubs at random ids
    cdf /= cdf[-1]
    found = np.empty(0, dtype=np.int64)
    while len(found) < n_pairs:
        draw = int((n_pairs - len(found)) * 1.2) + 1000
        a = np.searchsorted(cdf, rng.random(draw)).clip(max=n_products - 1)
        b = np.searchsorted(cdf, rng.random(draw)).clip(max=n_products - 1)
        low, high = np.minimum(a, b), np.maximum(a, b)
        keys = low[low != high] * n_products + high[low != high]
        found = np.union1d(found, keys)
    keep = np.sort(rng.choice(len(found), n_pairs, replace=False))
    found = found[keep]
    return (found // n_products).astype(np.int32), (found % n_products).astype(np.int32)


def write_inputs(out: Path, n_pairs: int, n_products: int, seed: int) -> None:
    """pairs.parquet and vocab.parquet as stage 2 writes them."""
    src, dst = synthetic_pairs(n_pairs, n_products, seed)
    rng = np.random.default_rng(seed + 1)
    relations = rng.integers(1, 16, n_pairs, dtype=np.uint8)
    weight = (relations & 1) * 1.0 + ((relations >> 1) & 1) * 0.5 + 0.25
    pairs_schema = stamped(PAIRS_SCHEMA, "pairs", pairs_id="bench")
    table = pa.table([src, dst, weight.astype(np.float32), relations], schema=pairs_schema)
    pq.write_table(table, out / PAIRS, row_group_size=1 << 20, compression="zstd")
    ids = pa.array(np.arange(n_products, dtype=np.int32))
    asin = pc.binary_join_element_wise("B", pc.utf8_lpad(pc.cast(ids, pa.string()), 9, "0"), "")
    degree = np.bincount(src, minlength=n_products) + np.bincount(dst, minlength=n_products)
    title = pa.nulls(n_products, pa.string())
    vocab_schema = stamped(VOCAB_SCHEMA, "pairs", pairs_id="bench")
    vocab = pa.table([ids, asin, degree.astype(np.int32), title], schema=vocab_schema)
    pq.write_table(vocab, out / VOCAB, compression="zstd")


def build_inputs(data_dir: Path, n_pairs: int, n_products: int, seed: int) -> float:
    """write_inputs in a fresh interpreter (this one stays small); its seconds."""
    started = time.perf_counter()
    command = [sys.executable, __file__, "--pairs", str(n_pairs), "--products", str(n_products)]
    command += ["--seed", str(seed), "--build-only", str(data_dir)]
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, required=True)
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument("--keep", help="build the inputs (and outputs) here and keep them")
    parser.add_argument("--build-only", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        write_inputs(Path(args.build_only), args.pairs, args.products, args.seed)
        return
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(args.keep or scratch)
        data_dir.mkdir(parents=True, exist_ok=True)
        build_seconds = build_inputs(data_dir, args.pairs, args.products, args.seed)
        stats = run_stage("pipeline.split", "split", data_dir)
    print(
        json.dumps(
            {
                "pairs": args.pairs,
                "products": args.products,
                "val_products": stats["val_products"],
                "seconds": stats["seconds"],
                "wall_seconds": stats["wall_seconds"],
                "pairs_per_s": stats["pairs_per_s"],
                "peak_rss_mb": stats["peak_rss_mb"],
                "rounds": stats["rounds"],
                "rejected": stats["rejected"],
                "input_build_seconds": round(build_seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
