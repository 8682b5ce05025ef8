"""Benchmark on a busy machine: training, `similar` and a stage beside competing processes.

    python tests/bench/bench_busy.py --products 100000

Each measurement runs with 0, 1 and 2 other processes spinning in a busy
loop (one Python ``while True`` each, killed afterwards) on this 2-core
machine:

- ``train`` (MF with bias, 2 epochs; each of ``--steps``) with the thread count chosen by
  measurement (the default), fixed at 2 (torch's default, the trainer's
  behaviour before) and fixed at 1: samples/s over the training steps, in
  ``--repeats`` rounds of the three, since runs a minute apart differ by
  about 10% here.
- ``similar``: 1,000 lookups in one process, at torch's default threads.
- ``pairs`` on the same catalog: polars' and Arrow's own thread pools.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from bench_train import catalog_parser, dataset, train_run
from common import ROOT, run_stage

SPIN = "while True: pass"


@contextlib.contextmanager
def busy(processes: int):
    """``processes`` other processes spinning for the duration of the block."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(processes)]
    time.sleep(1.0 if processes else 0)  # let the scheduler see them
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def similar_seconds(run: Path, data: Path) -> float:
    """1,000 lookups in a fresh process, loading included."""
    asins = pq.read_table(data / "vocab.parquet", columns=["asin"]).column("asin")
    queries = ",".join(asins.slice(0, 1000).to_pylist())
    code = (
        "import sys, time; from recsys_stream.similar import similar; "
        "started = time.perf_counter(); similar(sys.argv[1], sys.argv[2].split(','), 10); "
        "print(time.perf_counter() - started)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(run), queries],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return round(float(done.stdout.strip()), 2)


def main() -> None:
    parser = catalog_parser(__doc__, 100_000)
    parser.add_argument("--loads", default="0,1,2")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds of the three trainings a load (runs vary ~10%%)",
    )
    parser.add_argument("--steps", default="auto", help="the training steps, comma-separated")
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    tag = {"bench": "busy", "products": args.products}
    for load in (int(n) for n in args.loads.split(",")):
        for repeat, step, (threads, label) in itertools.product(
            range(args.repeats), args.steps.split(","), ((0, "chosen"), (2, "2"), (1, "1"))
        ):
            with busy(load):
                name = f"busy-{load}-{label}"
                summary = train_run(
                    data, "mf_bias-continuous", name, epochs=2, threads=threads, step=step
                )
            line = {
                **tag,
                "what": "train",
                "load": load,
                "step": summary["step"],
                "threads": label,
                "repeat": repeat,
                "samples_per_s": summary["samples_per_s"],
                "steps_by_threads": summary["steps_by_threads"],
            }
            print(json.dumps(line), flush=True)
        run = data / "runs" / "busy-0-chosen"
        with busy(load):
            seconds = similar_seconds(run, data)
        print(json.dumps({**tag, "what": "similar", "load": load, "seconds": seconds}), flush=True)
        with busy(load):
            stats = run_stage("pipeline.pairs", "build_pairs", data)
        print(
            json.dumps({**tag, "what": "pairs", "load": load, "seconds": stats["wall_seconds"]}),
            flush=True,
        )


if __name__ == "__main__":
    main()
