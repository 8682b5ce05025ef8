"""``python -m recsys_stream COMMAND ...``: train, report, similar, recommend.

Each subcommand parses its arguments and calls a library function; the
training options and their defaults and help come from the fields of
:class:`recsys_stream.core.config.TrainConfig`, the models from the registry.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from pathlib import Path

from pipeline import cli
from pipeline.errors import PipelineError
from recsys_stream.core.config import KIND_DEFAULTS, MODEL_DEFAULTS, TrainConfig
from recsys_stream.core.tasks import model_names, task_class
from recsys_stream.neighbours import DEFAULT_INDEX, DEFAULT_TILE_SHARE, KINDS, METHODS
from recsys_stream.similar import DEFAULT_K


def _train(a: argparse.Namespace) -> None:
    from recsys_stream.core import distributed
    from recsys_stream.core.train import train

    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if f.name in a}
    if a.nproc != 1 and not distributed.launched():
        distributed.check_processes(a.dir, given, a.nproc)  # one line here, not N under torchrun
        code = distributed.launch(a.argv, a.nproc)
        if code:
            raise PipelineError(f"--nproc {a.nproc}: a training process failed (exit {code})")
        return
    summary = train(
        a.dir, name=a.name, resume=a.resume, quiet=a.quiet, threads=a.threads, options=given
    )
    if "rank" in summary:  # a data-parallel process but rank 0: it prints nothing
        return
    shown = [*task_class(summary["kind"]).headline, "samples_per_s", "seconds"]
    cli.summary(
        f"train {summary['run']}",
        {k: v if not isinstance(v, float) else round(v, 4) for k, v in summary.items()},
        shown,
    )


def _report(a: argparse.Namespace) -> None:
    from recsys_stream.report import report

    path = report(a.dir, quiet=a.quiet, note=lambda line: print(f"note: {line}", file=sys.stderr))
    print(f"report: {path}")


def _listed(given: list[str], file: str | None) -> list[str]:
    """The keys given on the command line and those of ``file``, one a line."""
    keys = list(given)
    if file:
        try:
            lines = Path(file).read_text().splitlines()
        except OSError as exc:
            raise PipelineError(f"{file}: cannot read ({exc.strerror})") from None
        keys += [line.strip() for line in lines if line.strip()]
    return keys


def _similar(a: argparse.Namespace) -> None:
    from recsys_stream.similar import similar

    asins = _listed(a.asins, a.file)
    if a.all:
        from recsys_stream.neighbours.table import similar_all

        stats = similar_all(
            a.run,
            a.k,
            a.out,
            a.method or "exact",
            a.index,
            asins or None,
            a.cosine,
            a.quiet,
            a.tile_share,
        )
        cli.summary(f"similar --all {a.run}", stats, _TABLE_SHOWN)
        return
    if a.out:
        raise PipelineError("--out writes the table of --all; without --all answers print")
    if not asins:
        raise PipelineError("give at least one ASIN, or --file, or --all")
    result = similar(a.run, asins, a.k, a.cosine, method=a.method, index=a.index)
    if result.method != "exact":
        print(
            f"note: answered from the run's saved {result.method} index (approximate; "
            "--method exact for the exact answer)",
            file=sys.stderr,
        )
    if result.k < result.asked_k:
        print(
            f"note: -k {result.asked_k} is more than the other products; showing {result.k}",
            file=sys.stderr,
        )
    if a.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        for answer in result.answers:
            if answer.error:
                continue
            print(f"\n{answer.asin}  {_short(answer.title)}")
            print(f"{'rank':>4}  {'asin':<12} {'score':>8}  title")
            for rank, item in enumerate(answer.similar, 1):
                print(f"{rank:>4}  {item.asin:<12} {item.score:>8.4f}  {_short(item.title)}")
    if result.unknown:
        for answer in result.unknown[:-1]:
            print(f"error: {_unknown(answer)}", file=sys.stderr)
        raise PipelineError(_unknown(result.unknown[-1]))


def _recommend(a: argparse.Namespace) -> None:
    from recsys_stream.recommend import recommend

    if a.all:
        from recsys_stream.neighbours.table import recommend_all

        users = _listed([a.user] if a.user else [], a.file)
        stats = recommend_all(
            a.run, a.k, a.out, a.method or "exact", a.index, users or None, a.quiet, a.tile_share
        )
        cli.summary(f"recommend --all {a.run}", stats, _TABLE_SHOWN)
        return
    if a.user is None or a.file or a.out:
        raise PipelineError("give one user, or --all (with --file for some users only)")
    result = recommend(a.run, a.user, a.k)
    if a.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return
    print(f"user {result.user}: {result.rated} rated items left out")
    print(f"{'rank':>4}  {'item':<12} {result.score:>6}  title")
    for rank, item in enumerate(result.items, 1):
        print(f"{rank:>4}  {item.key:<12} {item.predicted:>6.2f}  {_short(item.title)}")


_TABLE_SHOWN = ["rows", "seconds", "recall_at_k", "peak_rss_mb"]


def _unknown(answer) -> str:
    hint = f"; close matches: {', '.join(answer.suggestions)}" if answer.suggestions else ""
    return f"unknown ASIN {answer.query}{hint}"


def _short(title: str | None, width: int = 70) -> str:
    if not title:
        return "(no title)"
    return title if len(title) <= width else title[: width - 1] + "…"


def _resume(text: str) -> bool | str:
    if text not in ("yes", "auto"):
        raise argparse.ArgumentTypeError(f"expected yes or auto, got {text!r}")
    return True if text == "yes" else "auto"


def _other_defaults() -> dict[str, tuple[str, dict]]:
    """The defaults that differ from the fields', by kind of task and by model: each
    named as ``--help`` names it, with what selects it."""
    sequences = f"--model {'|'.join(task_class('sequences').models)}"
    selected = {
        "ratings": "a ratings dataset",
        "sequences": sequences,
        "next-item": f"{sequences} --task next-item",
    }
    by_model = {}
    for kind, models in MODEL_DEFAULTS.items():
        for model, values in models.items():
            elsewhere = any(model in task_class(k).models for k in KIND_DEFAULTS if k != kind)
            selected[model] = f"--model {model}" + (f" on a {kind} dataset" if elsewhere else "")
            by_model[model] = values
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    others = {}
    for name, values in {**KIND_DEFAULTS, **by_model}.items():
        differ = {key: value for key, value in values.items() if value != fields[key]}
        if differ:
            others[name] = (selected[name], differ)
    return others


def _defaults_epilog() -> str:
    """--help's table of the defaults by kind of task and by model."""
    lines = textwrap.wrap(
        "defaults by kind of task and by model, where they differ from the options' own "
        "(an option given wins):",
        width=79,
    )
    for name, (selected, values) in _other_defaults().items():
        shown = ", ".join(f"{key.replace('_', '-')} {value}" for key, value in values.items())
        lines += textwrap.wrap(
            f"{name} ({selected}): {shown}",
            width=79,
            initial_indent="  ",
            subsequent_indent="      ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with its type, choices, help and defaults.

    An option not given is left out, so the dataset's kind and the model
    decide its default (``TrainConfig.defaults``).
    """
    others = _other_defaults()
    for f in dataclasses.fields(TrainConfig):
        choices = f.metadata.get("choices")
        if f.name == "model":
            choices = model_names()
        default = f"default: {f.default}"
        for name, (_, values) in others.items():
            if f.name in values:
                default += f"; {name}: {values[f.name]}"
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=f.metadata.get("parse", type(f.default)),
            default=argparse.SUPPRESS,
            choices=choices,
            metavar=None if choices else f.name.upper(),
            help=f"{f.metadata['help']} ({default})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_stream", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "train",
        help="train a model on DIR's pairs (train.parquet) or ratings (ratings-train)",
        epilog=_defaults_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", help="dataset directory (split or split-ratings outputs)")
    _train_options(p)
    p.add_argument("--name", help="run name (default: MODEL-LABELS; ratings: MODEL[-foldK])")
    p.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        default=False,
        type=_resume,
        metavar="yes|auto",
        help="continue from the run's checkpoint; `auto`: only when it was made with the same "
        "settings, else start afresh (default: start afresh)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the step; 0 chooses one or all by measured speed, so a busy "
        "machine does not stall it, and results do not depend on it (default: 0); lstm and "
        "gru: 0 is one thread, as their last bits depend on the count",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train data-parallel on N processes of this machine, under torchrun; each streams "
        "its share of the train file and the ranks sum their gradients (models with a fused "
        "step; --batch-size is the step's rows over all of them) (default: 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(main=_train)

    p = commands.add_parser("report", help="DIR/report.md with figures, from the runs")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(main=_report)

    p = commands.add_parser(
        "similar", help="the products (or a ratings run's items) nearest to ASIN under a run"
    )
    p.add_argument("run", help="run directory (DIR/runs/NAME)")
    p.add_argument("asins", nargs="*", help="one or more ASINs (any case)")
    p.add_argument("--file", help="a file of ASINs, one per line")
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"how many (default: {DEFAULT_K})")
    p.add_argument("--cosine", action="store_true", help="cosine similarity of the vectors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _table_options(p, "RUN/similar.parquet", "every product of the vocabulary (or of --file)")
    p.set_defaults(main=_similar)

    p = commands.add_parser(
        "recommend", help="the items a user would rate highest, of those not rated, under a run"
    )
    p.add_argument("run", help="run directory of a ratings dataset (DIR/runs/NAME)")
    p.add_argument("user", nargs="?", help="the user's id in the raw file (userId, reviewerID)")
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"how many (default: {DEFAULT_K})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--file", help="with --all: a file of user ids, one per line")
    _table_options(p, "RUN/recommend.parquet", "every user (or those of --file)")
    p.set_defaults(main=_recommend)
    return parser


def _table_options(p: argparse.ArgumentParser, default_out: str, whom: str) -> None:
    p.add_argument("--all", action="store_true", help=f"write a table: k answers for {whom}")
    p.add_argument("--out", help=f"with --all: the Parquet file (default: {default_out})")
    p.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="exact search; tiles: only the --tile-share of candidate tiles with the best "
        "bounds (approximate, recall measured); ann: a faiss index built once and saved "
        "beside the run (default: --all: exact; one query: the saved index when there is "
        "one, else exact)",
    )
    p.add_argument(
        "--tile-share",
        type=float,
        default=DEFAULT_TILE_SHARE,
        help=f"the share of tiles --method tiles scores (default: {DEFAULT_TILE_SHARE})",
    )
    p.add_argument(
        "--index",
        choices=KINDS,
        default=DEFAULT_INDEX,
        help=f"the faiss index of --method ann (default: {DEFAULT_INDEX})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for a launcher's processes
    return cli.run(args.main, args)


if __name__ == "__main__":
    sys.exit(main())
