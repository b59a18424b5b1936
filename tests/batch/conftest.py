"""Helpers for the batch tests: JSONL files and an in-process simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from kimiflow.sim import SimConfig, Simulator


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """Write rows (dicts are JSON-encoded, strings written verbatim) one per line."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompts(n: int, max_tokens: int = 20) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "prompt": f"question {i}", "max_tokens": max_tokens} for i in range(n)]


@pytest.fixture
async def fresh_sim() -> AsyncIterator[Simulator]:
    """A simulator of its own (fresh counters), no tier limits, fast."""
    async with Simulator(SimConfig(seed=1)) as simulator:
        yield simulator
