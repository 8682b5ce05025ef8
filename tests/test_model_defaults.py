"""Defaults that belong to the model: what `train --model skipgram` alone resolves to,
what --help says, what the make targets pass, and the report's Defaults line."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from planted import write_planted
from repo import fresh_copy, make

from recsys_stream.__main__ import build_parser, main
from recsys_stream.core import train as train_module
from recsys_stream.core.config import NEXT_ITEM_DEFAULTS, TrainConfig
from recsys_stream.core.train import train
from recsys_stream.report import report

# What the make targets passed for skip-gram before the model had defaults of its own.
MAKE_TARGET = dict(
    labels="binary",
    epochs=1,
    negative_power=0.75,
    smoothing=0.0,
    shared_negatives=32,
    batch_size=8192,
    side_own_weight=0.0,  # the plain mean it had before the option came
)


class Resolved(Exception):
    """Raised with the config a train command resolved, before any training."""


@pytest.fixture
def resolve(tmp_path, monkeypatch):
    """The config `python -m recsys_stream train DIR ARGS` trains, on a pair dataset."""
    (tmp_path / "train.parquet").touch()  # a pair dataset, as its files tell

    def opened(kind, data_dir, config):
        raise Resolved(config)

    monkeypatch.setattr(train_module, "open_task", opened)

    def run(*args: str) -> TrainConfig:
        with pytest.raises(Resolved) as resolved:
            main(["train", str(tmp_path), "--quiet", *args])
        return resolved.value.args[0]

    return run


def test_model_skipgram_alone_trains_what_the_make_target_ran(resolve):
    assert resolve("--model", "skipgram") == TrainConfig(model="skipgram", **MAKE_TARGET)
    # MF without bias has two of its own (PLAIN_MF_DEFAULTS); every other model keeps
    # the fields' defaults.
    assert resolve("--model", "mf") == TrainConfig(model="mf", negatives=1, smoothing=0.5)
    assert resolve() == TrainConfig()
    assert resolve("--model", "mf_two_tables", "--epochs", "2") == TrainConfig(
        model="mf_two_tables", epochs=2
    )


def test_an_option_given_wins_over_the_models_default(resolve):
    config = resolve("--model", "skipgram", "--epochs", "5", "--shared-negatives", "0")
    assert config == TrainConfig(
        model="skipgram", **{**MAKE_TARGET, "epochs": 5, "shared_negatives": 0}
    )
    config = resolve("--model", "skipgram", "--labels", "continuous", "--smoothing", "0.9")
    assert (config.labels, config.smoothing, config.epochs) == ("continuous", 0.9, 1)


def test_help_lists_each_models_defaults():
    commands = next(a for a in build_parser()._actions if isinstance(a.choices, dict))
    text = " ".join(commands.choices["train"].format_help().split())
    assert (
        "(default: 5; ratings: 20; sequences: 20; next-item: 20; skipgram: 1; bpmf: 200; "
        "bpmf_svdpp: 200; sasrec: 40)" in text
    )
    assert "(default: continuous; skipgram: binary)" in text
    assert (
        "(default: 0; ratings: 1024; sequences: 64; next-item: 64; skipgram: 8192; "
        "bpmf: 131072; bpmf_svdpp: 131072; sasrec: 32)" in text
    )
    assert (
        "skipgram (--model skipgram): labels binary, epochs 1, negative-power 0.75, "
        "smoothing 0.0, shared-negatives 32, batch-size 8192" in text
    )
    assert "ratings (a ratings dataset): epochs 20, batch-size 1024, lr 0.005, l2 0.1" in text
    assert "mf (--model mf on a pairs dataset): negatives 1, smoothing 0.5" in text
    assert "embedding size (default: 32; bpmf: 10; bpmf_svdpp: 10; sasrec: 64)" in text
    assert (
        "sasrec (--model sasrec on a next-item dataset): dim 64, hidden 64, "
        "embedding-dropout 0.0, dropout 0.5, batch-size 32, lr 0.003, epochs 40" in text
    )
    assert "(default: 3.0)" in text  # only defaults that differ are listed (--prior-std)


def skipgram_commands(copy, *settings: str) -> dict[str, list[str]]:
    """The arguments `make -n` passes the two skip-gram runs, after --resume auto, by run."""
    done = make(copy, "-n", "data/demo/report.md", "DEMO_PRODUCTS=2000", *settings)
    assert done.returncode == 0, done.stderr[-2000:]
    found = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if "train" in words and "--name" in words:
            name = words[words.index("--name") + 1]
            found[name] = words[words.index("auto") + 1 :]
    return {name: found[name] for name in ("skipgram-binary", "skipgram-side")}


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_the_make_targets_pass_skipgram_only_its_name_and_the_users_settings(tmp_path):
    copy = fresh_copy(tmp_path)
    assert skipgram_commands(copy) == {
        "skipgram-binary": ["--model", "skipgram"],
        "skipgram-side": ["--model", "skipgram", "--side-info", "brand,category,price"],
    }
    given = skipgram_commands(copy, "EPOCHS=3", "BATCH_SIZE=4096")
    expected = ["--model", "skipgram", "--epochs", "3", "--batch-size", "4096"]
    assert given["skipgram-binary"] == expected


def test_mf_takes_its_own_defaults_on_pairs_only():
    assert TrainConfig.defaults("pairs", model="mf").negatives == 1
    ratings = TrainConfig.defaults("ratings", model="mf")
    assert (ratings.negatives, ratings.smoothing) == (TrainConfig.negatives, TrainConfig.smoothing)


def test_sasrec_takes_its_tuned_defaults_on_the_next_item_only():
    sasrec = TrainConfig.defaults("next-item", model="sasrec")
    assert (sasrec.dim, sasrec.hidden, sasrec.batch_size, sasrec.lr) == (64, "64", 32, 0.003)
    assert (sasrec.dropout, sasrec.embedding_dropout, sasrec.epochs) == (0.5, 0.0, 40)
    assert TrainConfig.defaults("next-item", model="gru") == TrainConfig(
        model="gru", **NEXT_ITEM_DEFAULTS
    )
    on_ratings = TrainConfig.defaults("sequences", model="lstm")  # the rating task's
    assert TrainConfig.defaults("sequences", model="sasrec") == dataclasses.replace(
        on_ratings, model="sasrec"
    )
    assert TrainConfig.defaults("next-item", model="sasrec", lr=0.01).lr == 0.01


def test_the_reports_defaults_line_lists_only_the_options_of_pairs(tmp_path):
    data = write_planted(tmp_path, products=300, pairs=2000)
    train(data, TrainConfig(epochs=1, batch_size=256, eval_sample=1000), name="run", quiet=True)
    line = next(
        line for line in report(data, quiet=True).read_text().splitlines() if "Defaults:" in line
    )
    shown = dict(item.split(" ", 1) for item in line.removeprefix("Defaults: ").split(", "))
    assert set(shown) == {
        "model",
        "labels",
        "epochs",
        "dim",
        "negatives",
        "shared-negatives",
        "batch-size",
        "lr",
        "l2",
        "init-std",
        "schedule",
        "cycle",
        "patience",
        "negative-power",
        "smoothing",
        "window",
        "scorer",
        "side-info",
        "side-own-weight",
        "step",
        "eval-every",
        "seed",
    }
    assert shown["side-info"] == "none" and shown["epochs"] == "5"
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    for rating_or_sequence in ("task", "hidden", "dropout", "prior-std", "sigma-prior", "fold"):
        assert rating_or_sequence in fields and rating_or_sequence not in shown
