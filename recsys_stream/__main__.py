"""``python -m recsys_stream COMMAND ...``: train, report, similar.

Each subcommand parses its arguments and calls a library function; the
training defaults live in :class:`recsys_stream.config.TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pipeline import cli
from recsys_stream.config import LABELS, MODELS, SCHEDULES, TrainConfig

# TrainConfig fields settable from the command line, with their help.
_TRAIN_OPTIONS = {
    "epochs": "passes over train.parquet",
    "dim": "embedding size",
    "negatives": "negatives sampled per positive pair",
    "batch_size": "positive pairs per step (a step sees batch x (1 + negatives) samples)",
    "lr": "Adam learning rate at the start of each epoch",
    "l2": "L2 penalty on the embedding rows a batch touches",
    "init_std": "std of the normal initialisation of the embeddings",
    "negative_power": "negatives are drawn with probability ~ train degree ** power",
    "smoothing": "share of the mean of a product's train neighbours in its final vector",
    "shuffle_groups": "row groups mixed in the shuffle buffer",
    "eval_every": "steps between learning-curve points",
    "eval_sample": "validation rows scored for a learning-curve point",
    "workers": "DataLoader worker processes (0: read in the training process)",
    "seed": "seed of initialisation, shuffling and sampling",
}


def _train(a: argparse.Namespace) -> None:
    from recsys_stream.train import train

    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)}
    summary = train(
        a.dir, TrainConfig(**values), name=a.name, resume=a.resume, quiet=a.quiet, threads=a.threads
    )
    cli.summary(
        f"train {summary['run']}",
        {k: v if not isinstance(v, float) else round(v, 4) for k, v in summary.items()},
        ["auc_all", "auc_seen", "pr_auc", "popularity_auc", "samples_per_s", "seconds"],
    )


def _report(a: argparse.Namespace) -> None:
    from recsys_stream.report import report

    path = report(a.dir, quiet=a.quiet)
    print(f"report: {path}")


def _similar(a: argparse.Namespace) -> None:
    from recsys_stream.similar import similar_cli

    similar_cli(a.run, a.asins, a.file, a.k, a.cosine, a.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_stream", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = TrainConfig()

    p = commands.add_parser("train", help="train a model on DIR/train.parquet")
    p.add_argument("dir", help="dataset directory (stage 3 outputs)")
    p.add_argument("--model", choices=MODELS, default=defaults.model)
    p.add_argument("--labels", choices=LABELS, default=defaults.labels)
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule)
    for field, text in _TRAIN_OPTIONS.items():
        default = getattr(defaults, field)
        p.add_argument(
            f"--{field.replace('_', '-')}",
            type=type(default),
            default=default,
            help=f"{text} (default: {default})",
        )
    p.add_argument("--name", help="run name (default: MODEL-LABELS)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the step; 0 chooses one or all by measured speed, so a busy "
        "machine does not stall it (default: 0); results do not depend on it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(main=_train)

    p = commands.add_parser("report", help="DIR/report.md with figures, from the runs")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(main=_report)

    p = commands.add_parser("similar", help="the products nearest to ASIN under a run's model")
    p.add_argument("run", help="run directory (DIR/runs/NAME)")
    p.add_argument("asins", nargs="*", help="one or more ASINs")
    p.add_argument("--file", help="a file of ASINs, one per line")
    p.add_argument("-k", type=int, default=10, help="how many (default: 10)")
    p.add_argument("--cosine", action="store_true", help="cosine similarity of the embeddings")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(main=_similar)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(args.main, args)


if __name__ == "__main__":
    sys.exit(main())
