"""The tuning grid behind the training defaults: one setting changed at a time, both protocols.

    python tests/bench/bench_tune.py --products 100000 --seeds 42,43

On bench_compare's twin splits (the same train pairs; val negatives under the
``products`` and ``occurrences`` protocols), trains MF with bias at the
defaults and with each setting of GRID changed alone, and prints one JSON
line per run with its ROC-AUC over all val rows under both protocols. The
defaults are the row to beat: every other row changes one thing.
"""

from __future__ import annotations

import json
import sys

from bench_compare import aucs, validations
from bench_train import catalog_parser, dataset, train_run
from common import ROOT

sys.path.insert(0, str(ROOT))

from recsys_stream.core.trained import load_run
from recsys_stream.pairs import evaluate

GRID = [
    {},
    {"labels": "binary"},
    {"negative_power": 0.0},
    {"negative_power": 0.5},
    {"negative_power": 0.75},
    {"lr": 0.01},
    {"lr": 0.04},
    {"l2": 1e-3},
    {"l2": 1e-2},
    {"dim": 64},
    {"negatives": 10},
    {"epochs": 10},
    {"smoothing": 0.0},
    {"smoothing": 0.5},
    {"smoothing": 1.0},
]


def main() -> None:
    parser = catalog_parser(__doc__, 100_000)
    parser.add_argument("--seeds", default="42")
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    vals = validations(data)
    for seed in (int(seed) for seed in args.seeds.split(",")):
        for change in GRID:
            name = "tune-" + "-".join(f"{k}{v}" for k, v in change.items()) + f"-{seed}"
            summary = train_run(data, "mf_bias-continuous", name, **{**change, "seed": seed})
            model, _, _ = load_run(data / "runs" / summary["run"])
            line = {
                "bench": "tune",
                "products": args.products,
                "change": change,
                "seed": seed,
                **aucs(vals, lambda a, b, model=model: evaluate.scores(model, a, b)),
                "train_seconds": summary["train_seconds"],
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
