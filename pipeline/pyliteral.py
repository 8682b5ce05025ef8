"""Python dict literals (the 2014 metadata format) to JSON text, without eval.

The 2014 files hold one ``repr(dict)`` per line. Rather than run
``ast.literal_eval`` on every line (about 16 MB/s), :func:`to_json` rewrites a
whole block of such lines into JSON with one regular-expression pass, so the
block can be parsed by ijson's C backend. Text that is not plain ``repr``
output (``None``, tuples, ``\\x`` escapes, code) simply fails to parse as JSON
and is handed to :func:`literal`, the safe slow path.
"""

from __future__ import annotations

import ast
import re
import warnings

# Each match is a run of "easy" text (anything outside quotes, plus single-quoted
# strings free of escapes and double quotes), then at most one "hard" string.
# Strings never span lines: a raw newline inside quotes is not repr output.
_RUN_THEN_HARD = re.compile(
    rb"((?:[^'\"]++|'[^'\"\\\n]*+')*+)"
    rb"('(?:[^'\\\n]|\\.)*+'|\"(?:[^\"\\\n]|\\.)*+\")?"
)


def _hard_string(quoted: bytes) -> bytes:
    """A Python string literal with escapes or quotes inside, as a JSON string."""
    body = quoted[1:-1]
    if b"\\/" in body:  # JSON reads \/ as "/", Python as two characters
        return b"\x00"  # invalid JSON: the slow path decides
    if quoted[:1] == b"'":
        body = body.replace(b'"', b'\\"')
    return b'"' + body.replace(b"\\'", b"'") + b'"'


def _rewrite(match: re.Match) -> bytes:
    run, hard = match.group(1, 2)
    run = run.replace(b"'", b'"')
    return run + _hard_string(hard) if hard else run


def to_json(text: bytes) -> bytes:
    """Rewrite Python-literal text (``repr`` of dicts, lists, str, numbers) as JSON.

    Exact for ``repr`` output whose strings use only JSON-compatible escapes;
    anything else comes out as invalid JSON, never as different valid JSON.
    """
    return _RUN_THEN_HARD.sub(_rewrite, text)


def literal(line: str) -> object:
    """Evaluate one line as a Python literal, safely; ValueError if it is not one."""
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" is the data's, not ours
            warnings.simplefilter("ignore")
            return ast.literal_eval(line)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
