"""Benchmark training: samples/s, peak RSS and AUC per variant, and implicit's ALS beside them.

    python tests/bench/bench_train.py --products 500000 --dims 32,128 --epochs 5 [--als]

Builds the dataset through the real stages (synth, parse, pairs, split; cached
in --workdir), trains each variant in a fresh process and prints one JSON
line per run from its summary.json. ``--als`` also fits implicit's ALS (a
bench-only dependency, what users would otherwise reach for) on the same
train split and scores the same validation pairs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["mf-binary", "mf-continuous", "mf_bias-binary", "mf_bias-continuous"]


def dataset(products: int, workdir: Path) -> Path:
    """The stage-3 files of a synthetic catalog of ``products``, built once."""
    data = workdir / f"synthetic-{products}"
    if (data / "split.json").exists():
        return data
    raw = data / "raw" / "catalog.json.gz"
    steps = [
        ["synth", str(raw), "--products", str(products)],
        ["parse", str(raw), "--out", str(data)],
        ["pairs", str(data)],
        ["split", str(data)],
    ]
    for step in steps:
        subprocess.run(
            [sys.executable, "-m", "pipeline", *step, "--quiet"],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    return data


def train_run(data: Path, variant: str, name: str, **options) -> dict:
    """Train ``variant`` as run ``name`` in a fresh process; its summary.json.

    ``options``: TrainConfig fields to set (dim, epochs, seed, ...); the rest
    keep their defaults.
    """
    model, labels = variant.split("-")
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    command = ["-m", "recsys_stream", "train", str(data), "--model", model, "--labels", labels]
    subprocess.run(
        [sys.executable, *command, *flags, "--name", name, "--quiet"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return json.loads((data / "runs" / name / "summary.json").read_text())


def train(data: Path, variant: str, dim: int, epochs: int) -> dict:
    s = train_run(data, variant, f"bench-{variant}-{dim}-{epochs}", dim=dim, epochs=epochs)
    return {
        "bench": "train",
        "products": int(data.name.split("-")[1]),
        "variant": variant,
        "dim": dim,
        "epochs": epochs,
        "vocab": s["vocab_size"],
        "auc_all": round(s["auc_all"], 4),
        "auc_seen": round(s["auc_seen"], 4),
        "pr_auc": round(s["pr_auc"], 4),
        "popularity_auc_seen": round(s["popularity_auc_seen"], 4),
        "samples_per_s": s["samples_per_s"],
        "train_seconds": s["train_seconds"],
        "seconds": s["seconds"],
        "peak_rss_mb": s["peak_rss_mb"],
    }


def als(data: Path, dim: int) -> dict:
    """implicit's ALS on the train pairs as a symmetric product x product matrix."""
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recsys_stream.evaluate import Validation, auc

    vocab = pq.ParquetFile(data / "vocab.parquet").metadata.num_rows
    train = pq.read_table(data / "train.parquet", columns=["src", "dst"])
    src, dst = train.column("src").to_numpy(), train.column("dst").to_numpy()
    rows, cols = np.concatenate([src, dst]), np.concatenate([dst, src])
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(vocab, vocab))
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=dim, iterations=15, random_state=42)
        model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    val = Validation.load(data / "val.parquet")
    score = (users[val.src] * items[val.dst]).sum(1) + (users[val.dst] * items[val.src]).sum(1)
    return {
        "bench": "als",
        "products": int(data.name.split("-")[1]),
        "dim": dim,
        "iterations": 15,
        "auc_all": round(auc(val.label, score), 4),
        "auc_seen": round(auc(val.label[val.seen], score[val.seen]), 4),
        "fit_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=500_000)
    parser.add_argument("--dims", default="32")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--als", action="store_true", help="also fit implicit's ALS")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench")
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    for dim in map(int, args.dims.split(",")):
        for variant in args.variants.split(","):
            print(json.dumps(train(data, variant, dim, args.epochs)), flush=True)
        if args.als:
            print(json.dumps(als(data, dim)), flush=True)


if __name__ == "__main__":
    main()
