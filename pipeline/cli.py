"""Shared command-line plumbing: one-line errors and a stats summary."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.errors import PipelineError


def run(main: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """Call ``main(args)``; expected failures print one line and exit 2."""
    try:
        main(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output was finalised", file=sys.stderr)
        return 130
    return 0


def summary(stage: str, stats: dict, keys: list[str]) -> None:
    """Print ``stage: key=value ...`` for the named stats, on stdout."""
    print(f"{stage}: " + " ".join(f"{k}={stats[k]}" for k in keys if k in stats))
