"""Reading a raw file as blocks of whole lines, counting its lines and bytes."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import PipelineError


def line_blocks(
    stream: BinaryIO, raw: Path, tally: dict, block_bytes: int
) -> Iterator[tuple[bytes, int]]:
    """(block of whole lines, number of its first line), about ``block_bytes`` each;
    adds the lines and bytes read to ``tally``. A last line without its newline
    is a line too."""
    carry, first_line = b"", 1
    while True:
        try:
            chunk = stream.read(block_bytes)
        except (EOFError, OSError, zlib.error) as exc:
            raise PipelineError(
                f"{raw}: truncated or corrupt gzip stream after line {first_line - 1} ({exc})"
            ) from None
        if not chunk:
            break
        tally["bytes"] += len(chunk)
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        block, carry = data[:cut], data[cut:]
        if block:
            yield block, first_line
            lines = block.count(b"\n")
            first_line += lines
            tally["lines"] += lines
    if carry:
        tally["lines"] += 1
        yield carry, first_line
