"""``python -m pipeline STAGE ...``: the data stages' command line.

Each subcommand parses its arguments and calls the stage function; the
defaults live in the stage modules, not here.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import (
    cli,
    pairs,
    parse,
    rating_formats,
    ratings,
    sequences,
    spark,
    split,
    split_ratings,
    synth,
    synth_ratings,
    walks,
)


def _weights(text: str) -> dict[str, float]:
    """Parse ``rel=w,rel=w`` into a dict, for ``--weights``."""
    weights = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected relation=weight, got {item!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected relation=weight, got {item!r}")
    return weights


def _engine(a: argparse.Namespace) -> dict:
    """The --engine options of a data stage, as its keyword arguments."""
    return {"engine": a.engine, "spark_master": a.spark_master}


def _synth(a: argparse.Namespace) -> None:
    stats = synth.generate(
        a.out, a.products, fmt=a.format, seed=a.seed, messy=a.messy, quiet=a.quiet
    )
    cli.summary("synth", stats, ["products", "lines", "faults", "seconds"])


def _synth_ratings(a: argparse.Namespace) -> None:
    stats = synth_ratings.generate_ratings(
        a.out,
        a.users,
        a.items,
        a.ratings,
        fmt=a.format,
        seed=a.seed,
        sequential=a.sequential,
        quiet=a.quiet,
    )
    cli.summary("synth-ratings", stats, ["users", "items", "ratings", "seconds"])


def _parse(a: argparse.Namespace) -> None:
    stats = parse.parse(
        a.raw,
        a.out,
        fmt=a.format,
        workers=a.workers,
        quiet=a.quiet,
        **_engine(a),
    )
    cli.summary(
        "parse", stats, ["format", "lines", "products", "duplicates", "rejected", "seconds"]
    )


def _pairs(a: argparse.Namespace) -> None:
    stats = pairs.build_pairs(
        a.dir,
        weights=a.weights,
        min_also_bought=a.min_also_bought,
        require_title=a.require_title,
        quiet=a.quiet,
        **_engine(a),
    )
    cli.summary("pairs", stats, ["products_read", "pairs", "vocabulary", "seconds"])


def _split(a: argparse.Namespace) -> None:
    stats = split.split(
        a.dir,
        val_prop=a.val_prop,
        seed=a.seed,
        negatives=a.negatives,
        quiet=a.quiet,
        **_engine(a),
    )
    cli.summary("split", stats, ["train", "val_positives", "val_negatives", "seconds"])


def _walks(a: argparse.Namespace) -> None:
    stats = walks.walks(
        a.dir,
        walks_per_node=a.walks_per_node,
        length=a.length,
        weighted=a.weighted,
        seed=a.seed,
        quiet=a.quiet,
    )
    cli.summary("walks", stats, ["walks", "steps", "steps_per_s", "seconds"])


def _ratings(a: argparse.Namespace) -> None:
    stats = ratings.ratings(
        a.raw, a.out, fmt=a.format, titles=a.titles, quiet=a.quiet, scale=a.scale
    )
    keys = ["format", "lines", "ratings", "repeated", "rejected", "users", "items", "seconds"]
    cli.summary("ratings", stats, keys)


def _split_ratings(a: argparse.Namespace) -> None:
    stats = split_ratings.split_ratings(
        a.dir, by=a.by, val_prop=a.val_prop, folds=a.folds, seed=a.seed, quiet=a.quiet
    )
    for name, facts in stats["files"].items():
        cli.summary(f"split-ratings {name}", facts, ["rows", "unseen_users", "unseen_items"])


def _sequences(a: argparse.Namespace) -> None:
    stats = sequences.sequences(a.dir, max_length=a.max_length, seed=a.seed, quiet=a.quiet)
    for name, facts in stats["files"].items():
        cli.summary(f"sequences {name}", facts, ["rows", "positions", "targets"])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every stage."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bar")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument(
        "--engine",
        choices=spark.ENGINES,
        default=spark.DEFAULT_ENGINE,
        help="polars on this machine, or Spark (pip install -e '.[spark]', Java 17) "
        "(default: %(default)s)",
    )
    engine.add_argument(
        "--spark-master",
        default=None,
        help="with --engine spark: the cluster's master URL (default: the running "
        f"session's, else {spark.DEFAULT_SPARK_MASTER})",
    )

    p = commands.add_parser("synth", parents=[quiet], help="generate a synthetic catalog")
    p.add_argument("out", help="output file; gzipped when it ends in .gz")
    p.add_argument("--products", type=int, required=True, help="catalog size")
    p.add_argument(
        "--format",
        choices=synth.FORMATS,
        default=synth.DEFAULT_FORMAT,
        help="py: 2014 Python literals; json: the same as JSON; json2018: the 2018 schema "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=cli.seed, default=synth.DEFAULT_SEED, help="(default: %(default)s)"
    )
    p.add_argument("--messy", action="store_true", help="plant the faults real dumps have")
    p.set_defaults(main=_synth)

    p = commands.add_parser(
        "synth-ratings", parents=[quiet], help="generate ratings with planted structure"
    )
    p.add_argument("out", help="output file; gzipped when it ends in .gz")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--ratings", type=int, required=True, help="about this many")
    p.add_argument(
        "--format",
        choices=synth_ratings.FORMATS,
        default=synth_ratings.DEFAULT_FORMAT,
        help="(default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=cli.seed, default=synth_ratings.DEFAULT_SEED, help="(default: %(default)s)"
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="plant an order in each user's history that sequence models can learn",
    )
    p.set_defaults(main=_synth_ratings)

    p = commands.add_parser(
        "parse", parents=[quiet, engine], help="metadata file to products.parquet"
    )
    p.add_argument("raw", help="metadata file: .json or .jsonl, optionally .gz")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--format", choices=parse.FORMATS, default=None, help="default: detect")
    p.add_argument(
        "--workers",
        type=int,
        default=parse.DEFAULT_WORKERS,
        help="parser processes of the polars engine (default: %(default)s)",
    )
    p.set_defaults(main=_parse)

    p = commands.add_parser(
        "pairs", parents=[quiet, engine], help="products to weighted pairs + vocab"
    )
    p.add_argument("dir", help="dataset directory holding products.parquet")
    p.add_argument(
        "--weights",
        type=_weights,
        default=pairs.DEFAULT_WEIGHTS,
        help="relation=weight,... (default: %(default)s)",
    )
    p.add_argument(
        "--min-also-bought",
        type=int,
        default=pairs.DEFAULT_MIN_ALSO_BOUGHT,
        help="skip products with fewer distinct also_bought entries (default: %(default)s)",
    )
    p.add_argument(
        "--require-title",
        action=argparse.BooleanOptionalAction,
        default=pairs.DEFAULT_REQUIRE_TITLE,
        help="skip products without a title (default: %(default)s)",
    )
    p.set_defaults(main=_pairs)

    p = commands.add_parser(
        "split", parents=[quiet, engine], help="pairs to train/val with negatives"
    )
    p.add_argument("dir", help="dataset directory holding pairs.parquet and vocab.parquet")
    p.add_argument(
        "--val-prop",
        type=float,
        default=split.DEFAULT_VAL_PROP,
        help="share of the pairs held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--negatives",
        choices=split.NEGATIVE_PROTOCOLS,
        default=split.DEFAULT_NEGATIVES,
        help="val negatives from the distinct val products, each equally likely (the "
        "reference's), or from their occurrences, matching the positives' popularity "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=cli.seed, default=split.DEFAULT_SEED, help="(default: %(default)s)"
    )
    p.set_defaults(main=_split)

    p = commands.add_parser("walks", parents=[quiet], help="random walks over the train pairs")
    p.add_argument("dir", help="dataset directory holding train.parquet and vocab.parquet")
    p.add_argument(
        "--walks-per-node",
        type=int,
        default=walks.DEFAULT_WALKS_PER_NODE,
        help="walks started from each product with a train pair (default: %(default)s)",
    )
    p.add_argument(
        "--length",
        type=int,
        default=walks.DEFAULT_LENGTH,
        help="products a walk visits, its start included (default: %(default)s)",
    )
    p.add_argument(
        "--weighted",
        action="store_true",
        help="step to a neighbour with probability pair weight / row sum (default: uniform)",
    )
    p.add_argument(
        "--seed", type=cli.seed, default=walks.DEFAULT_SEED, help="(default: %(default)s)"
    )
    p.set_defaults(main=_walks)

    p = commands.add_parser("ratings", parents=[quiet], help="a ratings file to ratings.parquet")
    p.add_argument(
        "raw",
        help="MovieLens ratings.csv, u.data or ratings.dat, RecBole .inter, "
        "or an Amazon reviews file (JSON lines); gzipped or not",
    )
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--format", choices=rating_formats.FORMATS, default=None, help="default: detect")
    p.add_argument(
        "--titles",
        default=None,
        help="item titles: movies.csv, u.item, movies.dat, or an Amazon products.parquet",
    )
    p.add_argument(
        "--scale",
        default=None,
        metavar="MIN:MAX",
        help="keep ratings from MIN to MAX instead of the format's scale (needed for RecBole "
        ".inter files; --scale=-10:10 for a negative MIN); default: MovieLens 0.5-5 in half "
        "stars (u.data 1-5), Amazon 1-5",
    )
    p.set_defaults(main=_ratings)

    p = commands.add_parser("split-ratings", parents=[quiet], help="ratings to train and val")
    p.add_argument("dir", help="dataset directory holding ratings.parquet")
    p.add_argument(
        "--by",
        choices=split_ratings.SPLITS,
        default=split_ratings.DEFAULT_BY,
        help="random: a seeded share of the ratings; time: each user's latest share "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--val-prop",
        type=float,
        default=split_ratings.DEFAULT_VAL_PROP,
        help="share held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--folds", type=int, default=0, help="K > 1: K-fold cross-validation files instead"
    )
    p.add_argument(
        "--seed", type=cli.seed, default=split_ratings.DEFAULT_SEED, help="(default: %(default)s)"
    )
    p.set_defaults(main=_split_ratings)

    p = commands.add_parser(
        "sequences", parents=[quiet], help="each user's ratings in time order, for sequence models"
    )
    p.add_argument("dir", help="dataset directory split by `split-ratings --by time`")
    p.add_argument(
        "--max-length",
        type=int,
        default=sequences.DEFAULT_MAX_LENGTH,
        help="ratings a training run holds (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=cli.seed, default=sequences.DEFAULT_SEED, help="(default: %(default)s)"
    )
    p.set_defaults(main=_sequences)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(args.main, args)


if __name__ == "__main__":
    sys.exit(main())
