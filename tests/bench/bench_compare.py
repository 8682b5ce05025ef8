"""Benchmark quality: the project's variants against tuned implicit ALS and BPR, on one split.

    python tests/bench/bench_compare.py --products 100000 --seeds 42,43

Builds the dataset through the real stages (as bench_train) and a twin that
differs only in its val negatives: ``split --negatives products`` (the
reference's protocol) and ``--negatives occurrences`` (degree-matched). The
twins' train.parquet hold the same rows (checked), so every method is
fitted once and scored under both protocols on the same val positives.

- The project's four variants at their defaults, one fresh process each, for
  every seed; the run's own model scores both val files.
- Popularity: the product of the two train degrees.
- implicit's ALS over the grid factors {32, 64} x regularization {0.01, 0.1,
  1} x alpha {1, 10, 40}, 15 iterations, and BPR with factors 64 and learning
  rate {0.01, 0.025, 0.05, 0.1, 0.2}, 100 iterations, on the symmetric product x
  product matrix of train pairs holding the pair weights (the information
  the continuous labels carry). Each fit is scored with the dot product
  (u_a . i_b + u_b . i_a) and with the cosine of the item factors; the best
  configuration and scorer under each protocol is fitted again for every
  other seed.

``--raw FILE`` takes a real metadata file instead of the synthetic catalog
(the samples in ../shared/data: most related products of a sample have no
metadata, so most val rows are cold there) and adds the variants with side
information and skip-gram (REAL_VARIANTS).

Prints one JSON line per fit and scorer, with the AUC over all val rows
under each protocol and over its seen and cold rows. ALS and BPR run on two
OpenMP threads with one BLAS thread, as implicit recommends.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_train import VARIANTS, catalog_parser, dataset, real_dataset, train_run
from common import ROOT

sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq

from recsys_stream.core.trained import load_run
from recsys_stream.pairs import evaluate
from recsys_stream.pairs.inputs import open_training_data

PROTOCOLS = ("products", "occurrences")
ALS_GRID = {"factors": (32, 64), "regularization": (0.01, 0.1, 1.0), "alpha": (1.0, 10.0, 40.0)}
BPR_GRID = {"factors": (64,), "learning_rate": (0.01, 0.025, 0.05, 0.1, 0.2)}
THREADS = 2
# What a real sample adds: side information (issue 30: it must not hurt) and skip-gram.
REAL_VARIANTS = [
    *VARIANTS,
    "mf-binary+side",
    "mf_bias-continuous+side",
    "skipgram-binary",
    "skipgram-binary+side",
]


def twin(data: Path) -> Path:
    """``data``'s pairs split again with degree-matched negatives, in a sibling folder."""
    other = data.with_name(f"{data.name}-occurrences")
    if not (other / "split.json").exists():
        other.mkdir(exist_ok=True)
        for name in ("pairs.parquet", "vocab.parquet"):
            (other / name).unlink(missing_ok=True)
            os.link(data / name, other / name)
        command = ["-m", "pipeline", "split", str(other), "--negatives", "occurrences", "--quiet"]
        subprocess.run([sys.executable, *command], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    if not pq.read_table(data / "train.parquet").equals(pq.read_table(other / "train.parquet")):
        sys.exit(f"{data} and {other} hold different train pairs")
    return other


def validations(data: Path) -> dict[str, evaluate.Validation]:
    return {
        "products": evaluate.Validation.load(data / "val.parquet"),
        "occurrences": evaluate.Validation.load(twin(data) / "val.parquet"),
    }


def aucs(vals: dict[str, evaluate.Validation], score) -> dict[str, float]:
    """ROC-AUC under each protocol, for ``score(src, dst)``: over all val rows, its seen
    rows (both products in train) and its cold rows (None where a part has one class)."""
    found = {}
    for name, val in vals.items():
        scores = score(val.src, val.dst)
        for part, rows in (("", slice(None)), ("_seen", val.seen), ("_cold", ~val.seen)):
            auc = evaluate.auc(val.label[rows], scores[rows])
            found[f"auc_{name}{part}"] = None if auc is None else round(auc, 4)
    return found


def ours(data: Path, vals: dict, variant: str, seed: int) -> dict:
    started = time.perf_counter()
    summary = train_run(data, variant, f"compare-{variant}-{seed}", seed=seed)
    model, _, _ = load_run(data / "runs" / summary["run"])
    return {
        "method": variant,
        "config": "defaults",
        "scorer": "model",
        "seed": seed,
        **aucs(vals, lambda a, b: evaluate.scores(model, a, b)),
        "fit_seconds": round(time.perf_counter() - started, 1),
        "samples_per_s": summary["samples_per_s"],
    }


def popularity(data: Path, vals: dict) -> dict:
    degree = open_training_data(data).degree
    return {
        "method": "popularity",
        "config": "degree x degree",
        "scorer": "product",
        **aucs(vals, lambda a, b: degree[a].astype(np.float64) * degree[b]),
    }


def interactions(data: Path):
    """The train pairs as a symmetric CSR matrix of their weights."""
    import scipy.sparse as sp

    size = pq.ParquetFile(data / "vocab.parquet").metadata.num_rows
    table = pq.read_table(data / "train.parquet", columns=["src", "dst", "weight"])
    src, dst, weight = (table.column(name).to_numpy() for name in ("src", "dst", "weight"))
    rows, cols = np.concatenate([src, dst]), np.concatenate([dst, src])
    values = np.concatenate([weight, weight]).astype(np.float32)
    return sp.csr_matrix((values, (rows, cols)), shape=(size, size))


def fit(method: str, config: dict, matrix, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(user factors, item factors, seconds) of implicit's ALS or BPR."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    if method == "als":
        model = AlternatingLeastSquares(
            iterations=15, random_state=seed, num_threads=THREADS, **config
        )
    else:
        model = BayesianPersonalizedRanking(
            iterations=100, regularization=0.01, random_state=seed, num_threads=THREADS, **config
        )
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    return np.asarray(model.user_factors), np.asarray(model.item_factors), seconds


def factor_lines(method: str, config: dict, matrix, vals: dict, seed: int) -> list[dict]:
    """One fit of ``method`` with ``config``, scored both ways."""
    users, items, seconds = fit(method, config, matrix, seed)
    unit = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    scorers = {
        "dot": lambda a, b: (users[a] * items[b]).sum(1) + (users[b] * items[a]).sum(1),
        "cosine": lambda a, b: (unit[a] * unit[b]).sum(1),
    }
    return [
        {
            "method": method,
            "config": config,
            "scorer": name,
            "seed": seed,
            **aucs(vals, score),
            "fit_seconds": round(seconds, 1),
        }
        for name, score in scorers.items()
    ]


def grid(space: dict) -> list[dict]:
    return [dict(zip(space, values)) for values in itertools.product(*space.values())]


def main() -> None:
    parser = catalog_parser(__doc__, 100_000)
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--variants", help="default: VARIANTS, or REAL_VARIANTS with --raw")
    parser.add_argument("--raw", type=Path, help="a real metadata file instead of synthetic")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.raw:
        data = real_dataset(args.raw, args.workdir)
        vals = validations(data)
        products = json.loads((data / "parse.json").read_text())["products"]
        catalog = f"the real sample {args.raw.name}, {products:,} products"
        variants = args.variants or ",".join(REAL_VARIANTS)
    else:
        data = dataset(args.products, args.workdir)
        vals = validations(data)
        products, catalog = args.products, f"{args.products:,}-product synthetic catalog"
        variants = args.variants or ",".join(VARIANTS)
    tag = {"bench": "compare", "products": products, "catalog": catalog}
    print(json.dumps({**tag, **popularity(data, vals)}), flush=True)
    for variant, seed in itertools.product(variants.split(","), seeds):
        print(json.dumps({**tag, **ours(data, vals, variant, seed)}), flush=True)
    matrix = interactions(data)
    for method, space in (("als", ALS_GRID), ("bpr", BPR_GRID)):
        lines = []
        for config in grid(space):
            lines += factor_lines(method, config, matrix, vals, seeds[0])
        best = {
            (json.dumps(line["config"]), line["scorer"])
            for protocol in PROTOCOLS
            for line in [max(lines, key=lambda line: line[f"auc_{protocol}"])]
        }
        for line in lines:
            key = (json.dumps(line["config"]), line["scorer"])
            print(json.dumps({**tag, **line, "best": key in best}), flush=True)
        for config_text in sorted({config for config, _ in best}):
            for seed in seeds[1:]:
                for line in factor_lines(method, json.loads(config_text), matrix, vals, seed):
                    key = (config_text, line["scorer"])
                    print(json.dumps({**tag, **line, "best": key in best}), flush=True)


if __name__ == "__main__":
    main()
