"""Partial parsing of a streamed JSON answer: kimiflow's incremental parser vs re-parsing per chunk.

A structured answer of about 200 kB (a list of support tickets: strings in Chinese and English,
numbers, booleans, nulls, nested objects and lists) arrives in 4,000 chunks. Each peer must have
the partial object after every chunk, as a UI rendering the answer live would:

- json.loads once:  one ``json.loads`` of the final text: the floor, no partial objects at all;
- kimiflow:         ``PartialJSON.feed`` per chunk, ``finish`` at the end (state kept between chunks);
- jiter per chunk:  ``jiter.from_json(text_so_far, partial_mode="trailing-strings")`` per chunk,
                    what openai-python's ``chat.completions.stream`` does for ``response_format``
                    (it passes ``partial_mode=True``; the cost is the same);
- instructor:       ``Partial[Model].model_from_chunks`` (jiter per chunk plus its own completeness
                    scan and pydantic model building), only if ``instructor`` is installed.

Each peer's final object is checked against ``json.loads``. CPU is ``time.process_time`` (other
processes on the shared machine do not inflate it), best of ``--repeat`` runs; the slow peers run
once. The same chunk size at a quarter of the document shows how each grows with the length:
x4 is linear, x16 quadratic.

Two calibration rows parse nothing: a ``feed()`` method that only keeps the chunk, and one that
does the least any Python partial parser must do per chunk (join the chunk to its tail, find a
quote, show one string's prefix, keep a short tail). The second alone costs 1.4-2x one
``json.loads`` at 4,000 chunks (measured on a shared machine): the issue's 2x target is the price
of a few C calls per chunk, before any member is parsed.

A second table runs kimiflow alone on the same document cut into fewer and more chunks: a
container that is complete within one chunk goes to the C scanner whole, one that is still open
is walked member by member in Python, so the ratio to ``json.loads`` says how much of the answer
had to be walked (see ``kimiflow.core.partial_json`` for why 2x is out of reach at ~50 characters
a chunk).

Run: ``.venv/bin/python bench/bench_partial_json.py [--size 200000] [--chunks 4000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections.abc import Callable
from typing import Any

import jiter

from kimiflow.core.partial_json import PartialJSON

_WORDS = ("the", "model", "reads", "月之暗面", "工单", "billing", "customer", "summary", "pipeline", "latency",
          "数据", "分析", "refund", "退款", "订单", "shipping")  # fmt: skip


def build_document(size: int, seed: int = 1) -> str:
    """A JSON answer of at least ``size`` UTF-8 bytes: ``{"tickets": [...], "count": N}``."""
    rng = random.Random(seed)
    tickets: list[dict[str, Any]] = []
    length = 30
    while length < size:
        ticket = {
            "id": len(tickets),
            "title": " ".join(rng.choice(_WORDS) for _ in range(5)),
            "priority": rng.choice(["low", "medium", "high"]),
            "score": round(rng.random() * 100, 3),
            "tags": [rng.choice(_WORDS) for _ in range(3)],
            "resolved": rng.random() < 0.5,
            "assignee": None if rng.random() < 0.3 else {"name": rng.choice(_WORDS), "team": rng.choice(_WORDS)},
            "summary": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 40))),
        }
        tickets.append(ticket)
        length += len(json.dumps(ticket, ensure_ascii=False).encode()) + 2
    return json.dumps({"tickets": tickets, "count": len(tickets)}, ensure_ascii=False)


def split(text: str, chunks: int) -> list[str]:
    """``text`` in ``chunks`` pieces of (nearly) equal length."""
    cuts = [len(text) * i // chunks for i in range(chunks + 1)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def run_json_loads(text: str, chunks: list[str]) -> Any:
    return json.loads(text)


def run_kimiflow(text: str, chunks: list[str]) -> Any:
    parser = PartialJSON()
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish()


class _StoreOnly:
    """Calibration, not a parser: ``feed`` keeps the chunk and returns the (empty) object."""

    __slots__ = ("parts", "root")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.root: dict[str, Any] = {}

    def feed(self, chunk: str) -> Any:
        self.parts.append(chunk)
        return self.root


class _OneString:
    """Calibration, not a parser: the least any Python partial parser does per chunk (join the
    chunk to the unparsed tail, find a quote, show one string's prefix, keep a short tail)."""

    __slots__ = ("root", "tail")

    def __init__(self) -> None:
        self.tail = ""
        self.root: dict[str, Any] = {}

    def feed(self, chunk: str) -> Any:
        tail = self.tail + chunk
        self.root["text"] = tail[tail.rfind('"') + 1 :]
        self.tail = tail[-64:]
        return self.root


def run_store_only(text: str, chunks: list[str]) -> Any:
    feeder = _StoreOnly()
    for chunk in chunks:
        feeder.feed(chunk)
    return None


def run_one_string(text: str, chunks: list[str]) -> Any:
    feeder = _OneString()
    for chunk in chunks:
        feeder.feed(chunk)
    return None


def run_jiter(text: str, chunks: list[str]) -> Any:
    so_far = ""
    value = None
    for chunk in chunks:
        so_far += chunk
        value = jiter.from_json(so_far.encode(), partial_mode="trailing-strings")
    return value


def _instructor_runner() -> Callable[[str, list[str]], Any] | None:
    try:
        import instructor
        import pydantic
    except ImportError:
        return None

    class Assignee(pydantic.BaseModel):
        name: str
        team: str

    class Ticket(pydantic.BaseModel):
        id: int
        title: str
        priority: str
        score: float
        tags: list[str]
        resolved: bool
        assignee: Assignee | None
        summary: str

    class Answer(pydantic.BaseModel):
        tickets: list[Ticket]
        count: int

    partial_model: Any = instructor.Partial[Answer]  # type: ignore[misc]

    def run(text: str, chunks: list[str]) -> Any:
        final = None
        for partial in partial_model.model_from_chunks(iter(chunks)):
            final = partial
        return final.model_dump(mode="json") if final is not None else None

    return run


def measure(run: Callable[[str, list[str]], Any], text: str, chunks: list[str], repeat: int) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.process_time()
        result = run(text, chunks)
        best = min(best, time.process_time() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000, help="document size in UTF-8 bytes")
    parser.add_argument("--chunks", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of the fast peers; the best counts")
    parser.add_argument("--slow-repeat", type=int, default=1, help="runs of jiter per chunk and instructor")
    args = parser.parse_args()

    text = build_document(args.size)
    chunks = split(text, args.chunks)
    small_text = build_document(args.size // 4)
    small_chunks = split(small_text, max(1, round(len(chunks) * len(small_text) / len(text))))
    expected = json.loads(text)
    small_expected = json.loads(small_text)

    peers: list[tuple[str, Callable[[str, list[str]], Any] | None, int]] = [
        ("json.loads once", run_json_loads, args.repeat),
        ("kimiflow PartialJSON", run_kimiflow, args.repeat),
        ("jiter per chunk (openai-python)", run_jiter, args.slow_repeat),
        ("instructor Partial", _instructor_runner(), args.slow_repeat),
        ("floor: feed() keeps the chunk", run_store_only, args.repeat),
        ("floor: feed() shows one string", run_one_string, args.repeat),
    ]
    print(f"document: {len(text.encode()):,} bytes in {len(chunks):,} chunks "
          f"(quarter size for growth: {len(small_text.encode()):,} bytes in {len(small_chunks):,} chunks)")  # fmt: skip
    rows: list[tuple[str, float | None, float | None]] = []
    for name, run, repeat in peers:
        if run is None:
            rows.append((name, None, None))
            continue
        seconds, result = measure(run, text, chunks, repeat)
        small_seconds, small_result = measure(run, small_text, small_chunks, repeat)
        if not name.startswith("floor") and (result != expected or small_result != small_expected):
            raise SystemExit(f"{name}: the final object differs from json.loads")
        rows.append((name, seconds, small_seconds))

    floor = rows[0][1] or 1e-9
    ours = rows[1][1] or 1e-9
    print()
    print(f"| {'peer':<32} | {'total CPU ms':>12} | {'µs/chunk':>9} | {'× json.loads':>12} | {'× kimiflow':>10} | "
          f"{'growth ×4 size':>14} |")  # fmt: skip
    print(f"|{'-' * 34}|{'-' * 14}:|{'-' * 10}:|{'-' * 13}:|{'-' * 11}:|{'-' * 15}:|")
    for name, seconds, small_seconds in rows:
        if seconds is None:
            print(f"| {name:<32} | {'not installed':>12} | {'':>9} | {'':>12} | {'':>10} | {'':>14} |")
            continue
        growth = seconds / small_seconds if small_seconds else float("nan")
        print(f"| {name:<32} | {seconds * 1000:>12.1f} | {seconds / len(chunks) * 1e6:>9.2f} | "
              f"{seconds / floor:>12.1f} | {seconds / ours:>10.2f} | {growth:>14.1f} |")  # fmt: skip

    print()
    print(f"| {'kimiflow, same document in':<28} | {'chars/chunk':>11} | {'total CPU ms':>12} | {'× json.loads':>12} |")
    print(f"|{'-' * 30}|{'-' * 12}:|{'-' * 13}:|{'-' * 13}:|")
    for count in sorted({10, 100, 1000, len(chunks), 4 * len(chunks)}):
        pieces = split(text, count)
        seconds, result = measure(run_kimiflow, text, pieces, args.repeat)
        if result != expected:
            raise SystemExit(f"kimiflow in {count} chunks: the final object differs from json.loads")
        print(f"| {f'{len(pieces):,} chunks':<28} | {len(text) / len(pieces):>11,.0f} | {seconds * 1000:>12.1f} | "
              f"{seconds / floor:>12.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
