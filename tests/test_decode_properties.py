"""Property tests of the line decoders: exact on repr output, total on garbage."""

from __future__ import annotations

import ast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.decode import count_lines, decode_block, decode_line
from pipeline.normalise import to_batch
from pipeline.pyliteral import to_json

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.text(max_size=30)
    | (st.floats(allow_nan=False, allow_infinity=False))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
records = st.dictionaries(st.text(max_size=10), values, max_size=6)


@given(records)
@settings(max_examples=400)
def test_python_literal_lines_decode_exactly(record):
    line = repr(record).encode("utf-8", "surrogatepass")
    decoded = decode_line(line, python_literal=True)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in repr(record)):
        return  # lone surrogates cannot be UTF-8 file content
    assert decoded == record


@given(st.lists(records, min_size=1, max_size=30))
@settings(max_examples=150)
def test_python_literal_blocks_decode_exactly(batch):
    text = "".join(repr(r) + "\n" for r in batch)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return
    decoded, rejects = decode_block(text.encode(), 1, python_literal=True)
    assert rejects == []
    assert [r for _, r in decoded] == [ast.literal_eval(line) for line in text.splitlines()]


@given(st.binary(max_size=400), st.booleans())
@settings(max_examples=400)
def test_random_bytes_never_crash_and_every_line_is_accounted_for(data, python_literal):
    decoded, rejects = decode_block(data, 1, python_literal)
    batch, refused = to_batch(decoded)
    assert len(decoded) + len(rejects) == count_lines(data)
    assert batch.num_rows + len(refused) == len(decoded)
    numbers = sorted([n for n, _ in decoded] + [n for n, _, _ in rejects])
    assert numbers == list(range(1, count_lines(data) + 1))


good_lines = st.builds(
    lambda asin, title, also: repr(
        {"asin": asin, "title": title, "related": {"also_bought": also}}
    ),
    st.text(min_size=1, max_size=10),
    st.text(max_size=20),
    st.lists(st.text(max_size=10), max_size=5),
)


@given(st.lists(good_lines, min_size=1, max_size=20), st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_lines_are_all_accounted_for(lines, data):
    mutated = []
    for line in lines:
        cut = data.draw(st.integers(0, len(line)))
        junk = data.draw(st.sampled_from(["", "'", '"', "\\", "{", "}", "\n", "\xff", "None"]))
        mutated.append(line[:cut] + junk + line[cut + data.draw(st.integers(0, 3)) :])
    block = "\n".join(mutated).encode("utf-8", "surrogateescape")
    decoded, rejects = decode_block(block, 1, python_literal=True)
    assert len(decoded) + len(rejects) == count_lines(block)
    batch, refused = to_batch(decoded)
    assert batch.num_rows + len(refused) == len(decoded)
    for _, record in decoded:  # whatever decodes, decodes as Python would
        assert isinstance(record, dict)


def test_to_json_examples():
    assert to_json(b"{'a': \"it's\", 'b': 'say \"hi\"'}") == b'{"a": "it\'s", "b": "say \\"hi\\""}'
    assert to_json(b"{'a': 'don\\'t'}") == b'{"a": "don\'t"}'
