"""Benchmark training: samples/s, peak RSS and AUC per variant.

    python tests/bench/bench_train.py --products 500000 --dims 32,128 --epochs 5

Builds the dataset through the real stages (synth, parse, pairs, split; cached
in --workdir), trains each variant in a fresh process and prints one JSON
line per run from its summary.json. The comparison with other tools is
bench_compare.py's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["mf-binary", "mf-continuous", "mf_bias-binary", "mf_bias-continuous"]
SIDE_FEATURES = "brand,category,price"


def dataset(products: int, workdir: Path) -> Path:
    """The stage-3 files of a synthetic catalog of ``products``, built once."""
    data = workdir / f"synthetic-{products}"
    if (data / "split.json").exists():
        return data
    raw = data / "raw" / "catalog.json.gz"
    _stages(
        ["synth", str(raw), "--products", str(products)],
        ["parse", str(raw), "--out", str(data)],
        ["pairs", str(data)],
        ["split", str(data)],
    )
    return data


def real_dataset(raw: Path, workdir: Path) -> Path:
    """The stage-3 files and walks of a real metadata file (``../shared/data``'s samples),
    built once, in a folder named after the file."""
    data = workdir / f"real-{raw.name.split('.')[0]}"
    if (data / "walks.json").exists():
        return data
    _stages(
        ["parse", str(raw), "--out", str(data)],
        *([stage, str(data)] for stage in ("pairs", "split", "walks")),
    )
    return data


def _stages(*commands: list[str]) -> None:
    """Run ``python -m pipeline COMMAND --quiet`` for each command, in turn."""
    for command in commands:
        subprocess.run(
            [sys.executable, "-m", "pipeline", *command, "--quiet"],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )


def catalog_parser(doc: str, products: int) -> argparse.ArgumentParser:
    """A bench's command line with the catalog :func:`dataset` builds: --products, --workdir."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--products", type=int, default=products)
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench")
    return parser


def train_run(data: Path, variant: str, name: str, **options) -> dict:
    """Train ``variant`` as run ``name`` in a fresh process; its summary.json.

    ``options``: TrainConfig fields to set (dim, epochs, seed, ...); the rest
    keep their defaults. A variant ending in ``+side`` adds the side information
    (brand, category, price).
    """
    variant, side = variant.removesuffix("+side"), variant.endswith("+side")
    model, labels = variant.split("-")
    if side:
        options = {**options, "side_info": SIDE_FEATURES}
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    command = ["-m", "recsys_stream", "train", str(data), "--model", model, "--labels", labels]
    subprocess.run(
        [sys.executable, *command, *flags, "--name", name, "--quiet"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return json.loads((data / "runs" / name / "summary.json").read_text())


def train(data: Path, variant: str, dim: int, epochs: int) -> dict:
    s = train_run(data, variant, f"bench-{variant}-{dim}-{epochs}", dim=dim, epochs=epochs)
    return {
        "bench": "train",
        "products": int(data.name.split("-")[1]),
        "variant": variant,
        "dim": dim,
        "epochs": epochs,
        "vocab": s["vocab_size"],
        "auc_all": round(s["auc_all"], 4),
        "auc_seen": round(s["auc_seen"], 4),
        "pr_auc": round(s["pr_auc"], 4),
        "popularity_auc_seen": round(s["popularity_auc_seen"], 4),
        "samples_per_s": s["samples_per_s"],
        "train_seconds": s["train_seconds"],
        "seconds": s["seconds"],
        "peak_rss_mb": s["peak_rss_mb"],
    }


def main() -> None:
    parser = catalog_parser(__doc__, 500_000)
    parser.add_argument("--dims", default="32")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    data = dataset(args.products, args.workdir)
    for dim in map(int, args.dims.split(",")):
        for variant in args.variants.split(","):
            print(json.dumps(train(data, variant, dim, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
