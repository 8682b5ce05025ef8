"""The whole chain on a small synthetic catalog, and `make demo` on a fresh copy."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import DIGITAL_MUSIC_2014
from repo import fresh_copy, make

from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.split import split
from pipeline.synth import generate
from recsys_stream.config import TrainConfig
from recsys_stream.train import train

VARIANTS = ["mf-binary", "mf-continuous", "mf_bias-binary", "mf_bias-continuous"]


def test_parse_pairs_split_train(tmp_path):
    raw = tmp_path / "raw" / "catalog.json.gz"
    generate(raw, 20_000, fmt="py", messy=True, quiet=True)
    parsed = parse(raw, tmp_path, workers=1, quiet=True)
    assert parsed["lines"] == parsed["products"] + parsed["duplicates"] + parsed["rejected"]
    assert parsed["rejected"] > 0 and parsed["duplicates"] > 0
    pairs = build_pairs(tmp_path, quiet=True)
    split_stats = split(tmp_path, quiet=True)
    assert split_stats["train"] + split_stats["val_positives"] == pairs["pairs"]
    summary = train(tmp_path, TrainConfig(epochs=2, batch_size=256, eval_every=50), quiet=True)
    assert summary["auc_all"] > 0.75
    assert summary["auc_all"] > summary["popularity_auc"] + 0.1


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_demo_on_a_fresh_copy(tmp_path):
    copy = fresh_copy(tmp_path)
    settings = ["DEMO_PRODUCTS=3000", "EPOCHS=1", "QUIET=1"]
    first = make(copy, "demo", *settings)
    assert first.returncode == 0, first.stderr[-2000:]
    data = copy / "data" / "demo"
    for name in [
        "raw/synthetic-3000.json.gz",
        "products.parquet",
        "rejects.jsonl",
        "parse.json",
        "vocab.parquet",
        "pairs.parquet",
        "pairs.json",
        "train.parquet",
        "val.parquet",
        "split.json",
        "report.md",
        "figures/learning_curves.png",
        "figures/precision_recall.png",
        "figures/roc.png",
    ]:
        assert (data / name).is_file(), name
    for variant in VARIANTS:
        for name in ["model.pt", "metrics.csv", "pr.csv", "summary.json", "embeddings.parquet"]:
            assert (data / "runs" / variant / name).is_file(), (variant, name)
        assert json.loads((data / "runs" / variant / "summary.json").read_text())["epochs"] == 1
    report = (data / "report.md").read_text()
    assert all(f"| {variant} |" in report for variant in VARIANTS)

    again = make(copy, "demo", *settings)
    assert again.returncode == 0
    assert "python" not in again.stdout and "is up to date" in again.stdout

    (data / "raw" / "synthetic-3000.json.gz").touch()
    rerun = make(copy, "-n", "data/demo/report.md", *settings)
    assert "pipeline parse" in rerun.stdout and "recsys_stream report" in rerun.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_electronics_on_a_local_real_2014_file(tmp_path, shared_sample):
    raw = shared_sample(DIGITAL_MUSIC_2014)  # real 2014 records, Python literals
    copy = fresh_copy(tmp_path)
    settings = [f"RAW={raw}", "EPOCHS=1", "QUIET=1"]
    done = make(copy, "electronics", *settings)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fetching" not in done.stdout + done.stderr  # RAW= is used, nothing is downloaded
    data = copy / "data" / "electronics"
    parsed = json.loads((data / "parse.json").read_text())
    assert (parsed["format"], parsed["lines"], parsed["products"]) == ("py", 7419, 7419)
    report = (data / "report.md").read_text()
    assert all(f"| {variant} |" in report for variant in VARIANTS)
    assert "is up to date" in make(copy, "electronics", *settings).stdout


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("curl") is None,
    reason="make or curl not installed",
)
def test_failed_download_says_where_to_put_the_file_and_leaves_nothing(tmp_path):
    copy = fresh_copy(tmp_path)
    # Port 9 (discard) on loopback: refused at once, no traffic leaves the machine.
    result = make(
        copy, "data/electronics/raw/meta_Electronics.json.gz", "AMAZON_2014=http://127.0.0.1:9"
    )
    assert result.returncode != 0
    assert "error: could not download http://127.0.0.1:9/meta_Electronics.json.gz" in result.stderr
    assert "RAW=/path/to/meta_Electronics.json.gz" in result.stderr
    assert list((copy / "data" / "electronics" / "raw").iterdir()) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_clean_keeps_raw_files(tmp_path):
    copy = fresh_copy(tmp_path)
    for name in [
        "demo/raw/synthetic-10.json.gz",
        "demo/products.parquet",
        "demo/runs/x/model.pt",
        "books/raw/meta_Books.json.gz",
        "books/report.md",
    ]:
        (copy / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / "data" / name).write_text("x")
    assert make(copy, "clean").returncode == 0
    left = sorted(
        str(p.relative_to(copy / "data")) for p in (copy / "data").rglob("*") if p.is_file()
    )
    assert left == ["books/raw/meta_Books.json.gz", "demo/raw/synthetic-10.json.gz"]
