"""An output file the journal does not know is refused, never truncated or adopted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimiflow.batch.journal import DoneStats, Journal, OutputConflictError
from kimiflow.batch.runner import run_batch
from kimiflow.batch.store import reconcile
from kimiflow.sim import Simulator

from .conftest import prompts, read_jsonl, write_jsonl

MODEL = "moonshot-v1-8k"


async def test_existing_output_without_a_journal_is_refused_and_left_untouched(
    tmp_path: Path, fresh_sim: Simulator
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    with pytest.raises(OutputConflictError) as caught:
        await run_batch(src, notes, api_key=fresh_sim.api_key, base_url=fresh_sim.base_url, tier=3, model=MODEL)
    assert str(caught.value) == (
        f"{notes} exists but has no journal {tmp_path / 'notes.txt.journal.sqlite'}: "
        "choose a new output= or delete the file"
    )
    assert notes.read_text() == "my precious notes\n"
    assert fresh_sim.stats.requests == 0
    assert not (tmp_path / "notes.txt.journal.sqlite").exists()  # refusing leaves nothing behind
    assert not (tmp_path / "notes.txt.errors.jsonl").exists()


async def test_deleted_journal_does_not_adopt_old_results_under_new_parameters(
    tmp_path: Path, fresh_sim: Simulator
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    out = tmp_path / "out.jsonl"
    kw = {"api_key": fresh_sim.api_key, "base_url": fresh_sim.base_url, "tier": 3}
    await run_batch(src, out, model=MODEL, **kw)  # type: ignore[arg-type]
    before = out.read_bytes()
    (tmp_path / "out.journal.sqlite").unlink()
    served = fresh_sim.stats.chat_completions
    with pytest.raises(OutputConflictError, match="exists but has no journal"):
        await run_batch(src, out, model="kimi-latest", **kw)  # type: ignore[arg-type]
    assert out.read_bytes() == before and fresh_sim.stats.chat_completions == served


async def test_a_non_empty_errors_file_without_a_journal_is_refused(tmp_path: Path, fresh_sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    errors = tmp_path / "keep.txt"
    errors.write_text("keep me\n")
    with pytest.raises(OutputConflictError, match=r"keep\.txt exists but has no journal .*choose a new errors="):
        await run_batch(src, tmp_path / "out.jsonl", errors=errors, api_key=fresh_sim.api_key,
                        base_url=fresh_sim.base_url, tier=3, model=MODEL)
    assert errors.read_text() == "keep me\n"


async def test_an_empty_existing_output_is_fine(tmp_path: Path, fresh_sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    out.touch()
    summary = await run_batch(src, out, api_key=fresh_sim.api_key, base_url=fresh_sim.base_url, tier=3,
                              model=MODEL)
    assert summary.succeeded == 2 and len(read_jsonl(out)) == 2


def _line(cid: str) -> str:
    return json.dumps({"custom_id": cid, "response": {"status_code": 200, "body": {}}, "error": None})


@pytest.mark.parametrize("full_scan", [False, True])
def test_reconcile_names_file_line_and_id_of_a_foreign_result(tmp_path: Path, full_scan: bool) -> None:
    out = tmp_path / "out.jsonl"
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        journal.bind("fp", {})
        journal.register([("a", 1), ("b", 2)])
        out.write_text(_line("a") + "\n" + _line("zzz") + "\n" + _line("b") + "\n")
        before = out.read_bytes()
        with pytest.raises(OutputConflictError) as caught:
            reconcile(out, journal, verify=full_scan)
        assert str(caught.value).startswith(f"{out} line 2: custom_id 'zzz' is not a request of this batch")
        assert "choose a new output=" in str(caught.value)
        # Nothing was adopted and the file is as it was.
        assert journal.counts()["done"] == 0 and out.read_bytes() == before
        assert not (tmp_path / "out.jsonl.reconcile").exists()


def test_reconcile_line_numbers_count_the_committed_part(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        journal.bind("fp", {})
        journal.register([("a", 1), ("b", 2)])
        out.write_text(_line("a") + "\n")
        journal.set_output_bytes(out.stat().st_size)
        journal.mark_in_flight("a")
        journal.adopt_done("a", DoneStats(attempts=1, prompt_tokens=1, completion_tokens=1, cost_cny=0.0,
                                          latency_ms=1.0))
        with out.open("a") as f:
            f.write(_line("b") + "\n" + _line("x9") + "\n")
        with pytest.raises(OutputConflictError, match=r"line 3: custom_id 'x9'"):
            reconcile(out, journal)
        assert journal.status("b") == "pending"

