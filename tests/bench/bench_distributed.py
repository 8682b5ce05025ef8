"""Data-parallel training: one process against two (torchrun), samples/s, AUC and the
exchange's share of the time.

    python tests/bench/bench_distributed.py --products 500000 --epochs 1 --seeds 42,43

On the catalog bench_train.py builds, mf_bias with its defaults but
``--epochs``, at each seed: one process with threads chosen by measurement
(the default), one process on one thread, and ``--nproc 2`` (one thread
each). All three step on the same rows a step (``--batch-size`` is the
step's rows over all processes), so their AUCs differ only by noise and by
the order of the float sums. ``--busy N`` runs every setup beside N other
processes spinning a core each (bench_busy.py's load). Prints one JSON line
per run.
"""

from __future__ import annotations

import json

from bench_busy import busy
from bench_train import catalog_parser, dataset, train_run

SETUPS = {"1 process": {}, "1 process, 1 thread": {"threads": 1}, "2 processes": {"nproc": 2}}


def main() -> None:
    parser = catalog_parser(__doc__, 500_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--busy", type=int, default=0, help="spinning processes beside")
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    for seed in map(int, args.seeds.split(",")):
        for setup, options in SETUPS.items():
            name = f"bench-distributed-{seed}-{setup.replace(' ', '').replace(',', '-')}"
            with busy(args.busy):
                s = train_run(
                    data, "mf_bias-continuous", name, epochs=args.epochs, seed=seed, **options
                )
            found = {
                "products": args.products,
                "setup": setup + (f", beside {args.busy} busy" if args.busy else ""),
                "seed": seed,
                "epochs": args.epochs,
                "steps": s["steps"],
                "auc_all": round(s["auc_all"], 4),
                "auc_seen": round(s["auc_seen"], 4),
                "samples_per_s": s["samples_per_s"],
                "train_seconds": s["train_seconds"],
                "seconds": s["seconds"],
                "peak_rss_mb": s["peak_rss_mb"],
            }
            for key in (
                "exchange_wait_seconds",
                "exchange_transfer_seconds",
                "exchange_mb_per_step",
            ):
                if key in s:
                    found[key] = s[key]
            print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
