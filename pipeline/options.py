"""Stage options as frozen dataclasses, and the command line built from them.

Each stage declares its arguments once, as the fields of a frozen,
keyword-only dataclass beside its function (``split.SplitOptions``): the
field's default is the option's one default (the function's keyword defaults
name the fields), and its metadata holds the help text, the choices and the
range the function accepts (``low``, ``above``, ``below``: what its checks
refuse outside, in one line naming the flag). :func:`add_arguments` turns
the fields into a subcommand's arguments, so the command line repeats
nothing; the stage function checks the values, whoever calls it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass, field

from pipeline import cli
from pipeline.cli import MAX_SEED
from pipeline.spark import DEFAULT_SPARK_MASTER, ENGINES


def option(default=MISSING, help: str = "", *, factory=MISSING, **details) -> dataclasses.Field:
    """An option ``--name`` of a stage: its default (or ``factory`` making it; none:
    the option is required), help text and ``details``.

    ``details``: ``choices``; ``parse``, the command line's type when not the
    default's; ``flag`` when not the field's name; ``metavar``; the range
    ``low`` (inclusive), ``above`` and ``below`` (exclusive).
    """
    metadata = {"help": help, **details}
    return field(default=default, default_factory=factory, metadata=metadata)


def argument(help: str, metavar: str | None = None) -> dataclasses.Field:
    """A stage's positional argument: required, shown as ``metavar``."""
    return field(metadata={"help": help, "positional": True, "metavar": metavar})


def seed_option(default: int = 42) -> dataclasses.Field:
    """``--seed``: every stage's, in the one range cli.check_seed holds to."""
    return option(default, "seed of every random draw", parse=cli.seed, low=0, high=MAX_SEED)


@dataclass(frozen=True, kw_only=True)
class QuietOptions:
    """``--quiet``, which every stage takes."""

    quiet: bool = option(False, "no progress bar")


@dataclass(frozen=True, kw_only=True)
class EngineOptions(QuietOptions):
    """The engine a data stage runs on (spark.py), after ``--quiet``."""

    engine: str = option(
        "polars",
        "polars on this machine, or Spark (pip install -e '.[spark]', Java 17)",
        choices=ENGINES,
    )
    spark_master: str | None = option(
        None,
        "with --engine spark: the cluster's master URL (default: the running "
        f"session's, else {DEFAULT_SPARK_MASTER})",
    )


def flag(f: dataclasses.Field) -> str:
    """The command line's name of option ``f``."""
    return f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"


def default(f: dataclasses.Field):
    """The default of option ``f`` (a fresh one when it has a factory), or MISSING."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


def add_arguments(parser: argparse.ArgumentParser, options: type) -> None:
    """One argument per field of ``options``, in field order (``--quiet`` and the
    engine's first, from the base classes).

    A flag whose default is False is a switch; one whose default is True also
    takes ``--no-NAME``. Other options show their default in their help.
    """
    for f in dataclasses.fields(options):
        meta, value = f.metadata, default(f)
        if meta.get("positional"):
            parser.add_argument(f.name, metavar=meta["metavar"], help=meta["help"])
        elif value is False:
            parser.add_argument(flag(f), dest=f.name, action="store_true", help=meta["help"])
        elif value is True:
            action = argparse.BooleanOptionalAction
            shown = _with_default(meta["help"])
            parser.add_argument(flag(f), dest=f.name, action=action, default=True, help=shown)
        else:
            shown = meta["help"] if value in (None, MISSING) else _with_default(meta["help"])
            parser.add_argument(
                flag(f),
                dest=f.name,
                type=meta.get("parse", type(value) if value not in (None, MISSING) else None),
                default=None if value is MISSING else value,
                required=value is MISSING,
                choices=meta.get("choices"),
                metavar=meta.get("metavar"),
                help=shown,
            )


def _with_default(text: str) -> str:
    return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def from_args(options: type, args: argparse.Namespace):
    """The ``options`` dataclass of the parsed ``args``."""
    return options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options)})


def keywords(values) -> dict:
    """An options dataclass's fields as a stage function's keyword arguments."""
    return {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
