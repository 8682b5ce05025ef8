"""Benchmark stage 1 (parse): MB/s, products/s and peak RSS for each format.

    python tests/bench/bench_parse.py --products 500000 [--formats py,json,json2018]

Generates an uncompressed synthetic catalog per format with ``pipeline synth``
(not timed), parses it with ``python -m pipeline parse`` in a fresh process
and prints one JSON line per format from the stage's own parse.json.
Targets: strict JSON >= 100 MB/s, Python literals >= 26 MB/s, peak RSS < 500 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(products: int, fmt: str, workdir: Path, workers: int | None) -> dict:
    raw = workdir / f"catalog-{products}.{fmt}.json"
    if not raw.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "synth",
                str(raw),
                "--products",
                str(products),
                "--format",
                fmt,
                "--quiet",
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    out = workdir / f"parsed-{products}-{fmt}"
    command = [sys.executable, "-m", "pipeline", "parse", str(raw), "--out", str(out), "--quiet"]
    if workers:
        command += ["--workers", str(workers)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    stats = json.loads((out / "parse.json").read_text())
    raw.unlink()  # large: keep only the newest catalog on disk
    return {
        "bench": "parse",
        "products": products,
        "format": fmt,
        "workers": stats["workers"],
        "mb": round(stats["bytes"] / 1e6),
        "seconds": stats["seconds"],
        "mb_per_s": stats["mb_per_s"],
        "products_per_s": round(stats["products"] / max(stats["seconds"], 1e-9)),
        "peak_rss_mb": stats["peak_rss_mb"],
        "worker_peak_rss_mb": stats["worker_peak_rss_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=500_000)
    parser.add_argument("--formats", default="py,json,json2018")
    parser.add_argument("--workers", type=int, help="default: the stage's default")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for fmt in args.formats.split(","):
            print(json.dumps(bench(args.products, fmt, Path(tmp), args.workers)), flush=True)


if __name__ == "__main__":
    main()
