"""Messages that say what happened: the last line a truncated gzip gave, a stage
that yields nothing usable, an asin of the wrong type, a reader gone early."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from planted import write_planted

from pipeline import cli
from pipeline import parse as parse_module
from pipeline.errors import PipelineError
from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.ratings import ratings
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train

REPO = Path(__file__).resolve().parents[1]
GZIP_END = "Compressed file ended before the end-of-stream marker was reached"


def cut_gzip(path: Path, lines: list[bytes], fraction: float) -> int:
    """Write the gzip of ``lines`` cut at ``fraction`` of its bytes to ``path``;
    return how many whole lines the cut file decompresses to."""
    data = gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0)
    cut = data[: int(len(data) * fraction)]
    path.write_bytes(cut)
    return zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")


def products_lines(n: int) -> list[bytes]:
    return [
        json.dumps({"asin": f"A{i:09d}", "title": f"title {i} " + "x" * (i % 97)}).encode()
        for i in range(n)
    ]


# --- a truncated gzip names the last whole line it gave -------------------------------


@pytest.mark.parametrize("block_bytes", [None, 4096])
@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_truncated_gzip_names_the_last_whole_line_decompressed(
    tmp_path, monkeypatch, block_bytes, fraction
):
    if block_bytes:  # many blocks before the cut, not one
        monkeypatch.setattr(parse_module, "BLOCK_BYTES", block_bytes)
    raw = tmp_path / "meta.json.gz"
    whole = cut_gzip(raw, products_lines(6000), fraction)
    assert whole > 1000
    with pytest.raises(PipelineError) as caught:
        parse(raw, tmp_path / "out", fmt="json", workers=1, quiet=True)
    assert str(caught.value) == (
        f"{raw}: truncated or corrupt gzip stream after line {whole} ({GZIP_END})"
    )
    assert list((tmp_path / "out").iterdir()) == []  # parse keeps nothing of a failed run


def test_truncated_gzip_of_ratings_names_the_last_whole_line(tmp_path):
    lines = [
        json.dumps(
            {
                "reviewerID": f"U{i % 300}",
                "asin": f"I{i % 500}",
                "overall": 1.0 + i % 5,
                "unixReviewTime": 1_400_000_000 + i,
            }
        ).encode()
        for i in range(20000)
    ]
    raw = tmp_path / "reviews.json.gz"
    whole = cut_gzip(raw, lines, 0.5)
    with pytest.raises(PipelineError) as caught:
        ratings(raw, tmp_path / "out", fmt="amazon", quiet=True)
    assert str(caught.value) == (
        f"{raw}: truncated or corrupt gzip stream after line {whole} ({GZIP_END})"
    )


# --- a stage whose non-empty input yields nothing usable stops -------------------------


def test_parse_of_a_file_with_no_product_stops_and_keeps_only_the_rejects(tmp_path):
    out = tmp_path / "out"
    good = tmp_path / "good.json"
    good.write_bytes(b"".join(line + b"\n" for line in products_lines(5)))
    parse(good, out, workers=1, quiet=True)  # an earlier run's files, for another input
    raw = tmp_path / "garbage.txt"
    raw.write_text("garbage\n" * 760 + '{"title": "no asin"}\n' * 6)
    with pytest.raises(PipelineError) as caught:
        parse(raw, out, fmt="json", workers=1, quiet=True)
    assert str(caught.value) == (
        f"{raw}: no product in 766 lines (every line rejected: 760 invalid JSON, "
        f"6 missing asin; see {out / 'rejects.jsonl'})"
    )
    assert sorted(p.name for p in out.iterdir()) == ["rejects.jsonl"]
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 766

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "parse",
            raw,
            "--out",
            out,
            "--format",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {caught.value}\n"


def test_parse_of_an_empty_file_leaves_nothing(tmp_path):
    raw = tmp_path / "meta.json"
    raw.write_bytes(b"")
    with pytest.raises(PipelineError, match=r"^\S+meta\.json: empty file$"):
        parse(raw, tmp_path / "out", fmt="json", workers=1, quiet=True)
    assert list((tmp_path / "out").iterdir()) == []


def write_catalog(tmp_path: Path, records: list[dict]) -> Path:
    """products.parquet of ``records`` (parsed), in a dataset folder; returns it."""
    raw = tmp_path / "meta.json"
    raw.write_text("".join(json.dumps(r) + "\n" for r in records))
    parse(raw, tmp_path / "data", workers=1, quiet=True)
    return tmp_path / "data"


def test_pairs_with_no_pair_names_the_filters_and_their_flags(tmp_path):
    records = [
        {"asin": "A", "related": {"also_bought": ["B", "C"]}},  # no title
        {"asin": "B", "title": "b", "related": {"also_bought": ["A"]}},  # one also_bought
        {"asin": "C", "title": "c", "related": {"also_bought": ["A"]}},
        {"asin": "D", "title": "d", "related": {"also_bought": ["A", "B"]}},
    ]
    data = write_catalog(tmp_path, records)
    before = sorted(p.name for p in data.iterdir())
    products = data / "products.parquet"
    with pytest.raises(PipelineError) as caught:
        build_pairs(data, weights={"also_viewed": 1.0}, quiet=True)
    assert str(caught.value) == (
        f"{products}: no pairs: none of its 4 products passes the filters: "
        "1 without a title (--no-require-title keeps them), "
        "2 with fewer than 2 also_bought entries (--min-also-bought), "
        "1 with no entry in a weighted list (--weights)"
    )
    assert sorted(p.name for p in data.iterdir()) == before  # no pairs.json, vocab, pairs


def test_pairs_whose_kept_products_list_only_themselves(tmp_path):
    data = write_catalog(
        tmp_path, [{"asin": "A", "title": "a", "related": {"also_bought": ["A", "A", "A"]}}]
    )
    with pytest.raises(PipelineError) as caught:
        build_pairs(data, min_also_bought=1, quiet=True)
    assert str(caught.value) == (
        f"{data / 'products.parquet'}: no pairs: the 1 products kept list only themselves"
    )
    assert not (data / "pairs.json").exists()


# --- an asin of the wrong type is not a missing one -----------------------------------


def test_asin_reasons_tell_missing_from_the_wrong_type(tmp_path):
    records = [
        {"asin": "A1", "title": "kept"},
        {"asin": 123},
        {"asin": ["A2"]},
        {"asin": None},
        {"asin": "  "},
        {"title": "no asin"},
        {"asin": True},
    ]
    data = write_catalog(tmp_path, records)
    found = [json.loads(line) for line in (data / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in found] == [
        (2, "asin is not a string"),
        (3, "asin is not a string"),
        (4, "missing asin"),
        (5, "missing asin"),
        (6, "missing asin"),
        (7, "asin is not a string"),
    ]


# --- a reader that goes away early ----------------------------------------------------


def gone_reader(*command) -> subprocess.CompletedProcess:
    """Run ``python -m COMMAND`` with its stdout's read end closed before it writes."""
    child = subprocess.Popen(
        [sys.executable, "-m", *map(str, command)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    child.stdout.close()  # the child takes ~1 s to start: nobody reads what it prints
    stderr = child.stderr.read().decode()
    child.stderr.close()
    return subprocess.CompletedProcess(command, child.wait(), "", stderr)


def test_clis_exit_quietly_when_their_reader_goes_away(tmp_path):
    raw = tmp_path / "meta.json"
    raw.write_bytes(b"".join(line + b"\n" for line in products_lines(50)))
    parsed = gone_reader("pipeline", "parse", raw, "--out", tmp_path / "out", "--quiet")
    assert (parsed.returncode, parsed.stderr) == (141, "")
    assert (tmp_path / "out" / "parse.json").is_file()  # the work was done all the same

    data = write_planted(tmp_path / "planted", products=50, pairs=300, clusters=5, row_group=64)
    config = TrainConfig(model="mf", epochs=1, batch_size=128, eval_every=50, eval_sample=200)
    train(data, config, quiet=True)
    (run,) = (data / "runs").iterdir()
    similar = gone_reader("recsys_stream", "similar", run, "P000000001", "P000000002", "-k", "20")
    assert (similar.returncode, similar.stderr) == (141, "")


def test_a_broken_pipe_other_than_stdout_is_not_hidden():
    def main(args):
        raise BrokenPipeError("a worker's pipe")

    with pytest.raises(BrokenPipeError, match="a worker's pipe"):
        cli.run(main, argparse.Namespace())
