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
    is a line too.

    A gzip stream that ends early or breaks is a PipelineError naming the last
    whole line decompressed, raised after that line's block was yielded.
    """
    carry, first_line = b"", 1
    while True:
        chunk, error = _read_up_to(stream, block_bytes)
        tally["bytes"] += len(chunk)
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        block, carry = data[:cut], data[cut:]
        if block:
            yield block, first_line
            lines = block.count(b"\n")
            first_line += lines
            tally["lines"] += lines
        if error is not None:
            raise PipelineError(
                f"{raw}: truncated or corrupt gzip stream after line {first_line - 1} ({error})"
            )
        if not chunk:
            break
    if carry:
        tally["lines"] += 1
        yield carry, first_line


def _read_up_to(stream: BinaryIO, size: int) -> tuple[bytes, Exception | None]:
    """Up to ``size`` bytes of ``stream`` (fewer only at its end), and the error
    that ended it early, if any.

    A gzip stream is read a piece at a time (``read1``): a truncated or corrupt
    file fails on the piece after the last good one, and every byte decompressed
    before it is returned; one big ``read`` would lose them with the exception.
    """
    read = getattr(stream, "read1", stream.read)  # a plain file may have no read1
    pieces, got = [], 0
    try:
        while got < size and (piece := read(size - got)):
            pieces.append(piece)
            got += len(piece)
    except (EOFError, OSError, zlib.error) as exc:
        return b"".join(pieces), exc
    return b"".join(pieces), None
