"""Sequence models against what users would otherwise pick, on the same splits.

    python tests/bench/bench_sequences.py [--raw u.data] [--quick] [--speed-only]
        [--speed-ratings N]

1. MovieLens 100K (``--raw`` u.data, else the recbole==1.2.1 wheel's copy):
   ``pipeline ratings``, ``split-ratings --by time`` (each user's latest 20%
   in val), ``pipeline sequences`` (runs of 50).
   - Ratings: each method's small grid (mf_bias, embedding_net, lstm, gru
     at 20 epochs), the best point by val RMSE, then that point at seeds 42
     and 43. The time split has no third part, so every method is picked
     and scored on the same val ratings: the same advantage for each.
   - Next item, leave-one-out against every item: lstm and gru, each a grid
     picked by val NDCG@10 (the second-last items); co-occurrence's window
     and history length picked the same way; popularity. Test HR@10 and
     NDCG@10 (the last items) at the chosen points, seeds 42 and 43.
2. Synthetic ratings with a planted order (``synth-ratings --sequential``,
   4,000 users, 2,000 items), every method at the points ML-100K chose (no
   tuning here; co-occurrence still picked on its val targets).
3. Speed at Amazon Books' size (``--speed-ratings``, default 20M synthetic
   ratings of 8M users on 2M items): split-ratings --by time and sequences,
   then one epoch of lstm on the next rating and one on the next item
   (sampled softmax, 1,024 negatives a batch): runs/s, positions/s, peak
   RSS, each in a process of its own.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from bench_movielens import movielens_100k, points
from common import ROOT, run_stage

from pipeline.ratings import ratings
from pipeline.sequences import sequences
from pipeline.split_ratings import split_ratings
from pipeline.synth_ratings import generate_ratings
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.sequences import baselines as next_item_baselines
from recsys_stream.sequences.inputs import open_sequence_data
from recsys_stream.sequences.task import rank

WORK = ROOT / "data" / "bench"
SEEDS = (42, 43)
# Each grid holds its best point inside: an axis whose best value lay at its
# end on a first run was extended one step past it (``at_edge`` names an axis
# whose best still lies at an end). Ours at 20 epochs, no early stopping.
RATING_GRIDS = {
    "mf_bias": {"lr": [0.00125, 0.0025, 0.005, 0.01], "l2": [0.025, 0.05, 0.1, 0.2]},
    "embedding_net": {"lr": [0.001, 0.003, 0.01], "dropout": [0.1, 0.25, 0.5, 0.7]},
    "lstm": {"lr": [0.0005, 0.001, 0.003], "dropout": [0.0, 0.3], "embedding_dropout": [0.0, 0.2]},
    "gru": {"lr": [0.0005, 0.001, 0.003], "dropout": [0.0, 0.3], "embedding_dropout": [0.0, 0.2]},
}
NEXT_GRID = {
    "lr": [0.005, 0.01, 0.02, 0.04],
    "dropout": [0.2, 0.4],
    "embedding_dropout": [0.0, 0.2],
}
# gru's best lay at lr 0.04, so its grid goes one step further
NEXT_GRIDS = {"lstm": NEXT_GRID, "gru": {**NEXT_GRID, "lr": [0.005, 0.01, 0.02, 0.04, 0.08]}}
COOCCURRENCE_GRID = {"window": [1, 2, 3, 5, 10], "last": [1, 2, 3, 5, 10]}
QUICK = {"lr": [0.003], "l2": [0.1], "dropout": [0.2], "embedding_dropout": [0.0]}


def at_edge(grid: dict, best: dict) -> list[str]:
    return [k for k, v in grid.items() if len(v) > 2 and best[k] in (v[0], v[-1])]


def prepare(raw: Path, folder: Path) -> Path:
    """A dataset split by time with its sequence files, made afresh."""
    shutil.rmtree(folder, ignore_errors=True)
    scale = "1:5" if raw.suffix == ".inter" else None  # recbole's ml-100k.inter names none
    ratings(raw, folder, scale=scale, quiet=True)
    split_ratings(folder, by="time", quiet=True)
    sequences(folder, quiet=True)
    return folder


def fit(job: tuple) -> dict:
    """One training (in a pool's process): (folder, kind, model, settings, seed, name)."""
    folder, kind, model, settings, seed, name = job
    config = TrainConfig.defaults(kind, model=model, seed=seed, **settings)
    summary = train(folder, config, name=name, quiet=True)
    shutil.rmtree(Path(folder) / "runs" / name, ignore_errors=True)
    return summary


def run_all(jobs: list[tuple]) -> list[dict]:
    """The trainings two at a time (each on one thread, as the 2-core machine allows)."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        return list(pool.map(fit, jobs))


def tune(folder: Path, kind: str, model: str, grid: dict, score: str, higher: bool) -> dict:
    """The grid's best point by the val ``score``."""
    tried = points(grid)
    jobs = [(folder, kind, model, p, 42, f"grid-{kind}-{model}-{i}") for i, p in enumerate(tried)]
    found = run_all(jobs)
    values = [s[score] for s in found]
    best = (max if higher else min)(range(len(tried)), key=values.__getitem__)
    return {
        "settings": tried[best],
        "grid_points": len(tried),
        "at_edge": at_edge(grid, tried[best]),
    }


def seeded(folder: Path, kind: str, model: str, settings: dict) -> list[dict]:
    jobs = [(folder, kind, model, settings, s, f"seed-{kind}-{model}-{s}") for s in SEEDS]
    return run_all(jobs)


def rating_rows(dataset: str, folder: Path, chosen: dict) -> list[dict]:
    rows = []
    for model, pick in chosen.items():
        kind = "sequences" if model in NEXT_GRIDS else "ratings"
        found = seeded(folder, kind, model, pick["settings"])
        rows.append(
            {
                "dataset": dataset,
                "task": "rating",
                "method": model,
                **pick,
                "rmse_each": [round(s["rmse"], 4) for s in found],
                "rmse": round(statistics.mean(s["rmse"] for s in found), 4),
                "mae": round(statistics.mean(s["mae"] for s in found), 4),
                "global_mean_rmse": round(found[0]["global_mean_rmse"], 4),
                "train_seconds": round(statistics.mean(s["train_seconds"] for s in found), 1),
            }
        )
    return rows


def cooccurrence(folder: Path, grid: dict) -> tuple[dict, dict]:
    """Co-occurrence's best (window, last) by val NDCG@10, and its val and test figures."""
    data = open_sequence_data(folder, next_item=True)
    parquet = pq.ParquetFile(data.evaluation)
    users = parquet.read(columns=["items", "target"])
    popularity = next_item_baselines.Popularity(data.items, parquet)
    scored = {}
    for point in points(grid):
        model = next_item_baselines.CoOccurrence(data.items, parquet, popularity, **point)
        figures = {}
        for protocol in ("val", "test"):
            hit, ndcg = rank(model.scores, users, protocol, data)
            figures[f"{protocol}_hr10"], figures[f"{protocol}_ndcg10"] = hit.mean(), ndcg.mean()
        scored[tuple(point.values())] = figures
    best = max(scored, key=lambda key: scored[key]["val_ndcg10"])
    settings = dict(zip(grid, best))
    return {"settings": settings, "grid_points": len(scored), "at_edge": at_edge(grid, settings)}, {
        k: round(float(v), 4) for k, v in scored[best].items()
    }


def next_rows(dataset: str, folder: Path, chosen: dict, grid: dict) -> list[dict]:
    rows = []
    for model, pick in chosen.items():
        found = seeded(folder, "next-item", model, pick["settings"])
        row = {"dataset": dataset, "task": "next-item", "method": model, **pick}
        for key in ("test_hr10", "test_ndcg10", "val_hr10", "val_ndcg10"):
            row[f"{key}_each"] = [round(s[key], 4) for s in found]
            row[key] = round(statistics.mean(s[key] for s in found), 4)
        row["train_seconds"] = round(statistics.mean(s["train_seconds"] for s in found), 1)
        rows.append(row)
    first = found[0]
    rows.append(
        {
            "dataset": dataset,
            "task": "next-item",
            "method": "popularity",
            **{k: round(first[f"popularity_{k}"], 4) for k in ("test_hr10", "test_ndcg10")},
            **{k: round(first[f"popularity_{k}"], 4) for k in ("val_hr10", "val_ndcg10")},
        }
    )
    pick, figures = cooccurrence(folder, grid)
    rows.append(
        {"dataset": dataset, "task": "next-item", "method": "cooccurrence", **pick, **figures}
    )
    return rows


def quality(raw: Path, quick: bool) -> None:
    def grid(full: dict) -> dict:
        return {k: QUICK[k] for k in full} if quick else full

    def kind_of(model: str) -> str:
        return "sequences" if model in NEXT_GRIDS else "ratings"

    def show(rows: list[dict]) -> None:
        for row in rows:
            print(json.dumps(row), flush=True)

    folder = prepare(raw, WORK / "ml-100k-time")
    rating = {
        m: tune(folder, kind_of(m), m, grid(g), "rmse", False) for m, g in RATING_GRIDS.items()
    }
    show(rating_rows("MovieLens 100K", folder, rating))
    nexts = {
        m: tune(folder, "next-item", m, grid(g), "val_ndcg10", True) for m, g in NEXT_GRIDS.items()
    }
    cooc_grid = {"window": [3], "last": [3]} if quick else COOCCURRENCE_GRID
    show(next_rows("MovieLens 100K", folder, nexts, cooc_grid))
    synthetic = WORK / "sequential-raw.csv"
    generate_ratings(synthetic, 4_000, 2_000, 150_000, seed=42, sequential=True, quiet=True)
    folder = prepare(synthetic, WORK / "sequential-time")
    show(rating_rows("planted sequences", folder, rating))
    show(next_rows("planted sequences", folder, nexts, cooc_grid))


def speed(count: int) -> None:
    """Stages and one epoch of each task at Amazon Books' size, each in its own process."""
    folder = WORK / f"sequences-{count}"
    raw = WORK / f"sequences-{count}.csv"
    if not (folder / "ratings.json").is_file():
        generate_ratings(raw, 8_000_000, 2_000_000, count, seed=42, quiet=True)
        ratings(raw, folder, quiet=True)
        raw.unlink()
    split = run_stage("pipeline.split_ratings", "split_ratings", folder, by="time")
    row = {"stage": "split-ratings --by time", "ratings": split["ratings"]}
    print(json.dumps({**row, "seconds": split["seconds"], "peak_rss_mb": split["peak_rss_mb"]}))
    made = run_stage("pipeline.sequences", "sequences", folder)
    print(
        json.dumps(
            {
                "stage": "sequences",
                "ratings": split["ratings"],
                "runs": made["files"]["sequences-train.parquet"]["rows"],
                "seconds": made["seconds"],
                "peak_rss_mb": made["peak_rss_mb"],
            }
        ),
        flush=True,
    )
    for task, extra in (
        ("rating", []),
        ("next-item", ["--task", "next-item", "--negatives", "1024"]),
    ):
        command = [
            sys.executable,
            "-m",
            "recsys_stream",
            "train",
            str(folder),
            "--model",
            "lstm",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--eval-sample",
            "1000",
            "--name",
            f"speed-{task}",
            "--quiet",
            *extra,
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        summary = json.loads((folder / "runs" / f"speed-{task}" / "summary.json").read_text())
        print(
            json.dumps(
                {
                    "stage": f"train lstm ({task})",
                    "runs": summary["train_runs"],
                    "positions": summary["train_positions"],
                    "items": summary["items"],
                    "train_seconds": summary["train_seconds"],
                    "runs_per_s": round(summary["train_runs"] / summary["train_seconds"]),
                    "samples_per_s": summary["samples_per_s"],
                    "seconds": summary["seconds"],
                    "peak_rss_mb": summary["peak_rss_mb"],
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", help="MovieLens 100K's u.data (default: recbole's copy)")
    parser.add_argument("--quick", action="store_true", help="one point a grid (a smoke run)")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--speed-ratings", type=int, default=20_000_000)
    args = parser.parse_args()
    if not args.speed_only:
        quality(movielens_100k(args.raw), args.quick)
    if not args.quality_only:
        speed(args.speed_ratings)


if __name__ == "__main__":
    main()
