"""docs/kimi-api.md: every section the code cites exists, so a citation can never dangle.

A citation is a section sign followed by a number (``N`` or ``N.M``, optionally a range ``N–M`` and, after
section 10, a recorded-response tag such as ``R1``). It refers to the document named last before it in the
same file: after the API reference's file name (with or without its ``docs/`` folder) a bare section sign
cites that document; after ``DESIGN.md`` it does not. The section sign is written as an escape in this file so that
the file does not cite anything itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs/kimi-api.md"
CITING_TREES = ("src", "tests", "bench", "examples", "README.md")
MAX_SCANNED_BYTES = 2_000_000
"""Larger files are data (recordings, fixtures), not prose that cites sections."""

_SECTION = "\u00a7"
_NUMBER = r"\d+(?:\.\d+)?"
# A document name, or one citation: number, optional range end, optional recorded-response tag.
_TOKEN = re.compile(
    r"(?P<doc>[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md)\b"
    rf"|{_SECTION}\s*(?P<first>{_NUMBER})(?!\d)\.?"
    rf"(?:\s*[\u2013\u2014-]\s*{_SECTION}?\s*(?P<last>{_NUMBER})(?!\d))?"
    r"(?:\s+(?P<tag>R\d+[a-z]?)\b)?"
)
_HEADING = re.compile(rf"^#{{2,6}}\s+(?P<number>{_NUMBER})[.\s]", re.MULTILINE)
_RECORDED_SECTION = "10"


@dataclass(frozen=True)
class Citation:
    """One reference to a section (and perhaps a recorded response) of docs/kimi-api.md."""

    where: str
    section: str
    tag: str | None = None


def cited_sections(text: str, where: str) -> list[Citation]:
    """The docs/kimi-api.md citations in ``text``; ``where`` names the file for error messages."""
    citations: list[Citation] = []
    current_doc: str | None = None
    for match in _TOKEN.finditer(text):
        if match["doc"] is not None:
            current_doc = match["doc"].rsplit("/", 1)[-1]
            continue
        if current_doc != DOC.name:
            continue
        line = text.count("\n", 0, match.start()) + 1
        place = f"{where}:{line}"
        citations.append(Citation(place, match["first"], match["tag"] if match["last"] is None else None))
        if match["last"] is not None:
            citations.append(Citation(place, match["last"], match["tag"]))
    return citations


def _citing_files() -> list[Path]:
    files: list[Path] = []
    for name in CITING_TREES:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for path in candidates:
            parts = set(path.relative_to(ROOT).parts)
            if parts & {"__pycache__", ".venv", "node_modules"} or not path.is_file():
                continue
            if path.stat().st_size <= MAX_SCANNED_BYTES:
                files.append(path)
    return files


def _repo_citations() -> list[Citation]:
    citations: list[Citation] = []
    for path in _citing_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data cannot cite anything
        citations.extend(cited_sections(text, str(path.relative_to(ROOT))))
    return citations


def _doc_headings(doc_text: str) -> set[str]:
    return {m["number"] for m in _HEADING.finditer(doc_text)}


def _recorded_section(doc_text: str) -> str:
    start = re.search(rf"^## {_RECORDED_SECTION}\.", doc_text, re.MULTILINE)
    assert start is not None, f"docs/kimi-api.md has no '## {_RECORDED_SECTION}.' section for recorded responses"
    end = re.search(r"^## \d", doc_text[start.end():], re.MULTILINE)
    return doc_text[start.start(): start.end() + end.start() if end else len(doc_text)]


def test_parser_reads_chains_ranges_tags_and_other_documents() -> None:
    """Lists, ranges, a trailing period and R-tags are citations; a sign after another document is not."""
    s = _SECTION
    text = (
        f"(docs/kimi-api.md {s}2.1, {s}2.2, {s}5)\n"
        f"docs/kimi-api.md {s}1\u20138 and {s}7.2\u20137.3; errors {s}5.2.\n"
        f"see docs/kimi-api.md {s}10 R1 and {s}6.3.\n"
        f"DESIGN.md {s}9 is not ours; docs/kimi-api.md, issue #2 names no section\n"
    )
    got = [(c.where, c.section, c.tag) for c in cited_sections(text, "f")]
    assert got == [
        ("f:1", "2.1", None), ("f:1", "2.2", None), ("f:1", "5", None),
        ("f:2", "1", None), ("f:2", "8", None), ("f:2", "7.2", None), ("f:2", "7.3", None),
        ("f:2", "5.2", None),
        ("f:3", "10", "R1"), ("f:3", "6.3", None),
    ]


def test_every_cited_section_of_kimi_api_md_exists() -> None:
    """Each citation in src/, tests/, bench/, examples/ and README.md names a heading of docs/kimi-api.md."""
    assert DOC.is_file(), "docs/kimi-api.md is missing: the code cites it for every wire fact"
    doc_text = DOC.read_text(encoding="utf-8")
    headings = _doc_headings(doc_text)
    recorded = _recorded_section(doc_text)
    citations = _repo_citations()
    assert len(citations) >= 10, f"only {len(citations)} citations of {DOC.name} found: is the scan broken?"
    dangling = [
        f"{c.where}: cites section {c.section}, which is not a heading of docs/kimi-api.md"
        for c in citations
        if c.section not in headings
    ]
    dangling += [
        f"{c.where}: cites recorded response {c.tag}, which section {_RECORDED_SECTION} does not describe"
        for c in citations
        if c.tag is not None and (c.section != _RECORDED_SECTION or not re.search(rf"\b{c.tag}\b", recorded))
    ]
    assert not dangling, (
        "dangling citations (fix the section number or add the heading):\n  " + "\n  ".join(dangling)
        + f"\nheadings present: {', '.join(sorted(headings, key=_numeric))}"
    )


def _numeric(number: str) -> tuple[int, ...]:
    return tuple(int(part) for part in number.split("."))


@pytest.mark.parametrize("section", ["1", "2.1", "2.5", "4.3", "5.2", "5.3", "6.1", "6.3", "7.4", "8"])
def test_core_sections_stay_where_the_code_expects_them(section: str) -> None:
    """The sections the client and simulator lean on most keep their numbers."""
    assert section in _doc_headings(DOC.read_text(encoding="utf-8"))
