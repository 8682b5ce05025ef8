"""Opening a raw metadata file (plain or gzip) and telling its format from its lines."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.decode import decode_line
from pipeline.errors import PipelineError

FORMATS = ("py", "json", "json2018")
_KEYS_2018 = {"also_buy", "also_view", "main_cat", "category"}
_SNIFF_BYTES = 1 << 20
_SNIFF_LINES = 50


class _Digesting:
    """A binary file whose bytes, as they are read, also go to a hash."""

    def __init__(self, file: BinaryIO, digest):
        self.file, self.digest = file, digest

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        return data

    def tell(self) -> int:
        return self.file.tell()


@contextlib.contextmanager
def open_raw(raw: Path, digest=None) -> Iterator[tuple[BinaryIO, Callable[[], int]]]:
    """The decompressed byte stream of ``raw`` (gzip told by its magic bytes, not
    its name) and a function giving how far into the file on disk it has read.

    ``digest`` (a hashlib object): updated with the file's bytes on disk as
    the stream is read, so a whole read also hashes the file.
    """
    try:
        file = open(raw, "rb")
    except OSError as exc:
        raise PipelineError(f"{raw}: cannot read ({exc.strerror})") from None
    with file:
        gzipped = file.read(2) == b"\x1f\x8b"
        file.seek(0)
        source = _Digesting(file, digest) if digest is not None else file
        yield (gzip.GzipFile(fileobj=source) if gzipped else source), file.tell


def detect_format(raw: Path) -> str:
    """py, json or json2018, from the first lines that hold a record."""
    with open_raw(raw) as (stream, _):
        try:
            head = stream.read(_SNIFF_BYTES)
        except (EOFError, OSError, zlib.error) as exc:
            raise PipelineError(f"{raw}: truncated or corrupt gzip stream ({exc})") from None
    if not head.strip():
        raise PipelineError(f"{raw}: empty file")
    for line in head.split(b"\n")[:_SNIFF_LINES]:
        record = decode_line(line, python_literal=False)
        if isinstance(record, dict):
            return "json2018" if _KEYS_2018 & record.keys() and "related" not in record else "json"
        if isinstance(decode_line(line, python_literal=True), dict):
            return "py"
    raise PipelineError(
        f"{raw}: cannot tell the format from its first lines "
        f"(neither JSON nor Python dict literals); pass --format"
    )
