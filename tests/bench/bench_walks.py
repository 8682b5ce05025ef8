"""Benchmark graph embeddings: the walks stage's speed, and skip-gram against gensim's Word2Vec.

    python tests/bench/bench_walks.py --products 500000 --speed-only
    python tests/bench/bench_walks.py --products 100000 --seeds 42,43
    python tests/bench/bench_walks.py --products 2000000 --epoch-only

Walks: 10 walks of 20 products from every product with a train pair,
uniform and weighted, the stage in a fresh process writing a new file
(steps/s, peak RSS). Skip-gram (without --speed-only): on the same uniform
walks, one epoch of gensim's Word2Vec (sg=1, window 5, negative 5, no
subsampling, dim 32, two workers, corpus_file mode, its fastest) and of the
project's skip-gram (the same settings; negatives ~ walk frequency ** 0.75,
k a pair or shared by a batch's pairs; and with side information), for each
seed, scored on the val pairs of both negative protocols (all rows and the
cold ones) by the dot product and the cosine of the input vectors, with
their throughput in walk tokens a second. --epoch-only: end to end, the
uniform walks and one epoch of the make targets' skip-gram (shared
negatives), each in a process of its own: seconds, tokens/s, peak RSS, AUC.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from bench_compare import aucs, validations
from bench_train import catalog_parser, dataset, train_run
from common import ROOT

sys.path.insert(0, str(ROOT))

from recsys_stream.core.trained import load_run
from recsys_stream.pairs.evaluate import Validation

WALKS_PER_NODE, LENGTH, WINDOW, DIM = 10, 20, 5, 32


def run_walks(data: Path, weighted: bool) -> dict:
    """The walks stage in a fresh interpreter, so its peak RSS is its own."""
    (data / "walks.parquet").unlink(missing_ok=True)  # a first run: no old file to replace
    code = (
        "import json, sys; from pipeline.walks import walks; "
        "print(json.dumps(walks(sys.argv[1], weighted=sys.argv[2] == '1', quiet=True)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(data), "1" if weighted else "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def read_walks(data: Path) -> np.ndarray:
    column = pq.read_table(data / "walks.parquet").column("walk").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1)


def scorers(vectors: np.ndarray) -> dict:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return {
        "dot": lambda a, b: (vectors[a] * vectors[b]).sum(1),
        "cosine": lambda a, b: (unit[a] * unit[b]).sum(1),
    }


def all_and_cold(vals: dict, score) -> dict[str, float]:
    """ROC-AUC over all val rows and over the cold ones, under each protocol."""
    cold = {
        name: Validation(*(column[~val.seen] for column in (val.src, val.dst, val.label, val.seen)))
        for name, val in vals.items()
    }
    found = aucs(vals, score)
    found.update({key.replace("auc_", "auc_cold_"): auc for key, auc in aucs(cold, score).items()})
    return found


def gensim_word2vec(data: Path, vals: dict, size: int, tokens: int, seed: int) -> list[dict]:
    from gensim.models import Word2Vec

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "walks.txt"
        np.savetxt(corpus, read_walks(data), fmt="%d")
        started = time.perf_counter()
        model = Word2Vec(
            corpus_file=str(corpus),
            sg=1,
            window=WINDOW,
            negative=5,
            sample=0,
            vector_size=DIM,
            min_count=1,
            epochs=1,
            workers=2,
            seed=seed,
        )
        seconds = time.perf_counter() - started
    vectors = np.zeros((size, DIM), dtype=np.float32)
    keys = np.array([int(key) for key in model.wv.index_to_key])
    vectors[keys] = model.wv.vectors
    return [
        {
            "method": "gensim Word2Vec",
            "seed": seed,
            "scorer": name,
            **all_and_cold(vals, score),
            "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds),
        }
        for name, score in scorers(vectors).items()
    ]


# The project's skip-gram: k negatives a pair (word2vec's way), 32 negatives
# shared by each batch of 8,192 pairs at weight 5 / 32 (the fast way, the make
# targets'), and that with brand, category and price vectors.
SHARED = {"shared_negatives": 32, "batch_size": 8192}
VARIANTS = {
    "recsys-stream skipgram": {"shared_negatives": 0, "batch_size": 2048},
    "recsys-stream skipgram, shared negatives": SHARED,
    "recsys-stream skipgram, shared negatives, side info": {
        **SHARED,
        "side_info": "brand,category,price",
    },
}


def project_skipgram(
    data: Path, vals: dict, tokens: int, seed: int, step: str, variants: set[int] | None
) -> list[dict]:
    lines = []
    for number, (method, extra) in enumerate(VARIANTS.items()):
        if variants is not None and number not in variants:
            continue
        options = dict(epochs=1, window=WINDOW, negative_power=0.75, smoothing=0.0, dim=DIM)
        options["step"] = step
        name = f"bench-skipgram-{number}-{seed}"
        summary = train_run(data, "skipgram-binary", name, **options, **extra, seed=seed)
        model, _, _ = load_run(data / "runs" / name)
        vectors = model.input.weight.detach().numpy()
        lines += [
            {
                "method": method,
                "step": summary["step"],
                "seed": seed,
                "scorer": scorer,
                **all_and_cold(vals, score),
                "seconds": summary["train_seconds"],
                "tokens_per_s": round(tokens / summary["train_seconds"]),
                "samples_per_s": summary["samples_per_s"],
            }
            for scorer, score in scorers(vectors).items()
        ]
    return lines


def one_epoch(data: Path) -> dict:
    """Uniform walks, then one epoch of the make targets' skip-gram on them."""
    walked = run_walks(data, weighted=False)
    options = dict(epochs=1, negative_power=0.75, smoothing=0.0, **SHARED)
    summary = train_run(data, "skipgram-binary", "bench-skipgram-epoch", **options)
    return {
        "what": "epoch",
        "walks_seconds": walked["seconds"],
        "walks_peak_rss_mb": walked["peak_rss_mb"],
        "train_seconds": summary["train_seconds"],
        "tokens_per_s": round(walked["walks"] * walked["length"] / summary["train_seconds"]),
        "samples_per_s": summary["samples_per_s"],
        "train_peak_rss_mb": summary["peak_rss_mb"],
        "auc_all": round(summary["auc_all"], 4),
    }


def main() -> None:
    parser = catalog_parser(__doc__, 100_000)
    parser.add_argument("--speed-only", action="store_true", help="only the walks stage")
    parser.add_argument("--epoch-only", action="store_true", help="walks and one epoch, end to end")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds of the skip-grams")
    parser.add_argument("--steps", default="auto", help="the project's steps, comma-separated")
    parser.add_argument("--variants", help="the project's skip-grams, by number (default: all)")
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    tag = {"bench": "epoch" if args.epoch_only else "walks", "products": args.products}
    if args.epoch_only:
        print(json.dumps({**tag, **one_epoch(data)}), flush=True)
        return
    for weighted in (True, False):  # uniform last: the skip-gram learns from those walks
        stats = run_walks(data, weighted)
        keys = ("walks", "steps", "seconds", "steps_per_s", "peak_rss_mb")
        print(
            json.dumps(
                {**tag, "what": "walks", "weighted": weighted, **{k: stats[k] for k in keys}}
            ),
            flush=True,
        )
    if args.speed_only:
        return
    vals = validations(data)
    size = pq.ParquetFile(data / "vocab.parquet").metadata.num_rows
    tokens = int(read_walks(data).size)
    for seed in (int(s) for s in args.seeds.split(",")):
        lines = gensim_word2vec(data, vals, size, tokens, seed)
        variants = {int(n) for n in args.variants.split(",")} if args.variants else None
        for step in args.steps.split(","):
            lines += project_skipgram(data, vals, tokens, seed, step, variants)
        for line in lines:
            print(json.dumps({**tag, "what": "skipgram", **line}), flush=True)


if __name__ == "__main__":
    main()
