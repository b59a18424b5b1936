"""Kimi's Batch API in the simulator: ``/v1/batches`` create, retrieve, list and cancel (docs/kimi-api.md §7.5).

A batch reads a ``purpose="batch"`` JSONL upload (one ``{custom_id, method, url, body}`` a line) and
answers each line with the chat engine ``POST /v1/chat/completions`` uses (validation, scripted answers,
generated text), billed at the Batch API's 40 % discount. Its life, in simulated seconds::

    validating ──(VALIDATING_S; every line checked)──▶ in_progress ──(lines at batch_lines_per_hour)──▶
    finalizing ──(FINALIZING_S)──▶ completed
    validating ──(a bad line)──▶ failed (``errors`` lists the lines and what is wrong)
    in_progress ──(the completion window ends first)──▶ expired
    validating | in_progress | finalizing ──(cancel)──▶ cancelling ──(CANCELLING_S)──▶ cancelled

Time is compressed: ``SimConfig.batch_hour_s`` real seconds make one simulated hour, and every
timestamp a batch shows (``created_at``, ``expires_at`` ...) is a simulated epoch second. Batches
advance when any batch endpoint is called (there is no background task), so what a client sees only
depends on the clock and the calls it makes.

Output and error files are ``purpose="batch_output"`` files, read with ``GET /v1/files/{id}/content``.
A line's result is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``
(OpenAI's shape; Kimi does not document its own): answered lines (200) go to the output file, lines
the engine refused (4xx/5xx ``response``) to the error file, and so do lines that never ran, with
``response: null`` and ``error.code`` ``batch_expired`` or ``batch_cancelled``. ``request_counts.failed``
counts the refused lines; ``completed`` the answered ones.

Deterministic outcomes, for tests:

- failed validation: a line that is not a Batch API request (url, method, custom_id missing or repeated,
  no body), two models in one file, a model outside ``BATCH_MODELS``, or more than
  ``SimConfig.batch_max_lines`` lines;
- a partial error file: a line whose body the chat engine refuses (e.g. ``temperature: 0.2`` on
  kimi-k2.6, whose sampling is fixed), or one a scripted answer (``--answers``) gives an ``error`` or a
  status ``fault`` such as ``"500"``;
- expiry: fewer ``batch_lines_per_hour`` than the window allows, e.g. 1 line an hour, window ``12h`` and
  20 lines: 12 answered, 8 ``batch_expired``;
- cancellation: ``POST /v1/batches/{id}/cancel`` while it runs (a larger ``batch_hour_s`` keeps it running).
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from typing import Any

import msgspec
from aiohttp import web

from kimiflow.core.catalog import BATCH_DISCOUNT, BATCH_MODELS
from kimiflow.sim import errors
from kimiflow.sim.answers import find_answer, scripted_fault
from kimiflow.sim.batch_book import BATCH_ENDPOINT, SimBatch
from kimiflow.sim.chat import answer_cost, completion_payload
from kimiflow.sim.completion import apply_answer_fault, plan_choices
from kimiflow.sim.errors import SimError
from kimiflow.sim.faults import Fault
from kimiflow.sim.http import json_or_fault, read_body
from kimiflow.sim.state import SimState
from kimiflow.sim.validation import decode_json_object, validate_chat_request
from kimiflow.sim.web_search import web_search_result_tokens

BATCHES_PATH = "/v1/batches"
BATCHES_PREFIX = BATCHES_PATH + "/"
VALIDATING_S = 60.0
FINALIZING_S = 60.0
CANCELLING_S = 60.0
MIN_WINDOW_H, MAX_WINDOW_H = 12, 7 * 24
MAX_REPORTED_ERRORS = 100
STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled")
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})([hd])$")
_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder()


def parse_window(value: Any) -> int:
    """Seconds of a ``completion_window`` such as ``"24h"`` or ``"3d"`` (12 h to 7 d), or Kimi-style 400."""
    match = _WINDOW.match(value) if isinstance(value, str) else None
    hours = None if match is None else int(match.group(1)) * (24 if match.group(2) == "d" else 1)
    if hours is None or not MIN_WINDOW_H <= hours <= MAX_WINDOW_H:
        raise errors.invalid_request(
            f"completion_window must be from 12h to 7d, written like \"24h\" or \"3d\", got {value!r}"
        )
    return hours * 3600


def _check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in value.items()
    ):
        raise errors.invalid_request("metadata must be an object of at most 16 string pairs "
                                     "(keys up to 64 characters, values up to 512)")
    return dict(value)


# -- the life cycle ------------------------------------------------------------------------------------


def advance_all(state: SimState) -> None:
    """Bring every unfinished batch up to the current simulated time."""
    now = state.batches.now()
    for batch in state.batches.unfinished():
        advance(state, batch, now)


def advance(state: SimState, batch: SimBatch, now: float) -> None:
    """Bring ``batch`` up to simulated time ``now`` (the drawing in the module docstring)."""
    config = state.config
    if batch.status == "validating":
        at = batch.created_at + VALIDATING_S
        if now < at:
            return
        problems = validate_input(state, batch)
        if problems:
            batch.status, batch.errors = "failed", problems
            batch.stamps["failed"] = at
            return
        batch.status = "in_progress"
        batch.stamps["in_progress"] = at
    if batch.status == "in_progress":
        per_line = 3600.0 / config.batch_lines_per_hour
        started = batch.stamps["in_progress"]
        until = min(now, batch.expires_at)
        due = min(len(batch.lines), int((until - started) / per_line + 1e-9)) if until > started else 0
        while batch.done < due:
            _run_line(state, batch)
        if batch.done == len(batch.lines):
            batch.status = "finalizing"
            batch.stamps["finalizing"] = min(started + len(batch.lines) * per_line, now)
        elif now >= batch.expires_at:
            batch.status = "expired"
            batch.stamps["expired"] = batch.expires_at
            _write_files(state, batch, "batch_expired",
                         "This request could not be executed before the completion window expired.")
            return
    if batch.status == "finalizing" and now >= batch.stamps["finalizing"] + FINALIZING_S:
        batch.status = "completed"
        batch.stamps["completed"] = batch.stamps["finalizing"] + FINALIZING_S
        _write_files(state, batch, "", "")
    if batch.status == "cancelling" and now >= batch.stamps["cancelling"] + CANCELLING_S:
        batch.status = "cancelled"
        batch.stamps["cancelled"] = batch.stamps["cancelling"] + CANCELLING_S
        if "in_progress" not in batch.stamps:
            validate_input(state, batch)  # cancelled while validating: its lines are listed as not run
        _write_files(state, batch, "batch_cancelled", "This request was not executed: the batch was cancelled.")


def validate_input(state: SimState, batch: SimBatch) -> list[dict[str, Any]]:
    """Check every line of the input file; keep the requests on ``batch.lines``; the problems found."""
    stored = state.files.get(batch.input_file_id)
    problems: list[dict[str, Any]] = []

    def problem(code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(problems) < MAX_REPORTED_ERRORS:
            problems.append({"code": code, "message": message, "param": param, "line": line})

    if stored.text is None:
        problem("invalid_file_format", "the input file is not UTF-8 text; upload JSONL saved as UTF-8", None)
        return problems
    seen: dict[str, int] = {}
    model: str | None = None
    for number, raw in enumerate(stored.text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = _decoder.decode(raw)
        except msgspec.DecodeError:
            problem("invalid_json_line", f"line {number} is not valid JSON", number)
            continue
        if not isinstance(obj, dict):
            problem("invalid_json_line", f"line {number} must be a JSON object", number)
            continue
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            problem("missing_required_parameter", "custom_id must be a non-empty string", number, "custom_id")
            continue
        if custom_id in seen:
            problem("duplicate_custom_id", f"custom_id {custom_id!r} is also on line {seen[custom_id]}; "
                    "custom_id must be unique in a file", number, "custom_id")
            continue
        seen[custom_id] = number
        if obj.get("method") != "POST":
            problem("invalid_method", f"method must be \"POST\", got {obj.get('method')!r}", number, "method")
            continue
        if obj.get("url") != BATCH_ENDPOINT:
            problem("invalid_url", f"url must be \"{BATCH_ENDPOINT}\", the batch's endpoint, got {obj.get('url')!r}",
                    number, "url")
            continue
        body = obj.get("body")
        if not isinstance(body, dict):
            problem("missing_required_parameter", "body must be the chat completion request object", number, "body")
            continue
        line_model = body.get("model")
        if not isinstance(line_model, str) or line_model not in BATCH_MODELS:
            problem("model_not_supported", f"model {line_model!r} cannot be batched; use one of "
                    f"{', '.join(BATCH_MODELS)}", number, "body.model")
            continue
        if model is None:
            model = line_model
        elif line_model != model:
            problem("mixed_models", f"every line of a batch must use one model: {model!r} before, "
                    f"{line_model!r} here", number, "body.model")
            continue
        batch.lines.append((custom_id, body))
    if not batch.lines and not problems:
        problem("empty_file", "the input file has no requests", None)
    if len(batch.lines) > state.config.batch_max_lines:
        problem("too_many_requests", f"the input file has {len(batch.lines)} requests; a batch takes at most "
                f"{state.config.batch_max_lines}: split the file", None)
    if problems:
        batch.lines.clear()
    return problems


def _result_line(custom_id: str, status: int | None, body: Any, error: dict[str, str] | None) -> bytes:
    response = None if status is None else {"status_code": status, "request_id": str(uuid.uuid4()), "body": body}
    return _encode({"id": "batch_req_" + os.urandom(12).hex(), "custom_id": custom_id, "response": response,
                    "error": error}) + b"\n"


def _run_line(state: SimState, batch: SimBatch) -> None:
    """Answer the next line with the chat engine; charge the discounted cost; file the result."""
    custom_id, body = batch.lines[batch.done]
    batch.done += 1
    state.stats.batch_lines += 1
    try:
        if body.get("stream"):
            raise errors.invalid_request("stream is not supported in a batch; remove it")
        req = validate_chat_request(body, state.config)
        script = state.config.answers
        answer = find_answer(script, req, body, state.answer_uses) if script is not None else None
        fault: Fault | None = None
        if answer is not None:
            fault = scripted_fault(answer, None, batch.key, state.quoted_rpm())
        search_tokens = web_search_result_tokens(req.messages)
        if search_tokens:
            req = dataclasses.replace(req, prompt_tokens=req.prompt_tokens + search_tokens)
        if state.balance <= 0:
            raise errors.quota_exceeded(state.balance)
        plans = answer.plans(req) if answer is not None else plan_choices(req, state.config.seed, state.corpus, None)
        apply_answer_fault(plans, fault.name if fault else None, req.max_tokens, state.corpus)
    except SimError as exc:
        batch.failed += 1
        batch.error_lines.append(_result_line(custom_id, exc.status, msgspec.json.decode(exc.body()), None))
        return
    cost = answer_cost(req, plans) * (1.0 - BATCH_DISCOUNT)
    completion_tokens = sum(plan.completion_tokens for plan in plans)
    stats = state.stats
    stats.prompt_tokens += req.prompt_tokens
    stats.completion_tokens += completion_tokens
    stats.cost_cny += cost
    state.charge(cost)
    batch.completed += 1
    batch.output.append(_result_line(custom_id, 200, completion_payload(req, plans), None))


def _write_files(state: SimState, batch: SimBatch, code: str, message: str) -> None:
    """Store the output file and, when some line did not succeed, the error file (lines not run get ``code``)."""
    lines = list(batch.error_lines)
    if code:
        lines += [_result_line(cid, None, None, {"code": code, "message": message}) for cid, _ in batch.lines[batch.done:]]
    if batch.output:
        stored = state.files.add_generated(f"{batch.id}_output.jsonl", b"".join(batch.output), "batch_output")
        batch.output_file_id = stored.id
    if lines:
        stored = state.files.add_generated(f"{batch.id}_error.jsonl", b"".join(lines), "batch_output")
        batch.error_file_id = stored.id


# -- the endpoints -------------------------------------------------------------------------------------


async def create_batch(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    """``POST /v1/batches``."""
    data = decode_json_object(await read_body(request))
    file_id = data.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise errors.invalid_request("input_file_id is required: the id of a file uploaded with purpose='batch'")
    stored = state.files.get(file_id)
    if stored.purpose != "batch":
        raise errors.invalid_request(f"input_file_id {file_id} has purpose '{stored.purpose}'; "
                                     "upload the requests with purpose='batch'")
    endpoint = data.get("endpoint")
    if endpoint != BATCH_ENDPOINT:
        raise errors.invalid_request(f"endpoint must be \"{BATCH_ENDPOINT}\" (the only one), got {endpoint!r}")
    window = data.get("completion_window")
    window_s = parse_window(window)
    metadata = _check_metadata(data.get("metadata"))
    book = state.batches
    advance_all(state)
    batch = book.create(file_id, str(window), window_s, metadata, key)
    state.stats.batches_created += 1
    return await json_or_fault(request, _encode(batch.as_dict()), fault)


async def list_batches(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    """``GET /v1/batches?after=&limit=`` (newest first, default 20)."""
    raw_limit = request.query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise errors.invalid_request(f"limit must be an integer from 1 to 100, got {raw_limit!r}")
    limit = int(raw_limit)
    book = state.batches
    advance_all(state)
    batches = book.newest_first()
    after = request.query.get("after")
    if after:
        ids = [b.id for b in batches]
        if after not in ids:
            raise errors.invalid_request(f"after={after!r} is not the id of a batch")
        batches = batches[ids.index(after) + 1 :]
    page = batches[:limit]
    payload = {
        "object": "list",
        "data": [b.as_dict() for b in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": len(batches) > limit,
    }
    return await json_or_fault(request, _encode(payload), fault)


def parse_batch_path(request: web.BaseRequest) -> tuple[str, str] | None:
    """``(batch_id, action)`` for ``/v1/batches/{id}`` and ``/v1/batches/{id}/cancel``; ``None`` otherwise."""
    path = request.path
    if not path.startswith(BATCHES_PREFIX):
        return None
    batch_id, _, action = path[len(BATCHES_PREFIX):].partition("/")
    if not batch_id or action not in ("", "cancel"):
        raise errors.not_found_path(path)
    if request.method != ("POST" if action == "cancel" else "GET"):
        raise errors.method_not_allowed(request.method, path)
    return batch_id, action


async def batch_action(state: SimState, request: web.BaseRequest, batch_id: str, action: str,
                       fault: Fault | None) -> web.StreamResponse:
    """``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``."""
    book = state.batches
    batch = book.get(batch_id)
    advance_all(state)
    if action == "cancel":
        if batch.status not in CANCELLABLE:
            raise errors.invalid_request(f"batch {batch_id} is {batch.status}; only a validating, in_progress "
                                         "or finalizing batch can be cancelled")
        batch.status = "cancelling"
        batch.stamps["cancelling"] = book.now()
    return await json_or_fault(request, _encode(batch.as_dict()), fault)
