"""Shared command-line plumbing: one-line errors, a stats summary, a reader gone early,
the types of --seed and --weights."""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Callable
from numbers import Integral

from pipeline.errors import PipelineError

# The exit code when stdout's reader has gone (`... | head -1`): what a shell
# reports for `cat` killed by SIGPIPE in the same place. Not 0, since not all
# was delivered; not 1 or 2, which say something went wrong worth a message.
READER_GONE = 141  # 128 + SIGPIPE (13)


def run(main: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """Call ``main(args)``; expected failures print one line and exit 2, and
    output whose reader has gone ends quietly (READER_GONE)."""
    try:
        main(args)
        sys.stdout.flush()  # a reader gone before the last lines shows here, not at exit
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output was finalised", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _reader_gone():
            raise  # a pipe of some other kind: a real failure
        return READER_GONE
    return 0


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it; if so, point stdout at
    /dev/null, so the interpreter's last flush at exit has nowhere to fail."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no stdout
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return gone


def relation_weights(text: str) -> dict[str, float]:
    """The type of ``--weights``: ``rel=w,rel=w`` as a dict (pairs checks the names)."""
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


def summary(stage: str, stats: dict, keys: list[str]) -> None:
    """Print ``stage: key=value ...`` for the named stats, on stdout."""
    print(f"{stage}: " + " ".join(f"{k}={stats[k]}" for k in keys if k in stats))


# The one range of every --seed, of both command lines and of recsys_stream's
# TrainConfig.seed: what each of its consumers takes. torch.manual_seed takes at
# most 2**64 - 1 (above it: "Overflow when unpacking long long"); numpy's
# default_rng and SeedSequence take any size; split's SplitMix key keeps the low
# 64 bits; a signed 64-bit integer is what Spark's and Parquet's longs hold.
MAX_SEED = 2**63 - 1


SEED_RANGE = f"--seed must be an integer from 0 to {MAX_SEED}"


def check_seed(seed: object) -> int:
    """The one check of a seed, of every stage's library function: an integer
    (numpy's too, not a bool) from 0 to MAX_SEED, as an int; else one line."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed <= MAX_SEED:
        raise PipelineError(f"{SEED_RANGE}, got {seed!r}")
    return int(seed)


def seed(text: str) -> int:
    """The type of every ``--seed`` option: :func:`check_seed` of the integer ``text``.

    A seed outside it is refused where it is parsed, before anything runs, in
    the one line of every expected mistake (``error: ...``, exit 2) instead of
    argparse's usage and message: it exits as argparse does on a bad option.
    The line shows ``text`` as given.
    """
    try:
        return check_seed(int(text))
    except (ValueError, PipelineError):
        print(f"error: {SEED_RANGE}, got {text}", file=sys.stderr)
        raise SystemExit(2) from None
