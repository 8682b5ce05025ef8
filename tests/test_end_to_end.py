"""The whole chain on a small synthetic catalog, and `make demo` on a fresh copy."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import DIGITAL_MUSIC_2014, MAGAZINES_2018, write_lines
from repo import fresh_copy, make

from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.split import split
from pipeline.synth import generate
from pipeline.synth_ratings import generate_ratings
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train

pytestmark = pytest.mark.slow  # runs make

VARIANTS = [
    "mf-binary",
    "mf-continuous",
    "mf_bias-binary",
    "mf_bias-continuous",
    "skipgram-binary",
    "skipgram-side",
]


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
        "walks.parquet",
        "walks.json",
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
    assert "| walks |" in report
    skipgram = json.loads((data / "runs" / "skipgram-binary" / "summary.json").read_text())
    assert skipgram["config"]["shared_negatives"] == 32 and skipgram["epochs"] == 1
    side = json.loads((data / "runs" / "skipgram-side" / "summary.json").read_text())
    assert side["config"]["side_info"] == "brand,category,price" and side["auc_cold"] > 0.5

    again = make(copy, "demo", *settings)
    assert again.returncode == 0
    assert ran(again) == []  # nothing changed: nothing reruns, and one line says so
    assert (again.stdout, again.stderr) == ("report up to date: data/demo/report.md\n", "")

    # More epochs retrain without re-splitting, and continue the checkpoints.
    more = make(copy, "demo", "DEMO_PRODUCTS=3000", "EPOCHS=2", "QUIET=1")
    assert more.returncode == 0, more.stderr[-2000:]
    assert ran(more) == ["train"] * 6 + ["report"]
    summaries = [json.loads((data / "runs" / v / "summary.json").read_text()) for v in VARIANTS]
    assert all((s["epochs"], s["parts"]) == (2, 2) for s in summaries)
    # Another val share re-splits and retrains; another catalog size reparses.
    resplit = make(copy, "demo", "DEMO_PRODUCTS=3000", "EPOCHS=2", "QUIET=1", "VAL_PROP=0.5")
    assert ran(resplit) == ["split"] + ["train"] * 4 + ["walks", "train", "train", "report"]
    assert json.loads((data / "split.json").read_text())["val_prop"] == 0.5
    smaller = make(copy, "demo", "DEMO_PRODUCTS=2000", "EPOCHS=1", "QUIET=1")
    assert ran(smaller)[:3] == ["synth", "parse", "pairs"]
    assert json.loads((data / "parse.json").read_text())["products"] == 2000

    (data / "raw" / "synthetic-2000.json.gz").touch()  # a newer raw file reruns everything
    rerun = make(copy, "-n", "data/demo/report.md", "DEMO_PRODUCTS=2000", "EPOCHS=1")
    assert "pipeline parse" in rerun.stdout and "recsys_stream report" in rerun.stdout


def ran(done) -> list[str]:
    """The stages a make run started, in order."""
    found = []
    for line in done.stdout.splitlines():
        words = line.split()
        if "-m" in words and words[words.index("-m") + 1] in ("pipeline", "recsys_stream"):
            found.append(words[words.index("-m") + 2])
    return found


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
    unchanged = make(copy, "electronics", *settings)
    assert unchanged.stdout == "report up to date: data/electronics/report.md\n"
    other = shared_sample(MAGAZINES_2018)  # another RAW: everything reruns
    again = make(copy, "electronics", f"RAW={other}", "EPOCHS=1", "QUIET=1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert ran(again)[:3] == ["parse", "pairs", "split"]
    assert json.loads((data / "parse.json").read_text())["format"] == "json2018"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_a_missing_or_spaced_raw_file_is_one_error_line(tmp_path):
    copy = fresh_copy(tmp_path)
    missing = make(copy, "electronics", f"RAW={tmp_path / 'nope.json.gz'}")
    assert missing.returncode != 0
    assert missing.stderr.splitlines()[0] == f"error: RAW={tmp_path / 'nope.json.gz'}: no such file"
    assert "No rule to make target" not in missing.stderr
    spaced = make(copy, "electronics", "RAW=/tmp/my file.json.gz")
    assert spaced.returncode != 0
    assert spaced.stderr.splitlines()[0].startswith(
        "error: RAW='/tmp/my file.json.gz' holds a space"
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_sequences_on_planted_sequences_then_nothing_then_what_changed(tmp_path):
    """Planted order: the LSTM's next item beats popularity; MAX_LENGTH reruns only
    the sequences stage, the sequence models and the report."""
    copy = fresh_copy(tmp_path)
    raw = tmp_path / "ratings.csv"
    generate_ratings(raw, users=600, items=300, ratings=14_000, seed=3, sequential=True, quiet=True)
    settings = [f"RAW={raw}", "NAME=seq", "EPOCHS=4", "QUIET=1"]
    done = make(copy, "sequences", *settings)
    assert done.returncode == 0, done.stderr[-2000:]
    trained = ["train"] * 2  # mf_bias and embedding_net need only the split
    assert ran(done) == [
        "ratings",
        "split-ratings",
        *trained,
        "sequences",
        *["train"] * 3,
        "report",
    ]
    data = copy / "data" / "seq"
    summary = json.loads((data / "runs" / "lstm-next" / "summary.json").read_text())
    assert summary["test_hr10"] > 2 * summary["popularity_test_hr10"], summary
    report = (data / "report.md").read_text()
    assert "## Next item" in report and "| lstm-next |" in report and "| lstm | lstm |" in report
    unchanged = make(copy, "sequences", *settings)  # nothing changed: nothing runs
    assert unchanged.stdout == "report up to date: data/seq/report.md\n"
    again = make(copy, "sequences", *settings, "MAX_LENGTH=10")
    assert again.returncode == 0, again.stderr[-2000:]
    assert ran(again) == ["sequences", *["train"] * 3, "report"]
    assert json.loads((data / "sequences.json").read_text())["max_length"] == 10


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
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1, result.stderr  # one line: no curl progress, no retry chatter
    assert ours[0].startswith("error: could not download http://127.0.0.1:9/meta_Electronics")
    assert "Failed to connect" in ours[0] and "RAW=/path/to/meta_Electronics.json.gz" in ours[0]
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


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_ratings_on_a_small_file_then_nothing_then_what_changed(tmp_path):
    copy = fresh_copy(tmp_path)
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 41):
        lines += [f"{user},{i},{1 + (user * i) % 5},{user * 100 + i}" for i in range(1, 31)]
    raw = write_lines(tmp_path / "ratings.csv", lines)
    titles = ["movieId,title,genres"] + [f"{i},Movie {i} (2001),Drama" for i in range(1, 31)]
    movies = write_lines(tmp_path / "movies.csv", titles)
    settings = [f"RAW={raw}", f"TITLES={movies}", "NAME=small", "EPOCHS=2", "QUIET=1"]
    done = make(copy, "ratings", *settings)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ran(done) == ["ratings", "split-ratings", *["train"] * 4, "report"]
    data = copy / "data" / "small"
    assert json.loads((data / "ratings.json").read_text())["ratings"] == 40 * 30
    report = (data / "report.md").read_text()
    for model in ("mf", "mf_bias", "pmf", "embedding_net"):
        assert f"| {model} | {model} |" in report
    assert "Component 1, one end: Movie" in report
    unchanged = make(copy, "ratings", *settings)  # nothing changed: nothing runs
    assert unchanged.stdout == "report up to date: data/small/report.md\n"
    again = make(copy, "ratings", *settings[:-2], "EPOCHS=1", "QUIET=1")  # only training changed
    assert again.returncode == 0, again.stderr[-2000:]
    assert ran(again) == [*["train"] * 4, "report"]
    for model in ("mf", "mf_bias", "pmf", "embedding_net"):  # fewer epochs: trained afresh
        summary = json.loads((data / "runs" / model / "summary.json").read_text())
        assert (summary["epochs"], summary["config"]["epochs"], summary["parts"]) == (1, 1, 1)
    every = [*settings[:-2], "EPOCHS=1", "QUIET=1", "SIMILAR_ALL=1", "SIMILAR_K=3"]
    tables = make(copy, "ratings", *every)  # the models with vectors write their tables
    assert tables.returncode == 0, tables.stderr[-2000:]
    assert ran(tables) == ["recommend"] * 3
    written = json.loads((data / "runs" / "mf_bias" / "recommend.json").read_text())
    assert (written["queries"], written["k"]) == (40, 3)
    assert written["rows"] + written["short_rows"] == 40 * 3
    assert ran(make(copy, "ratings", *every)) == []  # the runs unchanged: nothing reruns
    missing = make(copy, "ratings", "NAME=small")
    assert missing.returncode != 0
    assert missing.stderr.splitlines()[0].startswith("error: make ratings needs RAW=")


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("curl") is None,
    reason="make or curl not installed",
)
def test_make_movielens_without_network_is_one_error_line(tmp_path):
    copy = fresh_copy(tmp_path)
    result = make(copy, "movielens", "MOVIELENS_100K=http://127.0.0.1:9/ml-100k.zip")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith("error: could not download http://127.0.0.1:9/ml-100k.zip")
    assert "RAW=/path/to/u.data TITLES=/path/to/u.item" in ours[0]
    assert list((copy / "data" / "movielens" / "raw").iterdir()) == []
