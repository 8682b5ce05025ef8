"""The ratings stage's scales: off-scale ratings refused and counted, --scale, and a
file that yields no rating stopping in one true line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_lines

from pipeline.__main__ import main
from pipeline.errors import PipelineError
from pipeline.ratings import ratings

REPO = Path(__file__).resolve().parents[1]
HEADER = "userId,movieId,rating,timestamp"
OUTSIDE_HALF = "rating outside the scale 0.5 to 5"


def line(fmt: str, user: int, item: int, rating: str) -> str:
    """A line of ``fmt`` with the rating written as given."""
    if fmt == "amazon":
        fields = f'"reviewerID": "U{user}", "asin": "B{item}", "overall": {rating}'
        return f'{{{fields}, "unixReviewTime": 1}}'
    separator = {"movielens-csv": ",", "movielens-100k": "\t", "movielens-dat": "::"}[fmt]
    return separator.join([str(user), str(item), rating, "1"])


def rejects(folder: Path) -> dict[int, str]:
    return {
        r["line"]: r["reason"]
        for r in map(json.loads, (folder / "rejects.jsonl").read_text().splitlines())
    }


# format -> (file name, header or None, the scale's step, which is also its lowest rating)
FORMATS = {
    "movielens-csv": ("ratings.csv", HEADER, "0.5"),
    "movielens-dat": ("ratings.dat", None, "0.5"),
    "movielens-100k": ("u.data", None, "1"),
    "amazon": ("r.json", None, "1"),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_ratings_off_the_formats_scale_are_rejected_with_their_reason_and_counted(tmp_path, fmt):
    name, header, step = FORMATS[fmt]
    outside = f"rating outside the scale {step} to 5"
    between = f"rating between the scale's steps of {step}"
    values = ["4", "99", "-3", "0", "3.7", "1e30", "3.5", "5", "1"]
    lines = [line(fmt, user, 7, value) for user, value in enumerate(values)]
    raw = write_lines(tmp_path / name, ([header] if header else []) + lines)
    stats = ratings(raw, tmp_path / "out", fmt=fmt, quiet=True)
    first = 2 if header else 1  # the line number of "4"
    expected = {first + 1: outside, first + 2: outside, first + 3: outside}
    expected |= {first + 4: between, first + 5: outside}
    whole = step == "1"
    if whole:
        expected[first + 6] = between  # 3.5
    assert rejects(tmp_path / "out") == expected
    by_reason = {reason: list(expected.values()).count(reason) for reason in set(expected.values())}
    assert stats["rejected_by_reason"] == by_reason
    assert (stats["lines"], stats["rejected"]) == (9, len(expected))
    assert stats["lines"] == stats["ratings"] + stats["repeated"] + stats["rejected"]
    kept = pq.read_table(tmp_path / "out" / "ratings.parquet").column("rating").to_pylist()
    assert kept == ([4.0, 5.0, 1.0] if whole else [4.0, 3.5, 5.0, 1.0])


def test_the_scale_override_keeps_them_and_ratings_json_states_the_scale(tmp_path):
    lines = [HEADER, "1,1,99,1", "1,2,-3,2", "2,1,0,3", "2,2,3.7,4", "3,3,1e30,5"]
    raw = write_lines(tmp_path / "ratings.csv", lines)
    stats = ratings(raw, tmp_path / "wide", scale=(-5, 100), quiet=True)
    assert stats["ratings"] == 4 and stats["rejected"] == 1
    assert stats["rejected_by_reason"] == {"rating outside the scale -5 to 100": 1}
    assert (stats["rating_min"], stats["rating_max"]) == (-3.0, 99.0)
    stated = json.loads((tmp_path / "wide" / "ratings.json").read_text())
    assert stated["scale"] == {"min": -5.0, "max": 100.0, "step": None}
    cli = tmp_path / "cli"  # the command line's --scale, as text
    assert main(["ratings", str(raw), "--out", str(cli), "--scale=-5:100", "--quiet"]) == 0
    assert json.loads((cli / "ratings.json").read_text())["scale"] == stated["scale"]
    good = write_lines(tmp_path / "good.csv", [HEADER, "1,1,4.5,1"])
    own = ratings(good, tmp_path / "own", quiet=True)
    assert own["scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}
    # another scale may keep other lines: it is part of the ratings_id, which a split carries
    other = ratings(good, tmp_path / "other", scale="0:10", quiet=True)
    assert other["ratings_id"] != own["ratings_id"]


def test_a_recbole_file_needs_its_scale_named(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    raw = write_lines(tmp_path / "x.inter", [header, "1\t2\t8\t1", "1\t3\t11\t2"])
    with pytest.raises(
        PipelineError,
        match=r"x.inter: a recbole file does not say its rating scale; pass --scale MIN:MAX",
    ):
        ratings(raw, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
    stats = ratings(raw, tmp_path / "out", scale="1:10", quiet=True)
    assert (stats["ratings"], stats["rejected_by_reason"]) == (
        1,
        {"rating outside the scale 1 to 10": 1},
    )


@pytest.mark.parametrize("scale", ["5:1", "1:1", "1", "a:b", "nan:5", "1:inf", "1:5:0.5", ""])
def test_a_bad_scale_is_one_line_and_writes_nothing(tmp_path, capsys, scale):
    raw = write_lines(tmp_path / "ratings.csv", [HEADER, "1,1,4,1"])
    out = tmp_path / "out"
    assert main(["ratings", str(raw), "--out", str(out), f"--scale={scale}", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"error: --scale must be MIN:MAX, two finite numbers with MIN < MAX, got {scale!r}\n"
    )
    assert not out.exists()


def test_a_header_only_file_says_so_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    ratings(write_lines(tmp_path / "old.csv", [HEADER, "1,1,4,1"]), out, quiet=True)
    raw = write_lines(tmp_path / "ratings.csv", [HEADER])
    with pytest.raises(PipelineError) as caught:
        ratings(raw, out, quiet=True)
    assert str(caught.value) == f"{raw}: no ratings: the file holds only its header"
    assert list(out.iterdir()) == []  # no rejects to point at, and the old run's files gone


def test_a_file_whose_every_line_is_rejected_stops_pointing_at_its_rejects(tmp_path):
    out = tmp_path / "out"
    ratings(write_lines(tmp_path / "old.csv", [HEADER, "1,1,4,1"]), out, quiet=True)
    raw = write_lines(tmp_path / "ratings.csv", [HEADER, "1,1,10,1", "1,2,7,2", "1,3,x,3"])
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "ratings", str(raw), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: {raw}: no ratings in 3 lines (every line rejected: 2 {OUTSIDE_HALF}, 1 rating "
        f"is not a finite number; see {out / 'rejects.jsonl'}); --scale MIN:MAX keeps ratings "
        "on another scale\n"
    )
    assert rejects(out) == {2: OUTSIDE_HALF, 3: OUTSIDE_HALF, 4: "rating is not a finite number"}
    # the earlier run's dataset is gone with it: nothing here looks finished
    assert sorted(p.name for p in out.iterdir()) == ["rejects.jsonl"]
