"""`make bench`: run every benchmark and rewrite the tables in docs/performance.md.

    python tests/bench/run_all.py [--only compare,tune] [--render-only]

Each bench script prints JSON lines; this runs them in turn (nothing else
should load the machine meanwhile), keeps the lines in data/bench/results.jsonl
and renders them as tables between the performance markers of
docs/performance.md; the hand-written notes outside the markers are kept.
``--only`` reruns the named kinds and keeps the other kinds' earlier lines;
``--render-only`` rewrites the tables from the saved lines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tests" / "bench"
RESULTS = ROOT / "data" / "bench" / "results.jsonl"
PERFORMANCE = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- performance:begin -->", "<!-- performance:end -->"
# The real metadata samples beside the repository (../shared/data/SOURCES.md).
SAMPLES = ROOT.parent / "shared" / "data"
MUSIC_2014 = "amazon-2014-meta/meta_Digital_Music.first7419.json.gz"
MAGAZINE_2018 = "amazon-2018-meta/meta_Magazine_Subscriptions.json.gz"

RUNS = [
    ("parse", ["bench_parse.py", "--products", "500000"]),
    ("parse", ["bench_parse.py", "--products", "2000000", "--formats", "py,json"]),
    ("pairs", ["bench_pairs.py", "--products", "500000"]),
    ("pairs", ["bench_pairs.py", "--products", "2000000"]),
    ("split", ["bench_split.py", "--pairs", "4000000", "--products", "450000"]),
    ("split", ["bench_split.py", "--pairs", "26600000", "--products", "2000000"]),
    ("train", ["bench_train.py", "--products", "500000", "--dims", "32", "--epochs", "5"]),
    ("train", ["bench_train.py", "--products", "500000", "--dims", "128", "--epochs", "1"]),
    ("train", ["bench_train.py", "--products", "2000000", "--dims", "32,128", "--epochs", "1"]),
    ("similar", ["bench_similar.py", "--products", "2000000"]),
    ("similar-all", ["bench_similar_all.py", "--products", "2000000"]),
    ("compare", ["bench_compare.py", "--products", "100000", "--seeds", "42,43"]),
    ("compare", ["bench_compare.py", "--products", "500000", "--seeds", "42,43"]),
    ("compare", ["bench_compare.py", "--raw", f"{SAMPLES}/{MUSIC_2014}", "--seeds", "42,43"]),
    ("compare", ["bench_compare.py", "--raw", f"{SAMPLES}/{MAGAZINE_2018}", "--seeds", "42,43"]),
    ("tune", ["bench_tune.py", "--products", "100000", "--seeds", "42"]),
    ("busy", ["bench_busy.py", "--products", "100000"]),
    ("side", ["bench_side.py", "--products", "100000", "--seeds", "42,43"]),
    ("walks", ["bench_walks.py", "--products", "2000000", "--speed-only"]),
    ("walks", ["bench_walks.py", "--products", "100000", "--seeds", "42,43"]),
    ("epoch", ["bench_walks.py", "--products", "2000000", "--epoch-only"]),
    ("ratings", ["bench_ratings.py"]),
    ("movielens", ["bench_movielens.py"]),
    ("movielens-speed", ["bench_movielens.py", "--speed"]),
    ("sequences", ["bench_sequences.py", "--quality-only"]),
    ("sequences", ["bench_sequences.py", "--speed-only"]),
    ("recbole", ["bench_recbole.py"]),
    ("kernels", ["bench_kernels.py", "--steps", "300", "--repeats", "3"]),
    ("steps", ["bench_steps.py", "--products", "100000", "--dims", "32,128"]),
    ("steps", ["bench_steps.py", "--products", "2000000", "--dims", "32"]),
    ("distributed", ["bench_distributed.py", "--products", "500000", "--epochs", "1"]),
    (
        "distributed",
        [*("bench_distributed.py", "--products", "500000", "--epochs", "1"), "--busy", "1"],
    ),
    ("spark", ["bench_spark.py", "--products", "500000"]),
]


def run(kinds: set[str], kept: list[dict]) -> list[dict]:
    """Run the named kinds; results are saved after each command, so a stopped
    run keeps what it measured."""
    results = [r for r in kept if r["bench"] not in kinds]
    for name, command in RUNS:
        if name not in kinds:
            continue
        print(f"bench: {' '.join(command)}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                found = {"bench": name, **json.loads(line)}
                results.append({**found, "date": str(datetime.date.today())})
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("".join(json.dumps(r) + "\n" for r in results))
    return results


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, Python {platform.python_version()}"
    )


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def render(results: list[dict]) -> str:
    of = {
        kind: [r for r in results if r["bench"] == kind]
        for kind in (
            "parse",
            "pairs",
            "split",
            "train",
            "similar",
            "similar-all",
            "compare",
            "tune",
            "busy",
            "side",
            "walks",
            "epoch",
            "ratings",
            "movielens",
            "movielens-speed",
            "sequences",
            "recbole",
            "kernels",
            "steps",
            "distributed",
            "spark",
        )
    }
    out = [f"Measured by `make bench` {_days(results)}: {machine()}.", ""]
    out += [
        "**Stage 1, parse** (uncompressed synthetic catalogs; peak RSS of the main process "
        "and of each parser worker):",
        "",
    ]
    out += table(
        [
            "products",
            "format",
            "MB",
            "seconds",
            "MB/s",
            "products/s",
            "peak RSS MiB",
            "worker peak RSS MiB",
        ],
        [
            [
                f"{r['products']:,}",
                r["format"],
                r["mb"],
                r["seconds"],
                r["mb_per_s"],
                f"{r['products_per_s']:,}",
                r["peak_rss_mb"],
                r["worker_peak_rss_mb"],
            ]
            for r in of["parse"]
        ],
    )
    out += ["", "**Stage 2, pairs** (synthetic catalogs through parse):", ""]
    out += table(
        ["products", "exploded rows", "pairs", "vocabulary", "seconds", "rows/s", "peak RSS MiB"],
        [
            [
                f"{r['products']:,}",
                f"{r['exploded_rows']:,}",
                f"{r['pairs']:,}",
                f"{r['vocabulary']:,}",
                r["seconds"],
                f"{r['exploded_rows_per_s']:,}",
                r["peak_rss_mb"],
            ]
            for r in of["pairs"]
        ],
    )
    out += ["", "**Stage 3, split** (synthetic power-law pair sets):", ""]
    out += table(
        ["pairs", "products", "seconds", "pairs/s", "peak RSS MiB"],
        [
            [
                f"{r['pairs']:,}",
                f"{r['products']:,}",
                r["seconds"],
                f"{r['pairs_per_s']:,}",
                r["peak_rss_mb"],
            ]
            for r in of["split"]
        ],
    )
    out += [
        "",
        "**Training** (end to end: Parquet stream, negative sampling, fused step; "
        "5 negatives per positive):",
        "",
    ]
    out += table(
        [
            "products",
            "vocabulary",
            "variant",
            "dim",
            "epochs",
            "AUC all",
            "AUC seen",
            "popularity AUC seen",
            "samples/s",
            "train s",
            "total s",
            "peak RSS MiB",
        ],
        [
            [
                f"{r['products']:,}",
                f"{r['vocab']:,}",
                r["variant"],
                r["dim"],
                r["epochs"],
                r["auc_all"],
                r["auc_seen"],
                r["popularity_auc_seen"],
                f"{r['samples_per_s']:,}",
                r["train_seconds"],
                r["seconds"],
                r["peak_rss_mb"],
            ]
            for r in of["train"]
        ],
    )
    if of["similar"]:
        out += [
            "",
            "**similar** (mf_bias-binary, dim 32; k = 10; exact top-k over the whole vocabulary):",
            "",
        ]
        out += table(
            [
                "vocabulary",
                "command, one ASIN (s)",
                "load run (s)",
                "one lookup (s)",
                "similar(), load included (s)",
                "1,000 ASINs (s)",
            ],
            [
                [
                    f"{r['vocab']:,}",
                    r["cli_seconds"],
                    r["load_seconds"],
                    r["one_lookup_seconds"],
                    r["similar_call_seconds"],
                    r["batch_1000_seconds"],
                ]
                for r in of["similar"]
            ],
        )
    out += render_similar_all(of["similar-all"])
    out += render_compare(of["compare"]) + render_tune(of["tune"]) + render_busy(of["busy"])
    out += render_side(of["side"]) + render_walks(of["walks"]) + render_epoch(of["epoch"])
    out += render_ratings(of["ratings"]) + render_movielens(of["movielens"])
    out += render_movielens_speed(of["movielens-speed"])
    out += render_sequences(of["sequences"]) + render_recbole(of["recbole"])
    out += render_kernels(of["kernels"]) + render_steps(of["steps"])
    out += render_distributed(of["distributed"]) + render_spark(of["spark"])
    return "\n".join(out)


def render_similar_all(rows: list[dict]) -> list[str]:
    """The --all tables: each part's time (projected from a sample where it ran on one),
    recall, peak RSS."""
    if not rows:
        return []
    out = [
        "",
        "**similar --all** (the bench_similar run; k = 10; each part in its own process; "
        "projected: the whole vocabulary's time from a random sample of queries):",
        "",
    ]
    names = {
        "exact": "ours, exact",
        "tiles": "ours, --method tiles (10% of the tiles)",
        "ivf": "ours, faiss IVF (build included)",
        "hnsw": "ours, faiss HNSW (build included)",
        "faiss": "faiss IndexFlatIP, exact (best of 1 and 2 threads)",
        "implicit": "implicit similar_items (cosine)",
        "lookup": "one ASIN from the saved IVF index",
    }
    return out + table(
        ["part", "vocabulary", "queries", "seconds", "whole table, s", "recall@10", "peak RSS MiB"],
        [
            [
                names[r["part"]],
                f"{r['vocab']:,}",
                f"{r['queries']:,}" if "queries" in r else "1",
                r.get("seconds", f"{r.get('lookup_ms')} ms after a {r.get('load_seconds')} s load"),
                r.get("projected_seconds", r.get("seconds", "")),
                r.get("recall_at_10", ""),
                r["peak_rss_mb"],
            ]
            for r in rows
        ],
    )


def _days(results: list[dict]) -> str:
    """When the results were measured: one day, or each day with the kinds run on it."""
    days: dict[str, list[str]] = {}
    for r in results:
        kinds = days.setdefault(r["date"], [])
        if r["bench"] not in kinds:
            kinds.append(r["bench"])
    if len(days) == 1:
        return f"on {next(iter(days))}"
    return "on " + "; ".join(f"{day} ({', '.join(kinds)})" for day, kinds in sorted(days.items()))


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.4f}"


def render_compare(results: list[dict]) -> list[str]:
    """Per catalog: popularity, the project's variants and the tuned ALS and BPR, both protocols."""
    out = []
    for catalog in dict.fromkeys(_catalog(r) for r in sorted(results, key=lambda r: r["products"])):
        here = [r for r in results if _catalog(r) == catalog]
        products = here[0]["products"]
        out += [
            "",
            f"**Quality against tuned ALS and BPR** ({catalog}; ROC-AUC over "
            "all val rows, and over the seen and cold rows under the products protocol; the "
            "same train pairs and val positives under both negative "
            "protocols; ALS and BPR: the best grid point and scorer for each protocol, "
            "refitted with the second seed; our variants at their defaults, `+side` with "
            "brand, category and price):",
            "",
        ]
        rows, seen = [], set()
        for r in here:
            if r["method"] in ("als", "bpr") and not r["best"]:
                continue
            key = (r["method"], json.dumps(r["config"]), r["scorer"])
            if key in seen:
                continue
            seen.add(key)
            same = [x for x in here if (x["method"], json.dumps(x["config"]), x["scorer"]) == key]
            config = (
                r["config"]
                if isinstance(r["config"], str)
                else ", ".join(f"{k} {v:g}" for k, v in r["config"].items())
            )
            rows.append(
                [
                    r["method"],
                    config,
                    r["scorer"],
                    " / ".join(f"{x['auc_products']:.4f}" for x in same),
                    _mean([x["auc_products"] for x in same]),
                    " / ".join(f"{x['auc_occurrences']:.4f}" for x in same),
                    _mean([x["auc_occurrences"] for x in same]),
                    _parts(same),
                    " / ".join(str(x.get("fit_seconds", "–")) for x in same),
                ]
            )
        out += table(
            [
                "method",
                "configuration",
                "scorer",
                "products, per seed",
                "products, mean",
                "occurrences, per seed",
                "occurrences, mean",
                "products: seen / cold, mean",
                "fit s",
            ],
            rows,
        )
        for method in ("als", "bpr"):
            out += _grid_details(method, products, [r for r in here if r["method"] == method])
    return out


def _catalog(result: dict) -> str:
    """The catalog a compare line measured (lines before 2026-12-07 name its size alone)."""
    return result.get("catalog") or f"{result['products']:,}-product catalog"


def _parts(same: list[dict]) -> str:
    """The mean AUC over the seen rows and over the cold rows (products protocol)."""
    means = []
    for part in ("seen", "cold"):
        values = [x.get(f"auc_products_{part}") for x in same]
        means.append("–" if None in values else _mean(values))
    return " / ".join(means)


def _grid_details(method: str, products: int, fits: list[dict]) -> list[str]:
    """A folded table of every grid point of ``method`` at the first seed."""
    if not fits:
        return []
    first = min(r["seed"] for r in fits)
    grid = [r for r in fits if r["seed"] == first]
    keys = list(grid[0]["config"])
    out = [
        "",
        f"<details><summary>The whole {method.upper()} grid at {products:,} products "
        "(first seed)</summary>",
        "",
    ]
    out += table(
        [*(k.replace("_", " ") for k in keys), "scorer", "products", "occurrences", "fit s"],
        [
            [
                *(r["config"][k] for k in keys),
                r["scorer"],
                r["auc_products"],
                r["auc_occurrences"],
                r["fit_seconds"],
            ]
            for r in grid
        ],
    )
    return [*out, "", "</details>"]


def render_tune(results: list[dict]) -> list[str]:
    if not results:
        return []
    out = [
        "",
        f"**The tuning grid** ({results[0]['products']:,} products, MF with bias, continuous "
        "labels; each row changes one setting from the defaults; seed "
        f"{', '.join(sorted({str(r['seed']) for r in results}))}):",
        "",
    ]
    rows = [
        [
            ", ".join(f"{k} {v}" for k, v in r["change"].items()) or "**defaults**",
            r["auc_products"],
            r["auc_occurrences"],
            r["train_seconds"],
        ]
        for r in results
    ]
    return out + table(["change", "AUC products", "AUC occurrences", "train s"], rows)


def render_busy(results: list[dict]) -> list[str]:
    if not results:
        return []
    out = [
        "",
        f"**On a busy machine** ({results[0]['products']:,} products; 0, 1 or 2 other "
        "processes spinning on the 2 cores):",
        "",
    ]
    loads = sorted({r["load"] for r in results})
    steps = dict.fromkeys(r.get("step", "fused") for r in results if r["what"] == "train")
    picks = [
        (f"train ({step} step), {label}, samples/s", "train", step, threads)
        for step in steps
        for label, threads in (
            ("threads chosen by measurement (default)", "chosen"),
            ("2 threads", "2"),
            ("1 thread", "1"),
        )
    ]
    picks += [
        ("similar, 1,000 lookups, s", "similar", None, None),
        ("pairs stage, s", "pairs", None, None),
    ]
    rows = []
    for label, what, step, threads in picks:
        cells = []
        for load in loads:
            found = [
                r
                for r in results
                if (r["what"], r["load"], r.get("threads")) == (what, load, threads)
                and (step is None or r.get("step", "fused") == step)
            ]
            cells.append(_mean_and_range([r.get("samples_per_s") or r["seconds"] for r in found]))
        rows.append([label, *cells])
    return out + table(["", *(f"{n} busy" for n in loads)], rows)


def _mean_and_range(values: list) -> str:
    """ "mean (lowest-highest)" of repeated measurements, or the one value, or "–"."""
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if isinstance(values[0], int):
        text = f"{round(mean):,}"
        return text + (f" ({min(values):,}-{max(values):,})" if len(values) > 1 else "")
    return f"{mean:.2f}"


def render_side(results: list[dict]) -> list[str]:
    """Side information: mean AUCs over the seeds, all, seen and cold rows, both protocols."""
    if not results:
        return []
    first = results[0]
    out = [
        "",
        f"**Side information** ({first['products']:,} products, MF with bias at its defaults; "
        f"ROC-AUC, mean of seeds {', '.join(sorted({str(r['seed']) for r in results}))}; "
        f"{first['cold_rows']:,} of {first['val_rows']:,} val rows are cold):",
        "",
    ]
    columns = [
        (f"{rows} {protocol}", f"auc_{rows}_{protocol}")
        for protocol in ("products", "occurrences")
        for rows in ("all", "seen", "cold")
    ]
    rows = []
    for side in dict.fromkeys(r["side_info"] for r in results):
        runs = [r for r in results if r["side_info"] == side]
        cells = [_mean([r[key] for r in runs]) for _, key in columns]
        speed = f"{round(sum(r['samples_per_s'] for r in runs) / len(runs)):,}"
        rows.append([side, *cells, speed])
    return out + table(["side info", *(name for name, _ in columns), "samples/s"], rows)


def render_walks(results: list[dict]) -> list[str]:
    walked = [r for r in results if r["what"] == "walks"]
    learned = [r for r in results if r["what"] == "skipgram"]
    out = []
    if walked:
        out += ["", "**Walks** (10 walks of 20 products from each product with a train pair):", ""]
        out += table(
            ["products", "weighted", "walks", "steps", "seconds", "steps/s", "peak RSS MiB"],
            [
                [
                    f"{r['products']:,}",
                    "yes" if r["weighted"] else "no",
                    f"{r['walks']:,}",
                    f"{r['steps']:,}",
                    r["seconds"],
                    f"{r['steps_per_s']:,}",
                    r["peak_rss_mb"],
                ]
                for r in walked
            ],
        )
    if learned:
        seeds = ", ".join(sorted({str(r["seed"]) for r in learned}))
        out += [
            "",
            f"**Skip-gram against gensim's Word2Vec** ({learned[0]['products']:,} products; the "
            "same uniform walks; one epoch, window 5, 5 negatives, dim 32, no subsampling; "
            f"ROC-AUC over all val rows and over the cold ones, mean of seeds {seeds}; "
            "seconds and tokens/s, mean of the seeds):",
            "",
        ]
        keys = ["auc_products", "auc_occurrences", "auc_cold_products", "auc_cold_occurrences"]
        rows = []
        for method, scorer in dict.fromkeys((r["method"], r["scorer"]) for r in learned):
            runs = [r for r in learned if (r["method"], r["scorer"]) == (method, scorer)]
            seconds = sum(r["seconds"] for r in runs) / len(runs)
            speed = round(sum(r["tokens_per_s"] for r in runs) / len(runs))
            cells = [_mean([r[key] for r in runs]) for key in keys]
            rows.append([method, scorer, *cells, f"{seconds:.1f}", f"{speed:,}"])
        out += table(
            [
                "method",
                "scorer",
                "AUC products",
                "AUC occurrences",
                "cold products",
                "cold occurrences",
                "seconds",
                "tokens/s",
            ],
            rows,
        )
    return out


def render_epoch(results: list[dict]) -> list[str]:
    """Walks and one skip-gram epoch end to end (the make targets' settings)."""
    if not results:
        return []
    out = [
        "",
        "**Walks and one skip-gram epoch, end to end** (uniform walks, then the make targets' "
        "skip-gram: shared negatives, batches of 8,192; each in a process of its own):",
        "",
    ]
    return out + table(
        [
            "products",
            "walks seconds",
            "walks peak RSS MiB",
            "epoch seconds",
            "tokens/s",
            "samples/s",
            "epoch peak RSS MiB",
            "AUC all",
        ],
        [
            [
                f"{r['products']:,}",
                r["walks_seconds"],
                r["walks_peak_rss_mb"],
                r["train_seconds"],
                f"{r['tokens_per_s']:,}",
                f"{r['samples_per_s']:,}",
                r["train_peak_rss_mb"],
                r["auc_all"],
            ]
            for r in results
        ],
    )


def render_ratings(results: list[dict]) -> list[str]:
    """The ratings stages at scale: seconds, throughput, peak RSS."""
    if not results:
        return []
    first = results[0]
    out = [
        "",
        f"**Ratings stages** (a synthetic Amazon reviews file, JSON lines, gzipped: "
        f"{first['ratings']:,} ratings of {first['users']:,} users on {first['items']:,} items; "
        "each stage in a process of its own):",
        "",
    ]
    rows = []
    for r in results:
        what = f"split-ratings ({r['split']})" if r["stage"] == "split-ratings" else r["stage"]
        speed = r.get("lines_per_s") or r.get("ratings_per_s") or r.get("samples_per_s")
        rows.append([what, r["seconds"], f"{speed:,}", r["peak_rss_mb"]])
    out += table(["stage", "seconds", "lines or ratings/s", "peak RSS MiB"], rows)
    for r in results:
        if "rmse" in r:
            out += [
                "",
                f"`{r['stage']}` on {r['train_ratings']:,} ratings (about 2.5 a user): val "
                f"RMSE {r['rmse']:.4f}, the global mean's {r['global_mean_rmse']:.4f}.",
            ]
    return out


def render_movielens(results: list[dict]) -> list[str]:
    """The rating models against Surprise on MovieLens (bench_movielens.py)."""
    folds = [r for r in results if "rmse_each" in r]
    u1 = [r for r in results if r.get("dataset") == "ml-100k u1"]
    small = [r for r in results if r.get("dataset") == "ml-latest-small 80/20"]
    if not folds:
        return []
    out = [
        "",
        f"**Rating models against Surprise, {folds[0]['dataset']}** (MovieLens 100K, the same "
        "folds for every method; each method's grid tried on fold 1, its best point then run "
        "on every fold; ours at a fixed 20 epochs, cosine schedule, one thread):",
        "",
    ]
    rows = [
        [
            r["method"],
            ", ".join(f"{k} {v}" for k, v in r["settings"].items()),
            r["grid_points"],
            f"{r['rmse']:.4f}",
            f"{r['rmse_spread']:.4f}",
            f"{r['mae']:.4f}",
            r["fit_seconds"],
        ]
        for r in sorted(folds, key=lambda r: r["rmse"])
    ]
    out += table(["method", "best point", "grid", "RMSE", "fold spread", "MAE", "fit s"], rows)
    out += _movielens_u1(u1)
    if small:
        seeds, by_method = _by_method_and_seed(small)
        out += [
            "",
            "**MovieLens latest-small**, random 80/20 splits (seeds "
            + ", ".join(map(str, seeds))
            + "), each method at the point ML-100K chose; the article's MSE 0.784 is an RMSE "
            "of 0.885:",
            "",
        ]
        rows = []
        for method, of_seed in by_method.items():
            rmse = [of_seed[s]["rmse"] for s in seeds]
            mse = sum(of_seed[s]["mse"] for s in seeds) / len(seeds)
            rows.append([method, *[f"{x:.4f}" for x in rmse], f"{mse:.4f}"])
        out += table(["method", *[f"RMSE seed {s}" for s in seeds], "mean MSE"], rows)
    return out


def _by_method_and_seed(results: list[dict]) -> tuple[list[int], dict[str, dict]]:
    """The seeds of ``results``, and each method's result by seed, the best first (by the
    sum of RMSEs)."""
    by_method: dict[str, dict] = {}
    for r in results:
        by_method.setdefault(r["method"], {})[r["seed"]] = r
    best_first = sorted(by_method.items(), key=lambda kv: sum(r["rmse"] for r in kv[1].values()))
    return sorted({r["seed"] for r in results}), dict(best_first)


def _movielens_u1(results: list[dict]) -> list[str]:
    """MovieLens 100K's u1 split, each method at its 5-fold point, beside the published."""
    if not results:
        return []
    seeds, by_method = _by_method_and_seed(results)
    out = [
        "",
        "**MovieLens 100K's u1 split** (u1.test: u.data's first 20,000 lines, as the archive's "
        "mku.sh cuts it; each method at its 5-fold best point, seeds "
        + ", ".join(map(str, seeds))
        + "). Published on u1: GC-MC 0.910, 0.905 with side features (Berg, Kipf, Welling "
        "2017, Table 3); GLocal-K 0.889 (Han et al. 2021):",
        "",
    ]
    rows = []
    for method, of_seed in by_method.items():
        rmse = [of_seed[s]["rmse"] for s in seeds]
        mae = [of_seed[s]["mae"] for s in seeds]
        rows.append([method, *[f"{x:.4f}" for x in rmse], _mean(rmse), _mean(mae)])
    return out + table(["method", *[f"RMSE seed {s}" for s in seeds], "mean", "MAE"], rows)


def render_movielens_speed(results: list[dict]) -> list[str]:
    """mf_bias on each step against Surprise's SVD (bench_movielens.py --speed)."""
    if not results:
        return []
    out = [
        "",
        "**Ratings a second against Surprise** (MovieLens 100K, fold 1, 32 factors, 20 "
        "epochs; seeds 42 and 43):",
        "",
    ]
    rows = []
    for key in dict.fromkeys((r["method"], r.get("threads", 1)) for r in results):
        mine = [r for r in results if (r["method"], r.get("threads", 1)) == key]
        rmse = _mean([r["rmse"] for r in mine])
        rows.append([*key, _mean_and_range([r["ratings_per_s"] for r in mine]), rmse])
    return out + table(["method", "threads", "ratings/s", "RMSE"], rows)


def render_sequences(results: list[dict]) -> list[str]:
    """Sequence models against mf_bias and the next-item baselines (bench_sequences.py)."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in results if "dataset" in r):
        mine = [r for r in results if r.get("dataset") == dataset]
        rating = sorted((r for r in mine if r["task"] == "rating"), key=lambda r: r["rmse"])
        chosen = (
            "each method's grid picked by val RMSE"
            if dataset.startswith("MovieLens")
            else ("each method at the point MovieLens 100K chose")
        )
        out += [
            "",
            f"**Sequence models, {dataset}: the next rating** (split by time, each user's latest "
            f"20% in val; {chosen}; mean of seeds 42 and 43; 20 epochs; speed is measured apart, "
            "below):",
            "",
        ]
        out += table(
            ["method", "settings", "RMSE (each seed)", "MAE", "global mean RMSE"],
            [
                [
                    r["method"],
                    _settings_text(r),
                    f"{r['rmse']:.4f} ({', '.join(f'{x:.4f}' for x in r['rmse_each'])})",
                    f"{r['mae']:.4f}",
                    f"{r['global_mean_rmse']:.4f}",
                ]
                for r in rating
            ],
        )
        nexts = sorted(
            (r for r in mine if r["task"] == "next-item"), key=lambda r: -r["test_ndcg10"]
        )
        out += [
            "",
            f"**{dataset[0].upper()}{dataset[1:]}: the next item** (leave-one-out, each target "
            "ranked against every "
            "item, the user's history left out; picked by val NDCG@10; test figures the mean "
            "of seeds 42 and 43 for the networks):",
            "",
        ]
        out += table(
            ["method", "settings", "HR@10", "NDCG@10", "val HR@10", "val NDCG@10"],
            [
                [
                    r["method"],
                    _settings_text(r),
                    f"{r['test_hr10']:.4f}",
                    f"{r['test_ndcg10']:.4f}",
                    f"{r['val_hr10']:.4f}",
                    f"{r['val_ndcg10']:.4f}",
                ]
                for r in nexts
            ],
        )
    speed = [r for r in results if "stage" in r]
    if speed:
        out += [
            "",
            f"**Sequence stages at Amazon Books' size** ({speed[0]['ratings']:,} synthetic "
            "ratings of 8M users on 2M items; each in a process of its own; the trainings' "
            "speed there: [Sequence models, Measured](sequences.md#measured)):",
            "",
        ]
        rows = []
        for r in speed:
            rate = (
                f"{r['runs_per_s']:,} runs, {r['samples_per_s']:,} positions"
                if "runs_per_s" in r
                else "–"
            )
            rows.append([r["stage"], r.get("train_seconds", r["seconds"]), rate, r["peak_rss_mb"]])
        out += table(["stage", "seconds", "per second", "peak RSS MiB"], rows)
    return out


def render_recbole(results: list[dict]) -> list[str]:
    """The next item against RecBole's own models on its split of ml-100k (bench_recbole.py):
    each method at its chosen point, per seed."""
    chosen = [r for r in results if r["part"] == "seed"]
    if not chosen:
        return []
    out = [
        "",
        "**MovieLens 100K, RecBole 1.2.1's sequential split** (leave-one-out by time; every "
        "method ranked by the project's ranker against all items, the history left out, and "
        "kept in as RecBole's own full sort does for sequence models; RecBole's evaluator's "
        "test figures beside; one thread; [Against RecBole](sequences.md#against-recbole)):",
        "",
    ]
    rows = []
    for r in sorted(chosen, key=lambda r: (-r["test_ndcg10"], r["seed"])):
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items())
        rows.append(
            [
                f"{r['side']} {r['method']}",
                f"{settings} ({r['grid_points']} point{'s' if r['grid_points'] > 1 else ''})",
                r["seed"],
                *(f"{r[k]:.4f}" for k in ("test_hr10", "test_ndcg10", "val_ndcg10")),
                *(f"{r['unmasked_' + k]:.4f}" for k in ("test_hr10", "test_ndcg10")),
                f"{r['recbole_test_hr10']:.4f}" if "recbole_test_hr10" in r else "–",
                r["epochs"],
                r["train_seconds"],
            ]
        )
    header = ["method", "settings", "seed", "HR@10", "NDCG@10", "val NDCG@10"]
    header += ["HR@10 kept in", "NDCG@10 kept in", "RecBole's HR@10", "epochs", "train s"]
    return out + table(header, rows)


def render_kernels(results: list[dict]) -> list[str]:
    """The compiled-kernel candidates (bench_kernels.py): per candidate, the repeats' mean
    and range of samples/s on one thread."""
    if not results:
        return []
    out = [
        "",
        "**Step kernels** (MF with bias, dim 32, 100,000 products, 2,048 anchors with a "
        "positive and 5 negatives a step, one thread; each kernel's weights checked against "
        "the torch step's after three steps; first call: the JIT or the build, cached on "
        "disk after a machine's first run):",
        "",
    ]
    rows = []
    for candidate in dict.fromkeys(r["candidate"] for r in results):
        mine = [r["samples_per_s"] for r in results if r["candidate"] == candidate]
        first = next(r for r in results if r["candidate"] == candidate)
        rows.append(
            [
                candidate,
                f"{round(sum(mine) / len(mine)):,}",
                f"{min(mine):,} – {max(mine):,}",
                f"{first['first_call_seconds']:.1f}",
                f"{first['max_weight_difference']:.1e}",
            ]
        )
    header = ["kernel", "samples/s", "range", "first call s", "weights vs torch"]
    return out + table(header, rows)


def render_steps(results: list[dict]) -> list[str]:
    """The kernel step against the torch fused step (bench_steps.py): samples/s, the
    repeats' mean and range, per catalog, dim, step and thread count."""
    if not results:
        return []
    out = [
        "",
        "**The training steps** (MF with bias, binary labels, 2,048 anchors with a positive "
        "and 5 negatives a step, uniform products; the step alone, no stream):",
        "",
    ]
    rows = []
    for key in dict.fromkeys((r["products"], r["dim"], r["step"], r["threads"]) for r in results):
        mine = [
            r["samples_per_s"]
            for r in results
            if (r["products"], r["dim"], r["step"], r["threads"]) == key
        ]
        rows.append([f"{key[0]:,}", key[1], key[2], key[3], _mean_and_range(mine)])
    return out + table(["products", "dim", "step", "threads", "samples/s"], rows)


def render_distributed(results: list[dict]) -> list[str]:
    """One process against two (bench_distributed.py): per setup, the seeds' mean."""
    if not results:
        return []
    first = results[0]
    out = [
        "",
        f"**Data-parallel training** ({first['products']:,} products, mf_bias, "
        f"{first['epochs']} epoch{'s' if first['epochs'] != 1 else ''}, the same rows a step "
        "in each setup; mean of seeds "
        f"{' and '.join(str(s) for s in sorted({r['seed'] for r in results}))}; exchange: "
        "rank 0's seconds waiting for the other rank's header, then moving and summing the "
        "gradient rows):",
        "",
    ]
    rows = []
    for setup in dict.fromkeys(r["setup"] for r in results):
        mine = [r for r in results if r["setup"] == setup]
        mean = {
            k: sum(r[k] for r in mine) / len(mine)
            for k in ("auc_all", "samples_per_s", "train_seconds", "peak_rss_mb")
        }
        exchange = "–"
        if "exchange_wait_seconds" in mine[0]:
            wait = sum(r["exchange_wait_seconds"] for r in mine) / len(mine)
            moved = sum(r["exchange_transfer_seconds"] for r in mine) / len(mine)
            volume = sum(r["exchange_mb_per_step"] for r in mine) / len(mine)
            exchange = f"{wait:.1f} s wait, {moved:.1f} s transfer, {volume:.2f} MB a step"
        rows.append(
            [
                setup,
                " / ".join(f"{r['auc_all']:.4f}" for r in mine),
                f"{round(mean['samples_per_s']):,}",
                f"{mean['train_seconds']:.1f}",
                exchange,
                round(mean["peak_rss_mb"]),
            ]
        )
    header = ["setup", "AUC (each seed)", "samples/s", "train s", "exchange", "peak RSS MiB"]
    return out + table(header, rows)


def render_spark(results: list[dict]) -> list[str]:
    """The data stages on Spark against polars (bench_spark.py), and whether they agree."""
    stages = [r for r in results if r["engine"] in ("polars", "spark")]
    if not stages:
        return []
    first = stages[0]
    master = next(r["master"] for r in stages if r["master"])
    out = [
        "",
        f"**The data stages on Spark `{master}` against polars** ({first['products']:,} "
        f"products, a {first['raw_mb']} MB 2014-format file; each stage one command, as "
        "`make ENGINE=spark` runs it, so Spark's seconds include starting its JVM; peak RSS "
        "of the whole process tree: driver, JVM and Python workers):",
        "",
    ]
    rows = []
    for stage in dict.fromkeys(r["stage"] for r in stages):
        by = {r["engine"]: r for r in stages if r["stage"] == stage}
        rows.append(
            [
                stage,
                f"{by['polars']['wall_seconds']:.1f}",
                f"{by['spark']['wall_seconds']:.1f}",
                round(by["polars"]["peak_tree_rss_mb"]),
                round(by["spark"]["peak_tree_rss_mb"]),
            ]
        )
    header = ["stage", "polars s", "Spark s", "polars peak MiB", "Spark peak MiB"]
    out += table(header, rows)
    for r in results:
        if r["engine"] == "both":
            same = [name for name, equal in r["equal"].items() if equal]
            differ = [name for name, equal in r["equal"].items() if not equal]
            out += [
                "",
                f"Equal files from both engines: {', '.join(same) or 'none'}"
                + (f"; different: {', '.join(differ)}" if differ else "")
                + ".",
            ]
    moved = [r for r in results if r["engine"] == "volumes"]
    if moved:
        out += [
            "",
            "Bytes Spark moved (its monitoring API; the basis of the cluster projection):",
            "",
        ]
        rows = [
            [
                r["stage"],
                f"{r['rows']:,}",
                f"{r['shuffle_write_bytes'] / 1e6:,.0f}",
                f"{r['shuffle_write_bytes'] / r['rows']:.0f}",
                f"{r['output_bytes'] / 1e6:,.0f}",
            ]
            for r in moved
        ]
        out += table(["stage", "rows", "shuffle MB", "shuffle bytes a row", "written MB"], rows)
    return out


def _settings_text(r: dict) -> str:
    settings = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in r.get("settings", {}).items())
    edge = f" (at grid edge: {', '.join(r['at_edge'])})" if r.get("at_edge") else ""
    return (settings or "–") + edge


def rewrite_performance(section: str, path: Path = PERFORMANCE) -> None:
    """Put ``section`` between the markers of ``path``, keeping the text around them."""
    text = path.read_text()
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        sys.exit(f"{path}: no {BEGIN} ... {END} markers to rewrite between")
    path.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated kinds to rerun (default: all)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite docs/performance.md from the saved results only",
    )
    args = parser.parse_args()
    if args.render_only and not RESULTS.exists():
        sys.exit(f"{RESULTS}: no saved results to render; run make bench first")
    kept = (
        [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    )
    if not args.render_only:
        kinds = set(args.only.split(",")) if args.only else {name for name, _ in RUNS}
        kept = run(kinds, kept)
    rewrite_performance(render(kept))


if __name__ == "__main__":
    main()
