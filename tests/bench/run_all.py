"""`make bench`: run every benchmark and rewrite the README's Performance section.

Each bench script prints JSON lines; this runs them in turn (nothing else
should load the machine meanwhile), keeps the lines in data/bench/results.jsonl
and renders them as tables between the README's performance markers.
"""

from __future__ import annotations

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
BEGIN, END = "<!-- performance:begin -->", "<!-- performance:end -->"

RUNS = [
    ("parse", ["bench_parse.py", "--products", "500000"]),
    ("parse", ["bench_parse.py", "--products", "2000000", "--formats", "py,json"]),
    ("pairs", ["bench_pairs.py", "--products", "500000"]),
    ("pairs", ["bench_pairs.py", "--products", "2000000"]),
    ("split", ["bench_split.py", "--pairs", "4000000", "--products", "450000"]),
    ("split", ["bench_split.py", "--pairs", "26600000", "--products", "2000000"]),
    ("train", ["bench_train.py", "--products", "500000", "--dims", "32", "--epochs", "5", "--als"]),
    ("train", ["bench_train.py", "--products", "500000", "--dims", "128", "--epochs", "1"]),
    ("train", ["bench_train.py", "--products", "2000000", "--dims", "32,128", "--epochs", "1"]),
    ("similar", ["bench_similar.py", "--products", "2000000"]),
]


def run() -> list[dict]:
    results = []
    for name, command in RUNS:
        print(f"bench: {' '.join(command)}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                results.append({"bench": name, **json.loads(line)})
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
        for kind in ("parse", "pairs", "split", "train", "als", "similar")
    }
    out = [f"Measured by `make bench` on {datetime.date.today()}: {machine()}.", ""]
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
    if of["als"]:
        out += ["", "implicit's ALS (15 iterations, one BLAS thread) on the same train split:", ""]
        out += table(
            ["products", "factors", "AUC all", "AUC seen", "fit seconds"],
            [
                [f"{r['products']:,}", r["dim"], r["auc_all"], r["auc_seen"], r["fit_seconds"]]
                for r in of["als"]
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
    return "\n".join(out)


def rewrite_readme(section: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")


def main() -> None:
    if "--render-only" in sys.argv:
        results = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    else:
        results = run()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("".join(json.dumps(r) + "\n" for r in results))
    rewrite_readme(render(results))


if __name__ == "__main__":
    main()
