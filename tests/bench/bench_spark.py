"""Benchmark parse, pairs and split on Spark local[N] against the polars engine.

    python tests/bench/bench_spark.py --products 500000

Writes a synthetic 2014-format catalog (plain text, so Spark can split it),
then runs each stage once per engine as its own command (``python -m
pipeline STAGE ... --engine E``), as ``make ENGINE=spark`` does: Spark's
figures include starting its JVM. Peak RSS is the whole process tree's
(the driver, Spark's JVM and its Python workers, or parse's worker
processes), sampled every 0.2 s. Prints one JSON line per engine and stage,
and a last one saying whether the two engines' files are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
from common import ROOT

sys.path.insert(0, str(ROOT))

from pipeline.synth import generate

STAGES = ("parse", "pairs", "split")
FILES = ("products", "vocab", "pairs", "train", "val")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run ``command``; its wall seconds and the peak RSS (MiB) of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, errors = process.communicate()
    done.set()
    sampler.join()
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{errors.decode()[-3000:]}")
    return time.perf_counter() - started, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic catalog")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "meta.json"
        generate(raw, args.products, fmt="py", seed=args.seed, quiet=True)
        for engine in ("polars", "spark"):
            out = Path(scratch) / engine
            for stage in STAGES:
                target = [str(raw), "--out", str(out)] if stage == "parse" else [str(out)]
                command = [sys.executable, "-m", "pipeline", stage, *target, "--quiet"]
                command += ["--engine", engine]
                if engine == "spark":
                    command += ["--spark-master", args.master]
                seconds, peak = run_measured(command)
                stats = json.loads((out / f"{stage}.json").read_text())
                print(
                    json.dumps(
                        {
                            "engine": engine,
                            "master": args.master if engine == "spark" else None,
                            "stage": stage,
                            "products": args.products,
                            "raw_mb": round(raw.stat().st_size / 1e6, 1),
                            "wall_seconds": round(seconds, 2),
                            "stage_seconds": stats["seconds"],
                            "peak_tree_rss_mb": round(peak),
                            "driver_peak_rss_mb": stats["peak_rss_mb"],
                            "rows": stats["products" if stage == "parse" else "pairs"],
                        }
                    ),
                    flush=True,
                )
        equal = {
            name: pq.read_table(Path(scratch) / "spark" / f"{name}.parquet").equals(
                pq.read_table(Path(scratch) / "polars" / f"{name}.parquet")
            )
            for name in FILES
        }
        rejects = [(Path(scratch) / e / "rejects.jsonl").read_bytes() for e in ("polars", "spark")]
        equal["rejects"] = rejects[0] == rejects[1]
        print(json.dumps({"engine": "both", "products": args.products, "equal": equal}))
        volumes(raw, Path(scratch) / "volumes", args.master, args.products)


def volumes(raw: Path, out: Path, master: str, products: int) -> None:
    """Print the bytes each stage's Spark jobs read, shuffled and wrote, from the
    session's monitoring API (the basis of docs/distributed.md's cluster projection)."""
    from pipeline.pairs import build_pairs
    from pipeline.parse import parse
    from pipeline.spark import session
    from pipeline.split import split

    runs = {
        "parse": lambda: parse(raw, out, quiet=True, engine="spark"),
        "pairs": lambda: build_pairs(out, quiet=True, engine="spark"),
        "split": lambda: split(out, quiet=True, engine="spark"),
    }
    with session(master, quiet=True) as spark:
        api = (
            f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}"
        )
        before = _totals(api)
        for stage, run in runs.items():
            stats = run()
            after = _totals(api)
            moved = {key: after[key] - before[key] for key in after}
            before = after
            rows = stats["products" if stage == "parse" else "pairs"]
            print(
                json.dumps(
                    {
                        "engine": "volumes",
                        "stage": stage,
                        "products": products,
                        "rows": rows,
                        **moved,
                    }
                ),
                flush=True,
            )


def _totals(api: str) -> dict[str, int]:
    """Bytes read, shuffled and written by every finished Spark stage so far."""
    time.sleep(1)  # the monitoring API learns of a finished stage a moment later
    with urllib.request.urlopen(f"{api}/stages?status=complete") as answer:
        stages = json.load(answer)
    keys = {
        "input_bytes": "inputBytes",
        "shuffle_write_bytes": "shuffleWriteBytes",
        "output_bytes": "outputBytes",
    }
    return {name: sum(s.get(key, 0) for s in stages) for name, key in keys.items()}


if __name__ == "__main__":
    main()
