"""``python -m pipeline STAGE ...``: the data stages' command line.

Each subcommand's arguments come from its stage's options dataclass
(pipeline/options.py); the subcommand calls the stage function with them
and prints a line of its stats.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pipeline import (
    cli,
    pairs,
    parse,
    ratings,
    sequences,
    split,
    split_ratings,
    synth,
    synth_ratings,
    walks,
)
from pipeline.options import add_arguments, from_args, keywords


@dataclass(frozen=True)
class Stage:
    """A subcommand: its stage function, options, and the stats it prints.

    ``per_file``: the stats hold a dict of ``files``, each printed on its own line.
    """

    name: str
    help: str
    options: type
    run: Callable[..., dict]
    shown: tuple[str, ...]
    per_file: bool = False


STAGES = (
    Stage(
        "synth",
        "generate a synthetic catalog",
        synth.SynthOptions,
        synth.generate,
        ("products", "lines", "faults", "seconds"),
    ),
    Stage(
        "synth-ratings",
        "generate ratings with planted structure",
        synth_ratings.SynthRatingsOptions,
        synth_ratings.generate_ratings,
        ("users", "items", "ratings", "seconds"),
    ),
    Stage(
        "parse",
        "metadata file to products.parquet",
        parse.ParseOptions,
        parse.parse,
        ("format", "lines", "products", "duplicates", "rejected", "seconds"),
    ),
    Stage(
        "pairs",
        "products to weighted pairs + vocab",
        pairs.PairsOptions,
        pairs.build_pairs,
        ("products_read", "pairs", "vocabulary", "seconds"),
    ),
    Stage(
        "split",
        "pairs to train/val with negatives",
        split.SplitOptions,
        split.split,
        ("train", "val_positives", "val_negatives", "seconds"),
    ),
    Stage(
        "walks",
        "random walks over the train pairs",
        walks.WalksOptions,
        walks.walks,
        ("walks", "steps", "steps_per_s", "seconds"),
    ),
    Stage(
        "ratings",
        "a ratings file to ratings.parquet",
        ratings.RatingsOptions,
        ratings.ratings,
        ("format", "lines", "ratings", "repeated", "rejected", "users", "items", "seconds"),
    ),
    Stage(
        "split-ratings",
        "ratings to train and val",
        split_ratings.SplitRatingsOptions,
        split_ratings.split_ratings,
        ("rows", "unseen_users", "unseen_items"),
        per_file=True,
    ),
    Stage(
        "sequences",
        "each user's ratings in time order, for sequence models",
        sequences.SequencesOptions,
        sequences.sequences,
        ("rows", "positions", "targets"),
        per_file=True,
    ),
)


def _run(stage: Stage, args: argparse.Namespace) -> None:
    """Run ``stage`` on the parsed ``args``; print its stats."""
    stats = stage.run(**keywords(from_args(stage.options, args)))
    if stage.per_file:
        for name, facts in stats["files"].items():
            cli.summary(f"{stage.name} {name}", facts, list(stage.shown))
    else:
        cli.summary(stage.name, stats, list(stage.shown))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every stage."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        command = commands.add_parser(stage.name, help=stage.help)
        add_arguments(command, stage.options)
        command.set_defaults(main=functools.partial(_run, stage))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(args.main, args)


if __name__ == "__main__":
    sys.exit(main())
