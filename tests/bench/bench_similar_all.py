"""Benchmark the batch tables: `similar --all` exact and approximate, beside faiss and implicit.

    python tests/bench/bench_similar_all.py [--products 2000000] [--sample 0]
        [--parts exact,tiles,ivf,hnsw,faiss,implicit,lookup]

On the mf_bias-binary dim-32 run of bench_train's catalog (bench_similar's;
trained here, one epoch, when missing). Each part runs in a process of its
own, so its peak RSS is its own, and prints one JSON line:

- ``exact``: :func:`similar_all` with ``--method exact``, every product of
  the vocabulary (or, with ``--sample N``, N products picked at random, and
  the whole table's time projected from them: the work is the same for
  every query);
- ``tiles``: ``--method tiles`` at its default share, every product, with
  recall@10 on 1,000 queries;
- ``ivf``, ``hnsw``: ``--method ann`` with that index: build (removed first,
  so it is timed) and the whole table, recall@10 on 1,000 queries;
- ``faiss``: faiss's own exact search (IndexFlatIP over the same vectors
  with the bias as a column), on the sample's queries, at one and two
  threads;
- ``implicit``: implicit's batch ``similar_items`` (cosine over the same
  vectors), on the sample's queries, with OpenBLAS's threads off as implicit
  asks;
- ``lookup``: one ASIN's ``similar`` from the saved IVF index, after load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from bench_train import dataset, train
from common import ROOT

sys.path.insert(0, str(ROOT))

VARIANT, DIM, K = "mf_bias-binary", 32, 10
PARTS = ("exact", "tiles", "ivf", "hnsw", "faiss", "implicit", "lookup")


def run_of(products: int) -> Path:
    data = dataset(products, ROOT / "data" / "bench")
    run = data / "runs" / f"bench-{VARIANT}-{DIM}-1"
    if not (run / "model.pt").exists():
        train(data, VARIANT, DIM, 1)
    return run


def sample_asins(run: Path, sample: int) -> list[str] | None:
    if not sample:
        return None
    asins = pq.read_table(run.parents[1] / "vocab.parquet", columns=["asin"]).column("asin")
    picks = np.sort(np.random.default_rng(0).choice(len(asins), sample, replace=False))
    return asins.take(picks).to_pylist()


def part(name: str, run: Path, sample: int, out: Path) -> dict:
    from pipeline.memory import peak_rss_mb
    from recsys_stream.neighbours.table import similar_all

    asins = sample_asins(run, sample)
    row = {"bench": "similar-all", "part": name, "vocab": None}
    if name == "exact":
        stats = similar_all(run, K, out, "exact", asins=asins, quiet=True)
        row |= {"queries": stats["queries"], "seconds": stats["seconds"]}
    elif name == "tiles":
        stats = similar_all(run, K, out, "tiles", quiet=True)
        row |= {
            "queries": stats["queries"],
            "seconds": stats["seconds"],
            "recall_at_10": stats["recall_at_k"],
            "tile_share": stats["tile_share"],
        }
    elif name in ("ivf", "hnsw"):
        shutil.rmtree(run / "neighbours", ignore_errors=True)
        stats = similar_all(run, K, out, "ann", index=name, quiet=True)
        row |= {
            "queries": stats["queries"],
            "seconds": stats["seconds"],
            "recall_at_10": stats["recall_at_k"],
        }
    elif name == "lookup":
        row |= lookup(run)
    else:
        row |= anchor(name, run, asins)
    from recsys_stream.similar import Index

    row["vocab"] = len(Index(run).asins)
    if row.get("queries") and row["queries"] < row["vocab"]:
        row["projected_seconds"] = round(row["seconds"] * row["vocab"] / row["queries"], 1)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row


def anchor(name: str, run: Path, asins: list[str] | None) -> dict:
    """faiss's or implicit's exact search over the run's vectors, for the same queries."""
    from recsys_stream.neighbours.exact import augmented
    from recsys_stream.similar import Index

    index = Index(run)
    ids = np.arange(len(index.asins)) if asins is None else index.ids(asins)
    queries, candidates = augmented(index.queries, index.candidates, index.bias)
    queries, candidates = queries[ids].numpy(), candidates.numpy()
    if name == "faiss":
        import faiss

        flat = faiss.IndexFlatIP(candidates.shape[1])
        flat.add(candidates)
        row = {"queries": len(ids)}
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            started = time.perf_counter()
            flat.search(queries, K + 1)
            row[f"seconds_{threads}_threads"] = round(time.perf_counter() - started, 2)
        row["seconds"] = min(row["seconds_1_threads"], row["seconds_2_threads"])
        return row
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=candidates.shape[1], num_threads=2)
    model.item_factors = candidates
    model.user_factors = np.zeros((1, candidates.shape[1]), np.float32)
    started = time.perf_counter()
    model.similar_items(ids, N=K + 1)
    return {"queries": len(ids), "seconds": round(time.perf_counter() - started, 2)}


def lookup(run: Path) -> dict:
    """One ASIN from the saved IVF index (built first if missing), after loading it."""
    from recsys_stream.neighbours.approximate import Approximate
    from recsys_stream.similar import Index

    Approximate.of_run(run, Index(run).space(False), "ivf")
    started = time.perf_counter()
    index = Index(run)
    approximate = Approximate.saved(run, index.space(False), "ivf")
    load = time.perf_counter() - started
    times = []
    for query in np.random.default_rng(1).choice(len(index.asins), 20, replace=False):
        started = time.perf_counter()
        index.nearest(np.array([query]), K, False, approximate)
        times.append(time.perf_counter() - started)
    return {"load_seconds": round(load, 2), "lookup_ms": round(1000 * float(np.median(times)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=2_000_000)
    parser.add_argument("--sample", type=int, default=0, help="queries of exact and anchors")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # one part, in this process
    args = parser.parse_args()
    run = run_of(args.products)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-similar-all-{os.getpid()}.parquet"
    if args.part:
        print(json.dumps(part(args.part, run, args.sample, out)), flush=True)
        out.unlink(missing_ok=True)
        out.with_suffix(".json").unlink(missing_ok=True)
        return
    for name in args.parts.split(","):
        command = [sys.executable, __file__, "--products", str(args.products)]
        command += ["--sample", str(args.sample), "--part", name]
        # implicit asks for OpenBLAS's own threads off (its check_blas_config warning)
        blas = {"OPENBLAS_NUM_THREADS": "1"} if name == "implicit" else {}
        subprocess.run(command, check=True, env={**os.environ, **blas})


if __name__ == "__main__":
    main()
