"""Lines of a metadata file to Python objects, or each bad line with its reason.

A block of lines is first parsed whole by ijson (after :func:`to_json` for the
Python-literal format). When that fails, the block is halved until the bad
lines are isolated, so a rare bad line costs a few small re-parses rather
than sending a whole file down the slow path.
"""

from __future__ import annotations

import ijson

from pipeline.pyliteral import literal, to_json

SINGLE_LINE_BELOW = 16  # blocks this small are decoded line by line
PREVIEW_CHARS = 200

Decoded = tuple[int, dict]  # (1-based line number, record)
Reject = tuple[int, str, str]  # (line number, reason, first characters)


def decode_block(
    block: bytes, first_line: int, python_literal: bool
) -> tuple[list[Decoded], list[Reject]]:
    """Decode the lines of ``block``, the first being line ``first_line``.

    Every line ends up in exactly one of the two lists.
    """
    decoded: list[Decoded] = []
    rejects: list[Reject] = []
    _decode(block, first_line, python_literal, decoded, rejects)
    return decoded, rejects


def count_lines(block: bytes) -> int:
    """Lines in ``block``; a last line without a newline counts."""
    return block.count(b"\n") + (0 if block.endswith(b"\n") or not block else 1)


def _decode(block, first_line, python_literal, decoded, rejects) -> None:
    lines = count_lines(block)
    records = _whole(block, lines, python_literal)
    if records is not None:
        decoded.extend(zip(range(first_line, first_line + lines), records))
    elif lines < SINGLE_LINE_BELOW:
        for offset, line in enumerate(block.split(b"\n")[:lines]):
            number = first_line + offset
            record = decode_line(line, python_literal)
            if isinstance(record, dict):
                decoded.append((number, record))
            else:
                rejects.append((number, record, preview(line)))
    else:
        cut = block.find(b"\n", len(block) // 2)
        if cut in (-1, len(block) - 1):
            cut = block.rfind(b"\n", 0, len(block) - 1)
        head, tail = block[: cut + 1], block[cut + 1 :]
        _decode(head, first_line, python_literal, decoded, rejects)
        _decode(tail, first_line + count_lines(head), python_literal, decoded, rejects)


def _whole(block: bytes, lines: int, python_literal: bool) -> list | None:
    """All records of a block whose every line is one JSON object, else None.

    Each newline must sit between ``}`` and ``{``: such a newline cannot be
    inside a JSON value, so ``lines`` values means one object per line.
    """
    text = to_json(block) if python_literal else block
    if b"\r" in text:
        text = text.replace(b"\r\n", b"\n")
    body = text[:-1] if text.endswith(b"\n") else text
    if not (body[:1] == b"{" and body[-1:] == b"}" and body.count(b"}\n{") == lines - 1):
        return None
    try:
        records = list(ijson.items(text, "", multiple_values=True, use_float=True))
    except (ijson.JSONError, UnicodeDecodeError, ValueError):
        return None
    return records if len(records) == lines else None


def decode_line(line: bytes, python_literal: bool) -> dict | str:
    """The record on one line, or the reason it has none."""
    line = line.strip()
    if not line:
        return "blank line"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    if line[:1] == b"{" and line[-1:] != b"}":
        return "truncated line"
    try:
        record = _one_json(to_json(line) if python_literal else line)
    except (ijson.JSONError, UnicodeDecodeError, ValueError):
        if not python_literal:
            return "invalid JSON"
        try:
            record = literal(text)
        except ValueError:
            return "not a Python literal"
    return record if isinstance(record, dict) else "not an object"


def _one_json(text: bytes) -> object:
    """The single JSON value of ``text``; ValueError on none or several."""
    values = list(ijson.items(text, "", use_float=True))
    if len(values) != 1:
        raise ValueError("expected one JSON value")
    return values[0]


def preview(line: bytes) -> str:
    """The first characters of a line, for a rejects file a person reads."""
    return line[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
