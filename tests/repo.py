"""Copies of the repository for tests that run make in them, and running make there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_NOT_COPIED = shutil.ignore_patterns(
    "data", ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"
)


def fresh_copy(tmp_path: Path) -> Path:
    """The repository's files without data, environment or caches, as a clone has them."""
    return Path(shutil.copytree(REPO, tmp_path / "repo", ignore=_NOT_COPIED))


def make(copy: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``make ARGS`` in ``copy``, against the environment running the tests.

    ``VENV`` names this interpreter's environment and ``INSTALLED`` a stamp
    newer than the copy's pyproject.toml, so make takes the environment as
    installed and installs nothing (the tests of installing pass their own).
    """
    stamp = copy / ".tests-installed"
    stamp.touch()
    settings = [f"VENV={sys.prefix}", f"INSTALLED={stamp}"]
    return subprocess.run(
        ["make", "--no-print-directory", *args, *settings],
        cwd=copy,
        env=env or os.environ,
        capture_output=True,
        text=True,
    )
