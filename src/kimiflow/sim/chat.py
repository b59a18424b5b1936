"""``POST /v1/chat/completions``: admission, generation and the JSON or SSE answer (docs/kimi-api.md §3–4).

Order per request: parse and validate (400/404) → balance (429 quota) → tier admission (429) →
plan the answer → sleep per the latency model → send. The concurrency slot is held until the last
byte of a stream is written; the balance is charged only for a completed answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from aiohttp import web

from kimiflow.core.pricing import cost_cny
from kimiflow.sim import errors
from kimiflow.sim.answers import find_answer, scripted_fault
from kimiflow.sim.cache import caches_automatically
from kimiflow.sim.completion import ChoicePlan, apply_answer_fault, plan_choices, usage_dict
from kimiflow.sim.faults import Fault, echoed_key_error
from kimiflow.sim.http import (
    broken_json_response,
    client_gone,
    close_transport,
    json_response,
    read_body,
    reset_connection,
    stall_until_disconnect,
    stream_response,
    truncated_json_response,
)
from kimiflow.sim.limits import admission_tokens
from kimiflow.sim.sse import DONE, KEEPALIVE, ChunkEncoder, sse_event
from kimiflow.sim.state import SimState
from kimiflow.sim.validation import ChatRequest, decode_json_object, validate_chat_request
from kimiflow.sim.web_search import WEB_SEARCH_FEE_CNY, web_search_calls, web_search_result_tokens

TOKENS_HEADER = "X-Kimiflow-Sim-Tokens"
MAX_FORCED_TOKENS = 1_000_000
UNTERMINATED_INTERVAL_S = 0.2
UNTERMINATED_LIMIT_S = 300.0
_WRITE_BATCH = 512
_MALFORMED = b'data: {"id":"chatcmpl-malformed","choices":[{"index":0,"delta":{"content":"\xe4\xbd\xa0\n\n'
_UNTERMINATED_LINE = b'data: {"id":"chatcmpl-unterminated","choices":[{"index":0,"delta":{"content":"'
_SERVER_ERROR_MESSAGE = "The server had an error while generating the response"
_encode = msgspec.json.Encoder().encode

def _forced_tokens(request: web.BaseRequest) -> int | None:
    value = request.headers.get(TOKENS_HEADER)
    if value is None:
        return None
    try:
        tokens = int(value)
    except ValueError:
        tokens = -1
    if not 1 <= tokens <= MAX_FORCED_TOKENS:
        raise errors.invalid_request(f"{TOKENS_HEADER} must be an integer from 1 to {MAX_FORCED_TOKENS}, got {value!r}")
    return tokens


def _choice_events(enc: ChunkEncoder, plan: ChoicePlan, usage: dict[str, Any]) -> Iterator[bytes]:
    i = plan.index
    yield enc.role(i)
    for piece in plan.reasoning_encoded:
        yield enc.reasoning(i, piece)
    for piece in plan.content_encoded:
        yield enc.content(i, piece)
    for call in plan.tool_calls:
        yield enc.tool_call_start(i, call.index, call.id, call.type, call.name)
        for fragment in call.fragments:
            yield enc.tool_call_arguments(i, call.index, fragment)
    yield enc.final(i, plan.finish_reason, usage)


def _interleave(streams: list[Iterator[bytes]]) -> Iterator[bytes]:
    # n > 1: chunks of different choices alternate and are routed by choices[].index (§4.2).
    active = list(streams)
    while active:
        still = []
        for stream in active:
            event = next(stream, None)
            if event is not None:
                yield event
                still.append(stream)
        active = still


def _message(plan: ChoicePlan, reasoning_model: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
    if reasoning_model:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.tool_calls:
        message["tool_calls"] = [call.as_message_dict() for call in plan.tool_calls]
    return message


def completion_payload(req: ChatRequest, plans: list[ChoicePlan]) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object for planned choices (the Batch API's line bodies too)."""
    return {
        "id": "chatcmpl-" + os.urandom(12).hex(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model.id,
        "choices": [
            {"index": p.index, "message": _message(p, req.model.reasoning), "finish_reason": p.finish_reason}
            for p in plans
        ],
        "usage": usage_dict(req.prompt_tokens, plans, req.model.reasoning, req.cached_tokens),
    }


def answer_cost(req: ChatRequest, plans: list[ChoicePlan]) -> float:
    """CNY one answer costs at real-time prices: tokens (cache hits at their rate) plus web-search fees."""
    completion_tokens = sum(plan.completion_tokens for plan in plans)
    cost = cost_cny(req.model.id, req.prompt_tokens, completion_tokens, req.cached_tokens or 0)
    if not any(plan.tool_calls for plan in plans):
        return cost
    searches = web_search_calls([call.name for plan in plans for call in plan.tool_calls])
    return cost + WEB_SEARCH_FEE_CNY * searches


def _choice_usage(req: ChatRequest, plan: ChoicePlan) -> dict[str, Any]:
    return usage_dict(req.prompt_tokens, [plan], req.model.reasoning, req.cached_tokens)


def _error_event(request: web.BaseRequest, fault_name: str) -> bytes:
    """The mid-stream error event; ``echo-key`` puts the request's Authorization value in its message."""
    if fault_name == "echo-key":
        message = echoed_key_error(request.headers.get("Authorization", "")).message
    else:
        message = _SERVER_ERROR_MESSAGE
    return sse_event({"error": {"message": message, "type": "server_error"}})


async def _write_unterminated_line(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """One byte every 0.2 s of a ``data:`` line that never ends, until the client leaves or 300 s pass.

    Real time, like a stall: it exists to prove that a client's idle timeout counts complete events,
    not bytes, as progress.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UNTERMINATED_LIMIT_S
    sent = 0
    while loop.time() < deadline and not client_gone(request):
        byte = _UNTERMINATED_LINE[sent : sent + 1] or b"x"
        await resp.write(byte)
        sent += 1
        await asyncio.sleep(UNTERMINATED_INTERVAL_S)
    close_transport(request)


async def handle_chat(sim: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    """Answer one chat-completion request (raises ``SimError`` for error answers)."""
    body = decode_json_object(await read_body(request))
    req = validate_chat_request(body, sim.config)
    script = sim.config.answers
    answer = find_answer(script, req, body, sim.answer_uses) if script is not None else None
    if answer is not None:
        scripted = scripted_fault(answer, fault, key, sim.quoted_rpm())
        if scripted is not None and scripted is not fault:
            sim.stats.faults[scripted.name] += 1
            if scripted.name == "reset":
                sim.stats.resets += 1
                return reset_connection(request)
        fault = scripted
    forced = _forced_tokens(request)
    search_tokens = web_search_result_tokens(req.messages)
    if search_tokens:
        req = req.with_counts(prompt_tokens=req.prompt_tokens + search_tokens)
    if fault is not None and fault.name == "echo-key" and not req.stream:
        raise echoed_key_error(request.headers.get("Authorization", ""))
    if sim.balance <= 0:
        raise errors.quota_exceeded(sim.balance)
    admitted_tokens = admission_tokens(req.prompt_tokens, req.max_tokens, req.model.id, sim.config.default_max_tokens)
    sim.limiter.admit(key, admitted_tokens)
    if caches_automatically(req.model):
        req = req.with_counts(cached_tokens=sim.prefix_cache.lookup_and_store(key, req.model.id, req.messages))
    stats = sim.stats
    stats.in_flight += 1
    try:
        plans = answer.plans(req) if answer is not None else plan_choices(req, sim.config.seed, sim.corpus, forced)
        apply_answer_fault(plans, fault.name if fault else None, req.max_tokens, sim.corpus)
        stats.chat_completions += 1
        if req.stream:
            stats.streams += 1
            resp, completed = await _stream(sim, request, req, plans, fault)
        else:
            resp, completed = await _respond(sim, request, req, plans, fault)
        if completed:
            completion_tokens = sum(plan.completion_tokens for plan in plans)
            stats.prompt_tokens += req.prompt_tokens
            stats.completion_tokens += completion_tokens
            cost = answer_cost(req, plans)
            stats.cost_cny += cost
            sim.charge(cost)
        return resp
    finally:
        stats.in_flight -= 1
        sim.limiter.release(key)


async def _respond(
    sim: SimState, request: web.BaseRequest, req: ChatRequest, plans: list[ChoicePlan], fault: Fault | None
) -> tuple[web.StreamResponse, bool]:
    ttft, per_token = sim.sample_latency()
    total_tokens = sum(plan.completion_tokens for plan in plans)
    delay = ttft + per_token * total_tokens + (fault.interval if fault and fault.name == "trickle" else 0.0)
    if delay > 0:
        await sim.config.sleep(delay)
    body = _encode(completion_payload(req, plans))
    if fault is not None and fault.name == "malformed":
        return json_response(200, body[: len(body) // 2], request), False
    if fault is not None and fault.name in ("cut", "stall"):
        return await broken_json_response(request, body, fault), False
    if fault is not None and fault.name == "truncated-200":
        return truncated_json_response(request, body), False
    return json_response(200, body, request), True


async def _stream(
    sim: SimState, request: web.BaseRequest, req: ChatRequest, plans: list[ChoicePlan], fault: Fault | None
) -> tuple[web.StreamResponse, bool]:
    enc = ChunkEncoder("chatcmpl-" + os.urandom(12).hex(), int(time.time()), req.model.id)
    streams = [_choice_events(enc, plan, _choice_usage(req, plan)) for plan in plans]
    events = streams[0] if len(streams) == 1 else _interleave(streams)
    resp = stream_response(request)
    await resp.prepare(request)
    ttft, per_token = sim.sample_latency()
    sleep = sim.config.sleep
    stats = sim.stats
    try:
        if ttft > 0:
            await sleep(ttft)
        if fault is not None and fault.name == "unterminated":
            await _write_unterminated_line(request, resp)
            return resp, False
        if fault is None and per_token == 0:
            # Fast path: nothing separates the chunks, so coalesce them into large writes.
            batch: list[bytes] = []
            for event in events:
                batch.append(event)
                if len(batch) >= _WRITE_BATCH:
                    stats.stream_chunks += len(batch)
                    await resp.write(b"".join(batch))
                    batch.clear()
            stats.stream_chunks += len(batch)
            if req.include_usage:
                batch.append(enc.usage_only(usage_dict(req.prompt_tokens, plans, req.model.reasoning, req.cached_tokens)))
                stats.stream_chunks += 1
            batch.append(DONE)
            await resp.write(b"".join(batch))
            await resp.write_eof()
            return resp, True
        return await _stream_slowly(sim, request, req, plans, fault, enc, events, resp, per_token)
    except ConnectionError:
        # The client went away mid-stream: nothing more to send, nothing to bill.
        return resp, False


async def _stream_slowly(
    sim: SimState,
    request: web.BaseRequest,
    req: ChatRequest,
    plans: list[ChoicePlan],
    fault: Fault | None,
    enc: ChunkEncoder,
    events: Iterator[bytes],
    resp: web.StreamResponse,
    per_token: float,
) -> tuple[web.StreamResponse, bool]:
    """Chunk by chunk, with per-token delays and the stream-shaped faults."""
    sleep = sim.config.sleep
    stats = sim.stats
    name = fault.name if fault is not None else None
    after = fault.after if fault is not None else 0
    sent = 0
    for event in events:
        if fault is not None and sent == after:
            if name == "cut":
                if fault.clean:
                    await resp.write_eof()
                else:
                    close_transport(request)
                return resp, False
            if name == "malformed":
                await resp.write(_MALFORMED)
            elif name in ("error-event", "echo-key"):
                await resp.write(_error_event(request, name))
                await resp.write_eof()
                return resp, False
            elif name == "stall":
                await stall_until_disconnect(request, resp, fault.keepalive)
                return resp, False
        if sent:
            if name == "trickle":
                await sleep(fault.interval)  # type: ignore[union-attr]
            elif per_token > 0:
                await sleep(per_token)
            if name == "keepalive":
                await resp.write(KEEPALIVE)
        await resp.write(event)
        stats.stream_chunks += 1
        sent += 1
    if fault is not None and name in ("cut", "error-event", "echo-key", "stall") and sent <= after:
        # ``after`` was past the end of the stream: fail where [DONE] would be.
        if name == "stall":
            await stall_until_disconnect(request, resp, fault.keepalive)
        elif name == "cut" and not fault.clean:
            close_transport(request)
        else:
            if name in ("error-event", "echo-key"):
                await resp.write(_error_event(request, name))
            await resp.write_eof()
        return resp, False
    if req.include_usage:
        await resp.write(enc.usage_only(usage_dict(req.prompt_tokens, plans, req.model.reasoning, req.cached_tokens)))
        stats.stream_chunks += 1
    await resp.write(DONE)
    await resp.write_eof()
    return resp, True
