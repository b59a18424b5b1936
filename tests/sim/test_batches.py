"""The simulator's Batch API through the official openai SDK: lifecycle, partial error file, failed
validation, expiry, cancellation, the 40 % discount, and Kimi-style 400/404 answers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from kimiflow.core.pricing import cost_cny
from kimiflow.sim import SimConfig, Simulator, run_in_thread


def line(cid: str, model: str = "kimi-k2.6", **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {cid}"}],
                     "max_tokens": 40, **body}}


def jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def wait_until_ended(client: openai.OpenAI, batch_id: str, limit_s: float = 10.0) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.01)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x.strip()]


@pytest.fixture
def sdk_sim(request: pytest.FixtureRequest) -> Iterator[tuple[Simulator, openai.OpenAI]]:
    config = {"seed": 2, "batch_hour_s": 0.01, **getattr(request, "param", {})}
    with run_in_thread(SimConfig(**config)) as sim:
        with openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0) as client:
            yield sim, client


def test_completed_batch_with_a_partial_error_file_billed_at_the_discount(
    sdk_sim: tuple[Simulator, openai.OpenAI],
) -> None:
    sim, client = sdk_sim
    rows = [line(f"c{i}") for i in range(5)]
    rows[2]["body"]["temperature"] = 0.2  # kimi-k2.6's sampling is fixed: the engine refuses this line only
    upload = client.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
    assert upload.purpose == "batch"
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"team": "qa"})
    assert batch.status == "validating" and batch.metadata == {"team": "qa"}
    balance_before = sim.balance
    done = wait_until_ended(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 4, 1)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at < done.expires_at
    out = results(client, done.output_file_id)
    assert [r["custom_id"] for r in out] == ["c0", "c1", "c3", "c4"]
    assert all(r["response"]["status_code"] == 200 and r["response"]["body"]["object"] == "chat.completion"
               for r in out)
    errors = results(client, done.error_file_id)
    assert [r["custom_id"] for r in errors] == ["c2"]
    assert errors[0]["response"]["status_code"] == 400
    assert "temperature" in errors[0]["response"]["body"]["error"]["message"]
    real_time = sum(cost_cny("kimi-k2.6", r["response"]["body"]["usage"]["prompt_tokens"],
                             r["response"]["body"]["usage"]["completion_tokens"]) for r in out)
    assert real_time > 0
    assert balance_before - sim.balance == pytest.approx(real_time * 0.6)
    assert sim.stats.batches_created == 1 and sim.stats.batch_lines == 5


def test_a_batch_answers_like_the_chat_endpoint(sdk_sim: tuple[Simulator, openai.OpenAI]) -> None:
    _, client = sdk_sim
    body = line("same")["body"]
    live = client.chat.completions.create(**body)
    upload = client.files.create(file=("in.jsonl", jsonl([line("same")])), purpose="batch")
    done = wait_until_ended(client, client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                          completion_window="24h").id)
    answer = results(client, done.output_file_id)[0]["response"]["body"]
    assert answer["choices"][0]["message"]["content"] == live.choices[0].message.content


def test_failed_validation_lists_every_bad_line(sdk_sim: tuple[Simulator, openai.OpenAI]) -> None:
    _, client = sdk_sim
    rows: list[Any] = [line("a"), line("b", model="kimi-k2.5"), {**line("c"), "url": "/v1/embeddings"},
                       line("a"), line("d", model="moonshot-v1-8k"), "not json"]
    upload = client.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
    done = wait_until_ended(client, client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                          completion_window="24h").id)
    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None and done.errors.data is not None
    found = {(e.line, e.code) for e in done.errors.data}
    assert found == {(2, "mixed_models"), (3, "invalid_url"), (4, "duplicate_custom_id"),
                     (5, "model_not_supported"), (6, "invalid_json_line")}
    assert done.output_file_id is None and done.error_file_id is None


@pytest.mark.parametrize("sdk_sim", [{"batch_lines_per_hour": 1, "batch_hour_s": 0.001}], indirect=True)
def test_expiry_keeps_what_ran_and_lists_the_rest_as_batch_expired(sdk_sim: tuple[Simulator, openai.OpenAI]) -> None:
    _, client = sdk_sim
    upload = client.files.create(file=("in.jsonl", jsonl([line(f"e{i}") for i in range(20)])), purpose="batch")
    done = wait_until_ended(client, client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                          completion_window="12h").id)
    assert done.status == "expired" and done.expired_at == done.expires_at
    # One minute of validation, then one line an hour: 11 of the 12 hours' lines ran.
    ran = [r["custom_id"] for r in results(client, done.output_file_id)]
    assert ran == [f"e{i}" for i in range(11)]
    rest = results(client, done.error_file_id)
    assert [r["custom_id"] for r in rest] == [f"e{i}" for i in range(11, 20)]
    assert {r["error"]["code"] for r in rest} == {"batch_expired"} and all(r["response"] is None for r in rest)


@pytest.mark.parametrize("sdk_sim", [{"batch_hour_s": 20.0}], indirect=True)
def test_cancel_then_cancelled_and_a_second_cancel_is_refused(sdk_sim: tuple[Simulator, openai.OpenAI]) -> None:
    _, client = sdk_sim
    upload = client.files.create(file=("in.jsonl", jsonl([line("x"), line("y")])), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = wait_until_ended(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    with pytest.raises(openai.BadRequestError, match="only a validating, in_progress or finalizing"):
        client.batches.cancel(batch.id)


def test_kimi_style_errors_for_bad_batch_requests(sdk_sim: tuple[Simulator, openai.OpenAI]) -> None:
    _, client = sdk_sim
    extract = client.files.create(file=("notes.txt", b"hello"), purpose="file-extract")
    with pytest.raises(openai.BadRequestError, match="purpose='batch'"):
        client.batches.create(input_file_id=extract.id, endpoint="/v1/chat/completions", completion_window="24h")
    upload = client.files.create(file=("in.jsonl", jsonl([line("a")])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="completion_window must be from 12h to 7d"):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                              completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="the only one"):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError, match="batch_nope"):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError, match=r"\*\.jsonl"):
        client.files.create(file=("in.txt", jsonl([line("a")])), purpose="batch")


def test_list_pages_newest_first(sdk_sim: tuple[Simulator, openai.OpenAI]) -> None:
    _, client = sdk_sim
    upload = client.files.create(file=("in.jsonl", jsonl([line("a")])), purpose="batch")
    ids = [client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    every = [b.id for b in client.batches.list(limit=2)]  # the SDK follows `after` across pages
    assert every == ids[::-1]
