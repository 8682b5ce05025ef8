"""Atomic outputs: write under a temporary name, rename when complete.

A killed or failed run leaves no file under a final name, so a later stage
(or make) never mistakes a half-written output for a finished one. A
temporary is named ``.NAME.PID.tmp`` after the process writing it, so the
next run of a stage can tell a killed run's leftovers from a live writer's
and remove them. A write that fails for lack of disk space ends in one line
saying so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded")


def temporary_name(path: Path) -> Path:
    """The in-progress name of ``path``: hidden, same folder, so rename is atomic."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        if out_of_space(exc, path.parent):
            raise no_space(path) from None
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def temporary_folder(path: Path) -> Iterator[Path]:
    """A work folder named as a temporary of ``path``, removed when the block ends."""
    folder = temporary_name(Path(path))
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` comes from a full disk (or quota) where ``folder`` lives.

    OSError says so by errno; Arrow, polars and torch's writers by their
    message, or (torch's zip writer: "file write failed") by the disk being
    full when they fail.
    """
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    text = str(exc)
    if any(words in text for words in _NO_SPACE_TEXT):
        return True
    return "write" in text.lower() and free_bytes(folder) < 1 << 20


def free_bytes(folder: Path) -> int:
    """Bytes free to this user on the filesystem holding ``folder``."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def no_space(path: Path) -> Exception:
    """The one-line error for a write to ``path`` that ran out of disk space."""
    free = free_bytes(path.parent)
    return PipelineError(f"{path}: no space left on device ({_size(free)} free)")


def require_space(path: Path, needed: int) -> None:
    """Refuse at once a write of ``needed`` bytes that cannot fit, before any is written."""
    free = free_bytes(path.parent)
    if free < needed:
        raise PipelineError(
            f"{path}: no space left on device ({_size(free)} free, {_size(needed)} needed)"
        )


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def clear_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed runs left in ``folder``; return them.

    A temporary whose writer process still runs is kept.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or _alive(int(match.group(1))):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier run that held this same pid is long gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a stage's JSON stats file."""
    return json.loads(Path(path).read_text())
