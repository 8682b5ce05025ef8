"""The documentation holds together: a short README, links that lead somewhere,
and the performance markers that `make bench` rewrites between."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PERFORMANCE = REPO / "docs" / "performance.md"
DOCS = [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text of links and code kept, lowercase,
    punctuation other than hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """The relative link targets in ``path``'s prose (not in code), with their lines."""
    return [
        (number, target)
        for number, line in prose_lines(path)
        for target in LINK.findall(INLINE_CODE.sub("", line))
        if not SCHEME.match(target)
    ]


def test_the_readme_reads_in_five_minutes():
    lines = README.read_text().count("\n")
    assert lines <= 260, f"README.md has {lines} lines: move detail into docs/"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_a_heading(path):
    assert path.exists()
    broken = []
    for number, target in links(path):
        file, _, anchor = target.partition("#")
        goal = (path.parent / file).resolve() if file else path
        where = f"{path.relative_to(REPO)}:{number}: {target}"
        if not goal.exists():
            broken.append(f"{where}: no such file")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            broken.append(f"{where}: no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_the_benchmark_tables_live_between_markers_in_docs():
    text = PERFORMANCE.read_text()
    begin, end = "<!-- performance:begin -->", "<!-- performance:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    assert text.index(begin) < text.index(end)
    assert begin not in README.read_text(), "the tables moved to docs/performance.md"


def test_slugs_follow_githubs_rule():
    assert slug("Formats accepted by `parse`") == "formats-accepted-by-parse"
    assert slug("Row-sharded tables (planned, not built)") == "row-sharded-tables-planned-not-built"
    assert slug("Graph embeddings: random walks and skip-gram") == (
        "graph-embeddings-random-walks-and-skip-gram"
    )
