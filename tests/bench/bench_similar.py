"""Benchmark `similar`: lookups on a trained run's whole vocabulary.

    python tests/bench/bench_similar.py --products 2000000

Uses (or trains, one epoch) the mf_bias-binary dim-32 run of bench_train's
dataset. Prints one JSON line: the command's wall time for one ASIN (a fresh
interpreter: imports, model and vocabulary loading), and in one process the
index load, one lookup and a batch of 1,000 lookups.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from bench_train import catalog_parser, dataset, train
from common import ROOT

sys.path.insert(0, str(ROOT))

from recsys_stream.similar import Index, similar

VARIANT, DIM = "mf_bias-binary", 32


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return round(time.perf_counter() - started, 3)


def main() -> None:
    parser = catalog_parser(__doc__, 2_000_000)
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    run = data / "runs" / f"bench-{VARIANT}-{DIM}-1"
    if not (run / "model.pt").exists():
        train(data, VARIANT, DIM, 1)
    asins = pq.read_table(data / "vocab.parquet", columns=["asin"]).column("asin")
    picks = np.random.default_rng(0).choice(len(asins), 1000, replace=False)
    queries = asins.take(picks).to_pylist()
    command = [sys.executable, "-m", "recsys_stream", "similar", str(run), queries[0], "-k", "10"]
    cli = [timed(subprocess.run, command, check=True, capture_output=True) for _ in range(3)]
    index = Index(run)
    print(
        json.dumps(
            {
                "bench": "similar",
                "products": args.products,
                "vocab": len(asins),
                "cli_seconds": statistics.median(cli),
                "load_seconds": timed(Index, run),
                "one_lookup_seconds": timed(index.nearest, index.ids(queries[:1]), 10, False),
                "similar_call_seconds": timed(similar, run, queries[:1], 10),
                "batch_1000_seconds": timed(similar, run, queries, 10),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
