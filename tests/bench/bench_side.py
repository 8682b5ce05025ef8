"""Benchmark side information: MF with bias with and without brand, category and price vectors.

    python tests/bench/bench_side.py --products 100000 --seeds 42,43

On the bench_compare split and its twin (both val-negative protocols), trains
MF with bias at its defaults plain and with ``--side-info`` and scores all val
rows, the seen ones (both products in train) and the cold ones (at least one
product without a train pair). The synthetic catalog's leaf category is a
product's taste cluster, so category is a stronger signal here than on real
data; brand and price are noise. Prints one JSON line per run.
"""

from __future__ import annotations

import json
import sys
import time

from bench_compare import validations
from bench_train import catalog_parser, dataset, train_run
from common import ROOT

sys.path.insert(0, str(ROOT))

from recsys_stream.core.trained import load_run
from recsys_stream.pairs import evaluate

SIDES = ("", "category", "brand,category,price")


def scored(model, val: evaluate.Validation) -> dict[str, float]:
    score = evaluate.scores(model, val.src, val.dst)
    return {
        "all": evaluate.auc(val.label, score),
        "seen": evaluate.auc(val.label[val.seen], score[val.seen]),
        "cold": evaluate.auc(val.label[~val.seen], score[~val.seen]),
    }


def main() -> None:
    parser = catalog_parser(__doc__, 100_000)
    parser.add_argument("--seeds", default="42")
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    vals = validations(data)
    for seed in (int(s) for s in args.seeds.split(",")):
        for side in SIDES:
            name = f"side-{side or 'none'}-{seed}"
            started = time.perf_counter()
            summary = train_run(data, "mf_bias-continuous", name, side_info=side, seed=seed)
            model = load_run(data / "runs" / name)[0]
            line = {"products": args.products, "side_info": side or "none", "seed": seed}
            for protocol, val in vals.items():
                for rows, auc in scored(model, val).items():
                    line[f"auc_{rows}_{protocol}"] = round(auc, 4)
            line["cold_rows"] = int((~vals["products"].seen).sum())
            line["val_rows"] = len(vals["products"].label)
            line["samples_per_s"] = summary["samples_per_s"]
            line["fit_seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
