"""Truth under real use: lineage, full disks, bad options, killed runs, byte-identical models."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_lines
from planted import write_planted

from pipeline.errors import PipelineError
from pipeline.pairs import build_pairs
from pipeline.parse import parse
from pipeline.split import split
from pipeline.synth import generate
from recsys_stream.core import train as train_module
from recsys_stream.core.config import TrainConfig
from recsys_stream.core.train import train
from recsys_stream.core.trained import load_run

REPO = Path(__file__).resolve().parents[1]
FAST = dict(epochs=1, batch_size=256, eval_every=20, eval_sample=1000)


def cli(package: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", package, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line a failed command printed; fails on a traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small catalog through parse, pairs and split."""
    data = tmp_path_factory.mktemp("dataset")
    generate(data / "raw" / "catalog.json.gz", 3000, quiet=True)
    parse(data / "raw" / "catalog.json.gz", data, workers=1, quiet=True)
    build_pairs(data, quiet=True)
    split(data, quiet=True)
    return data


# Lineage: files that do not belong together are refused in one line naming both.


def test_val_from_another_dataset_is_refused(dataset, tmp_path):
    other = write_planted(tmp_path / "other", products=500, pairs=3000)
    mixed = shutil.copytree(dataset, tmp_path / "mixed", ignore=shutil.ignore_patterns("runs"))
    shutil.copy(other / "val.parquet", mixed / "val.parquet")
    message = one_error_line(cli("recsys_stream", "train", mixed, "--epochs", "1", "--quiet"))
    assert "train.parquet and" in message and "val.parquet do not belong together" in message
    assert "rerun `python -m pipeline split`" in message


def test_vocabulary_of_another_run_of_pairs_is_refused(dataset, tmp_path):
    mixed = shutil.copytree(dataset, tmp_path / "mixed", ignore=shutil.ignore_patterns("runs"))
    build_pairs(mixed, weights={"also_bought": 1.0}, quiet=True)  # new pairs and vocab
    message = one_error_line(cli("recsys_stream", "train", mixed, "--quiet"))
    assert "train.parquet and" in message and "vocab.parquet do not belong together" in message
    with pytest.raises(PipelineError, match="do not belong together"):
        shutil.copy(dataset / "pairs.parquet", mixed / "pairs.parquet")
        split(mixed, quiet=True)


def _rewrite(path: Path, change) -> None:
    """Rewrite a Parquet file's table through ``change``, keeping its metadata."""
    parquet = pq.ParquetFile(path)
    table = change(parquet.read())
    pq.write_table(table.replace_schema_metadata(parquet.schema_arrow.metadata), path)


def test_truncated_or_shuffled_vocabulary_and_bad_ids_or_weights(dataset, tmp_path):
    def broken(name: str, change) -> str:
        copy = shutil.copytree(dataset, tmp_path / name, ignore=shutil.ignore_patterns("runs"))
        target = "vocab.parquet" if "vocab" in name else "train.parquet"
        _rewrite(copy / target, change)
        return one_error_line(cli("recsys_stream", "train", copy, "--quiet"))

    truncated = broken("vocab-short", lambda t: t.slice(0, t.num_rows // 2))
    assert (
        "train.parquet: ids up to" in truncated and "rerun `python -m pipeline split`" in truncated
    )
    shuffled = broken(
        "vocab-shuffled", lambda t: t.take(np.random.default_rng(0).permutation(t.num_rows))
    )
    assert "vocab.parquet: ids are not 0.." in shuffled
    nan = broken(
        "weights",
        lambda t: t.set_column(
            2,
            "weight",
            pa.array(
                np.where(np.arange(t.num_rows) == 5, np.nan, t.column("weight").to_numpy()).astype(
                    np.float32
                )
            ),
        ),
    )
    assert "train.parquet: NaN or infinite weights" in nan


def test_an_unstamped_or_old_file_is_refused(dataset, tmp_path):
    copy = shutil.copytree(dataset, tmp_path / "old", ignore=shutil.ignore_patterns("runs"))
    old = pq.read_table(copy / "train.parquet").replace_schema_metadata({"format_version": "1"})
    pq.write_table(old, copy / "train.parquet")
    assert "format version 1, this code reads 2" in one_error_line(
        cli("recsys_stream", "train", copy, "--quiet")
    )
    bare = shutil.copytree(dataset, tmp_path / "bare", ignore=shutil.ignore_patterns("runs"))
    unstamped = pq.read_table(bare / "val.parquet").replace_schema_metadata(None)
    pq.write_table(unstamped, bare / "val.parquet")
    with pytest.raises(PipelineError, match=r"val\.parquet: no format_version stamp"):
        train(bare, quiet=True)


# Full disks: one line, nothing under a final name, the previous checkpoint kept.


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int):
    """A tmpfs of ``megabytes`` at ``folder``; skips the test where none can be mounted."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Take all but ``leave`` bytes of the filesystem holding ``folder``."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as file:
        file.truncate(0)
        file.write(b"\0" * max(0, free - leave))


def test_full_disk_ends_each_stage_in_one_line(dataset, tmp_path):
    with small_disk(tmp_path / "disk", 24) as disk:
        data = disk / "data"
        data.mkdir()
        for name in ("products.parquet", "pairs.parquet", "vocab.parquet"):
            shutil.copy(dataset / name, data / name)
        fill(disk, 16 << 10)
        raw = dataset / "raw" / "catalog.json.gz"
        for package, args in [
            ("pipeline", ["parse", raw, "--out", data, "--workers", "1"]),
            ("pipeline", ["pairs", data]),
            ("pipeline", ["split", data]),
        ]:
            message = one_error_line(cli(package, *args, "--quiet"))
            assert "no space left on device" in message, message
        assert sorted(p.name for p in data.iterdir()) == [
            "pairs.parquet",
            "products.parquet",
            "vocab.parquet",
        ]  # no temporaries, no partial outputs


def test_full_disk_keeps_the_last_checkpoint(tmp_path):
    with small_disk(tmp_path / "disk", 24) as disk:
        data = write_planted(disk / "data", products=1500, pairs=15000, row_group=1000)
        assert cli("recsys_stream", "train", data, "--epochs", "1", "--quiet").returncode == 0
        checkpoint = data / "runs" / "mf_bias-continuous" / "checkpoint.pt"
        before = checkpoint.read_bytes()
        fill(disk, 64 << 10)
        done = cli("recsys_stream", "train", data, "--epochs", "2", "--resume", "--quiet")
        message = one_error_line(done)
        assert "checkpoint.pt: no space left on device" in message
        assert checkpoint.read_bytes() == before


def test_an_injected_write_error_is_one_line_and_leaves_nothing(dataset, tmp_path, monkeypatch):
    copy = shutil.copytree(dataset, tmp_path / "copy", ignore=shutil.ignore_patterns("runs"))
    for name in ("train.parquet", "val.parquet", "split.json"):
        (copy / name).unlink()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(PipelineError, match=r"no space left on device \(.* free\)"):
        split(copy, quiet=True)
    assert not (copy / "train.parquet").exists() and not list(copy.glob(".*.tmp"))


# Bad options: one line each, before any work.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "0"], "--lr must be above 0"),
        (["--seed", "-3"], "--seed must be an integer from 0 to"),
        (["--negative-power", "nan"], "--negative-power must be a finite number"),
        (["--smoothing", "1.5"], "--smoothing must be at most 1"),
        (["--dim", "0"], "--dim must be at least 1"),
        (["--threads", "-1"], "--threads must be 0 (choose) or more"),
    ],
)
def test_train_options_are_checked(args, message, tmp_path):
    assert message in one_error_line(cli("recsys_stream", "train", tmp_path, *args))


def test_other_stages_check_their_numbers(tmp_path):
    assert "--seed must be an integer from 0 to" in one_error_line(
        cli("pipeline", "synth", tmp_path / "x.json", "--products", "10", "--seed", "-3")
    )
    assert "--workers must be at least 1" in one_error_line(
        cli("pipeline", "parse", tmp_path / "x.json", "--out", tmp_path, "--workers", "0")
    )


def test_a_diverging_run_stops_at_once_and_says_what_to_lower(tmp_path):
    data = write_planted(tmp_path, products=500, pairs=3000)
    message = one_error_line(cli("recsys_stream", "train", data, "--lr", "1e30", "--quiet"))
    assert "training diverged at step" in message and "lower --lr (now 1e+30)" in message
    assert not (data / "runs" / "mf_bias-continuous" / "summary.json").exists()


def test_every_option_shows_its_default_in_help():
    from pipeline.__main__ import build_parser as pipeline_parser
    from recsys_stream.__main__ import build_parser as recsys_parser

    for parser in (pipeline_parser(), recsys_parser()):
        commands = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
        for name, command in commands.choices.items():
            for action in command._actions:
                if action.default in (None, False, "==SUPPRESS==") or not action.option_strings:
                    continue
                assert "default" in (action.help or ""), (name, action.option_strings)


# Killed runs, resume and outputs.


def test_a_killed_stage_leaves_temporaries_the_next_run_removes(dataset, tmp_path):
    copy = shutil.copytree(dataset, tmp_path / "copy", ignore=shutil.ignore_patterns("runs"))
    dead = 2**22 + 12345  # beyond pid_max's default: no such process
    leftovers = [copy / f".products.parquet.{dead}.tmp", copy / f".pairs-work.{dead}.tmp"]
    leftovers[0].write_bytes(b"x" * 100)
    leftovers[1].mkdir()
    (leftovers[1] / "grouped.parquet").write_bytes(b"x")
    build_pairs(copy, quiet=True)
    assert not any(path.exists() for path in leftovers)


def test_a_retrain_clears_the_previous_runs_final_files(tmp_path, monkeypatch):
    data = write_planted(tmp_path, products=500, pairs=3000)
    train(data, TrainConfig(**FAST), name="run", quiet=True)
    run = data / "runs" / "run"
    (run / "pr.csv").write_text("stale")
    (run / f".model.pt.{2**22 + 7}.tmp").write_text("killed")

    class Stop(Exception):
        pass

    def interrupted(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(train_module, "_train_epoch", interrupted)
    with pytest.raises(Stop):
        train(data, TrainConfig(**{**FAST, "dim": 8}), name="run", quiet=True)
    assert sorted(p.name for p in run.iterdir()) == []  # nothing of the old run is left


def test_resume_notes(tmp_path, capsys):
    data = write_planted(tmp_path, products=500, pairs=3000)
    train(data, TrainConfig(**FAST), name="run", resume=True, quiet=True)
    assert "no checkpoint to resume from; starting at epoch 1" in capsys.readouterr().err
    summary = train(data, TrainConfig(**{**FAST, "dim": 8}), name="run", resume="auto", quiet=True)
    assert "made with other settings (dim 32 -> 8); starting afresh" in capsys.readouterr().err
    assert summary["parts"] == 1
    more_epochs = TrainConfig(**{**FAST, "dim": 8, "epochs": 2})
    more = train(data, more_epochs, name="run", resume="auto", quiet=True)
    assert more["parts"] == 2 and more["epochs"] == 2


def test_identical_runs_write_identical_model_files(tmp_path):
    data = write_planted(tmp_path, products=500, pairs=3000)
    for name in ("a", "b"):
        train(data, TrainConfig(**FAST), name=name, quiet=True)
    a, b = (data / "runs" / name / "model.pt" for name in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    files = ("embeddings.parquet", "pr.csv", "roc.csv")
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)


def test_a_corrupt_model_file_is_one_line(tmp_path):
    data = write_planted(tmp_path, products=500, pairs=3000)
    train(data, TrainConfig(**FAST), name="run", quiet=True)
    model = data / "runs" / "run" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    message = one_error_line(cli("recsys_stream", "similar", model.parent, "P000000001"))
    assert "model.pt: not a readable model file" in message
    with pytest.raises(PipelineError, match="not a readable model file"):
        load_run(model.parent)


def test_titles_are_html_decoded_at_parse(tmp_path):
    line = json.dumps(
        {"asin": "A1", "title": "Charge &amp; Sync &quot;Pro&quot;", "brand": "A&amp;B"}
    )
    raw = write_lines(tmp_path / "raw.json", [line])
    parse(raw, tmp_path, workers=1, quiet=True)
    row = pq.read_table(tmp_path / "products.parquet").to_pylist()[0]
    assert (row["title"], row["brand"]) == ('Charge & Sync "Pro"', "A&B")
