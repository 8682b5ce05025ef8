"""Benchmark the ratings stages: lines/s and peak RSS at Amazon Books scale.

    python tests/bench/bench_ratings.py --users 8000000 --items 2000000 --ratings 20000000

Writes a synthetic Amazon reviews file (``synth-ratings``, cached in
--workdir), then runs ``ratings`` and ``split-ratings`` (random, time, and 5
folds), then trains ``mf_bias`` (dim 32, batches of 4,096, 3 epochs) on
fold 1, each in a fresh process, and prints one JSON line per stage run:
seconds, lines or ratings a second, peak RSS (``--train-only``: the training
alone, on the files of an earlier run). The stages run from Python in a
fresh interpreter (common.run_stage), so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT

# At this scale a step's overhead counts: batches of 4,096 train at 1.6 times
# the default's speed (0.45M ratings/s against 0.29M on 2026-11-26).
TRAIN_OPTIONS = {"epochs": 3, "fold": 1, "dim": 32, "batch_size": 4096, "lr": 0.01}


def stage(code: str, *args: str) -> dict:
    """``code`` (printing a JSON line) in a fresh interpreter; its result and wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.splitlines()[-1])
    found["wall_seconds"] = round(time.perf_counter() - started, 2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=8_000_000)
    parser.add_argument("--items", type=int, default=2_000_000)
    parser.add_argument("--ratings", type=int, default=20_000_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args()
    data = args.workdir / f"ratings-{args.ratings}"
    tag = {"bench": "ratings", "users": args.users, "items": args.items}
    if not args.train_only:
        stages(args, data, tag)
    trained = stage(
        "import json, sys; from recsys_stream.core.train import train; "
        "print(json.dumps(train(sys.argv[1], quiet=True, name='bench', options=json.loads("
        "sys.argv[2]))))",
        str(data),
        json.dumps(TRAIN_OPTIONS),
    )
    keys = ("rmse", "global_mean_rmse", "train_ratings", "seconds", "samples_per_s", "peak_rss_mb")
    what = "train mf_bias dim 32, batches of 4,096, 3 epochs"
    line = {**tag, "stage": what, **{k: trained[k] for k in keys}}
    line["steps_by_threads"] = trained["steps_by_threads"]
    print(json.dumps(line), flush=True)


def stages(args: argparse.Namespace, data: Path, tag: dict) -> None:
    """The ratings stage and the three splits."""
    raw = data / "raw" / "reviews.json.gz"
    if not raw.exists():
        sizes = ["--users", str(args.users), "--items", str(args.items)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "synth-ratings",
                str(raw),
                *sizes,
                "--ratings",
                str(args.ratings),
                "--format",
                "amazon",
                "--quiet",
            ],
            check=True,
            cwd=ROOT,
        )
    read = stage(
        "import json, sys; from pipeline.ratings import ratings; "
        "print(json.dumps(ratings(sys.argv[1], sys.argv[2], quiet=True)))",
        str(raw),
        str(data),
    )
    keys = ("lines", "ratings", "users", "items", "seconds", "lines_per_s", "peak_rss_mb")
    print(json.dumps({**tag, "stage": "ratings", **{k: read[k] for k in keys}}), flush=True)
    for options in ({"by": "random"}, {"by": "time"}, {"folds": 5}):
        split = stage(
            "import json, sys; from pipeline.split_ratings import split_ratings; "
            "print(json.dumps(split_ratings(sys.argv[1], quiet=True, **json.loads(sys.argv[2]))))",
            str(data),
            json.dumps(options),
        )
        line = {
            **tag,
            "stage": "split-ratings",
            "split": split["by"],
            "ratings": split["ratings"],
            "seconds": split["seconds"],
            "ratings_per_s": round(split["ratings"] / max(split["seconds"], 1e-9)),
            "peak_rss_mb": split["peak_rss_mb"],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
