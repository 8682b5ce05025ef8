"""The rating models against Surprise on MovieLens, on the very same splits.

    python tests/bench/bench_movielens.py [--raw u.data] [--small DIR] [--quick] [--only svdpp,SVD]

1. MovieLens 100K: ``--raw`` (u.data), else the copy inside the recbole==1.2.1
   wheel (``pip install --no-deps recbole==1.2.1``), which keeps u.data's line
   order; ``pipeline ratings``, then ``pipeline split-ratings --folds 5``
   (seed 42).
2. Tuning, the same for every method: each one's small grid on fold 1, the
   best point by fold 1's RMSE (ours: every rating model, at a fixed number
   of epochs, no early stopping, which would look at the scored fold;
   Surprise: SVD, SVD++, BaselineOnly).
   ``bpmf`` and ``bpmf_svdpp`` (Gibbs samplers) over dim only, at their own
   200 sweeps (docs/ratings.md says what else was tried).
3. Each method's best point on all five folds: mean RMSE and MAE, their
   spread, fit seconds (both single-threaded: Surprise's Cython is).
4. MovieLens 100K's own split u1, the one most published results use:
   ``split-ratings --by order`` holds out u.data's first 20,000 lines, as the
   archive's mku.sh makes u1.test (u1.base: the other 80,000). Every method at
   the point step 2 chose, seeds 42 and 43, scored on u1.test, which no
   choice looked at (the random folds of step 2 hold its ratings, as they
   hold every rating, spread over train and val). Published on u1: GC-MC
   0.910, and 0.905 with the users' and items' side features (Berg, Kipf and
   Welling, "Graph Convolutional Matrix Completion", 2017, Table 3); GLocal-K
   0.889 (Han et al., "GLocal-K: Global and Local Kernels for Recommender
   Systems", CIKM 2021).
5. MovieLens latest-small (``--small``, default ../shared/data/ml-latest-small):
   random 80/20 splits with seeds 42 and 43, every method at the settings
   ML-100K chose (no tuning on these splits); the article's MSE 0.784 is an
   RMSE of 0.885.

Prints one JSON line per method and dataset. ``--speed``: only the speed
of ``mf_bias`` on each step against Surprise's SVD (fold 1, two seeds).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pc
import pyarrow.parquet as pq
from common import ROOT

from pipeline.ratings import ratings
from pipeline.split_ratings import split_ratings
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train

WORK = ROOT / "data" / "bench"
SMALL = ROOT.parent / "shared" / "data" / "ml-latest-small"

# Each grid is small and holds its best point inside: an axis whose best
# value lay at its end on a first run was extended one step past it (the
# record's ``at_edge`` names any axis where the best still lies at an end).
OURS = {
    "mf_bias": {"lr": [0.0025, 0.005, 0.01], "l2": [0.05, 0.1, 0.2], "dim": [16, 32, 128]},
    "mf": {"lr": [0.005, 0.01, 0.02], "l2": [0.01, 0.05, 0.1]},
    "pmf": {"lr": [0.0025, 0.005, 0.01], "prior_std": [2.0, 3.0, 4.0]},
    "embedding_net": {"lr": [0.001, 0.003, 0.01], "dropout": [0.1, 0.25, 0.5]},
    "svdpp": {"lr": [0.0025, 0.005, 0.01], "l2": [0.05, 0.1, 0.2], "dim": [32, 64]},
    "bpmf": {"dim": [10, 20]},
    "bpmf_svdpp": {"dim": [10, 20]},
}
OURS_FIXED = {"epochs": 20, "schedule": "cosine"}
# The Gibbs samplers' epochs are sweeps, and they take no learning rate: they
# keep their own defaults (200 sweeps, the first 50 burn-in; config.BAYES_DEFAULTS).
SAMPLED = ("bpmf", "bpmf_svdpp")
SURPRISE = {
    "SVD": {
        "n_factors": [100, 200, 400],
        "lr_all": [0.005, 0.01, 0.02],
        "reg_all": [0.05, 0.1, 0.2],
    },
    "SVDpp": {"lr_all": [0.005, 0.007, 0.01], "reg_all": [0.02, 0.05, 0.1]},
    "BaselineOnly": {"method": ["als", "sgd"], "reg": [0.02, 5.0, 10.0, 15.0]},
}


def points(grid: dict) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def movielens_100k(raw: str | None) -> Path:
    if raw:
        return Path(raw)
    spec = importlib.util.find_spec("recbole")
    if spec is None:
        sys.exit("no MovieLens 100K: give --raw u.data, or pip install --no-deps recbole==1.2.1")
    return Path(spec.origin).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"


def prepare(raw: Path, out: Path, titles: Path | None = None, **split) -> Path:
    if out.exists():
        shutil.rmtree(out)
    scale = "1:5" if raw.suffix == ".inter" else None  # recbole's ml-100k.inter names none
    ratings(raw, out, titles=titles, scale=scale, quiet=True)
    split_ratings(out, quiet=True, **split)
    return out


def fit_ours(data: Path, model: str, options: dict, fold: int, seed: int = 42) -> dict:
    fixed = {} if model in SAMPLED else OURS_FIXED
    config = TrainConfig.defaults(
        "ratings", model=model, fold=fold, eval_every=0, seed=seed, **fixed, **options
    )
    started = time.perf_counter()
    summary = train(data, config, name="bench", quiet=True, threads=1)
    return {
        "rmse": summary["rmse"],
        "mae": summary["mae"],
        "fit_seconds": round(time.perf_counter() - started, 2),
        "ratings_per_s": summary["samples_per_s"],
    }


def surprise_split(data: Path, fold: int, low: float, high: float):
    from surprise import Dataset, Reader
    from surprise.model_selection import PredefinedKFold

    suffix = f"-fold{fold}" if fold else ""
    folder = Path(tempfile.mkdtemp())
    files = []
    for part in ("train", "val"):
        table = pq.read_table(
            data / f"ratings-{part}{suffix}.parquet", columns=["user", "item", "rating"]
        )
        path = folder / f"{part}.tsv"
        pc.write_csv(table, path, pc.WriteOptions(include_header=False, delimiter="\t"))
        files.append(str(path))
    reader = Reader(line_format="user item rating", sep="\t", rating_scale=(low, high))
    found = next(PredefinedKFold().split(Dataset.load_from_folds([tuple(files)], reader)))
    shutil.rmtree(folder)
    return found


def fit_surprise(data: Path, name: str, options: dict, fold: int, seed: int = 0) -> dict:
    import surprise
    from surprise import accuracy

    stats = json.loads((data / "ratings.json").read_text())
    low, high = stats["rating_min"], stats["rating_max"]
    trainset, testset = surprise_split(data, fold, low, high)
    if name == "BaselineOnly":
        method, reg = options["method"], options["reg"]
        bsl = {
            "method": method,
            **({"reg_u": reg, "reg_i": reg} if method == "als" else {"reg": reg}),
        }
        algo = surprise.BaselineOnly(bsl_options=bsl, verbose=False)
    else:
        extra = {"cache_ratings": True} if name == "SVDpp" else {}
        algo = getattr(surprise, name)(random_state=seed, **options, **extra)
    started = time.perf_counter()
    algo.fit(trainset)
    fit = time.perf_counter() - started
    predictions = algo.test(testset)
    return {
        "rmse": accuracy.rmse(predictions, verbose=False),
        "mae": accuracy.mae(predictions, verbose=False),
        "fit_seconds": round(fit, 2),
    }


def speed(data: Path, seeds: list[int]) -> None:
    """Fold 1, side by side: ``mf_bias`` at its defaults with dim 32 and 20 epochs on each
    step and thread count, and Surprise's SVD (32 factors, 20 epochs, its defaults
    otherwise); ratings a second of training, and the RMSE."""
    ratings_seen = pq.ParquetFile(data / "ratings-train-fold1.parquet").metadata.num_rows
    for seed in seeds:
        found = fit_surprise(data, "SVD", {"n_factors": 32, "n_epochs": 20}, 1, seed)
        record = {"method": "Surprise SVD", "rmse": round(found["rmse"], 4)}
        record["ratings_per_s"] = round(20 * ratings_seen / found["fit_seconds"])
        print(json.dumps({"bench": "movielens-speed", "seed": seed, **record}), flush=True)
        for step, threads in (("kernel", 1), ("kernel", 0), ("fused", 1), ("fused", 0)):
            config = TrainConfig.defaults(
                "ratings", model="mf_bias", fold=1, eval_every=0, dim=32, epochs=20, seed=seed,
                step=step,
            )  # fmt: skip
            summary = train(data, config, name="bench-speed", quiet=True, threads=threads)
            record = {
                "method": f"ours mf_bias, {step} step",
                "threads": threads or "auto",
                "rmse": round(summary["rmse"], 4),
                "ratings_per_s": summary["samples_per_s"],
            }
            print(json.dumps({"bench": "movielens-speed", "seed": seed, **record}), flush=True)


def methods(quick: bool, only: list[str] | None):
    """(label, fit function, name, grid, its points) of every method, or of those in ``only``."""
    every = [("ours", fit_ours, OURS), ("Surprise", fit_surprise, SURPRISE)]
    for owner, fit, grids in every:
        for name, grid in grids.items():
            if only is None or name in only:
                yield f"{owner} {name}", fit, name, grid, points(grid)[: 2 if quick else None]


def at_edge(grid: dict, point: dict) -> list[str]:
    """The numeric axes of ``grid`` whose best value is its first or last."""
    return [
        axis
        for axis, values in grid.items()
        if len(values) > 2
        and all(isinstance(v, (int, float)) for v in values)
        and point[axis] in (values[0], values[-1])
    ]


def summarise(runs: list[dict]) -> dict:
    rmse = [r["rmse"] for r in runs]
    return {
        "rmse": round(statistics.mean(rmse), 4),
        "rmse_spread": round(max(rmse) - min(rmse), 4),
        "rmse_each": [round(x, 4) for x in rmse],
        "mae": round(statistics.mean(r["mae"] for r in runs), 4),
        "fit_seconds": round(statistics.mean(r["fit_seconds"] for r in runs), 2),
    }


def rounded(result: dict) -> dict:
    """One fit's RMSE, MSE and MAE to four places, and its fit seconds."""
    return {
        "rmse": round(result["rmse"], 4),
        "mse": round(result["rmse"] ** 2, 4),
        "mae": round(result["mae"], 4),
        "fit_seconds": result["fit_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", help="MovieLens 100K's u.data (default: recbole's copy)")
    parser.add_argument("--small", default=str(SMALL), help="ml-latest-small directory")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two grid points a method")
    parser.add_argument("--speed", action="store_true", help="only the speed against SVD")
    parser.add_argument("--only", help="comma-separated methods to run (mf_bias,SVD,...)")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else None
    if only and not set(only) <= {*OURS, *SURPRISE}:
        sys.exit(f"--only: not methods here: {', '.join(sorted(set(only) - {*OURS, *SURPRISE}))}")
    date = time.strftime("%Y-%m-%d")
    m100 = prepare(movielens_100k(args.raw), WORK / "ml-100k", folds=args.folds, seed=42)
    if args.speed:
        speed(m100, [42, 43])
        return
    small = Path(args.small)
    chosen = {}
    for label, fit, name, grid, tried_points in methods(args.quick, only):
        tried = [(fit(m100, name, point, 1), point) for point in tried_points]
        best, point = min(tried, key=lambda found: found[0]["rmse"])
        chosen[label] = (fit, name, point)
        runs = [best] + [fit(m100, name, point, fold) for fold in range(2, args.folds + 1)]
        record = {
            "bench": "movielens",
            "dataset": f"ml-100k {args.folds}-fold",
            "method": label,
            "settings": point,
            "grid_points": len(tried_points),
            "at_edge": at_edge(grid, point),
            **summarise(runs),
            "date": date,
        }
        if "ratings_per_s" in best:
            record["ratings_per_s"] = round(statistics.mean(r["ratings_per_s"] for r in runs))
        print(json.dumps(record), flush=True)
    u1 = prepare(movielens_100k(args.raw), WORK / "ml-100k-u1", by="order", val_prop=0.2)
    for seed in (42, 43):
        for label, (fit, name, point) in chosen.items():
            result = fit(u1, name, point, 0, seed)
            record = {"dataset": "ml-100k u1", "seed": seed, "method": label, "settings": point}
            print(
                json.dumps({"bench": "movielens", **record, **rounded(result), "date": date}),
                flush=True,
            )
    if not (small / "ratings.csv").is_file():
        return
    for seed in (42, 43):
        data = prepare(
            small / "ratings.csv", WORK / f"ml-latest-small-{seed}", small / "movies.csv", seed=seed
        )
        for label, (fit, name, point) in chosen.items():
            result = fit(data, name, point, 0)
            record = {"dataset": "ml-latest-small 80/20", "seed": seed, "method": label}
            record["settings"] = point
            print(
                json.dumps({"bench": "movielens", **record, **rounded(result), "date": date}),
                flush=True,
            )


if __name__ == "__main__":
    main()
