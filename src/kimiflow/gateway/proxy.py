"""The caller-facing API: ``/v1/chat/completions`` (JSON and SSE), models, token counts, balance.

Billing rule for each way a chat request can end (``ended`` in the ledger):

- ``ok``: the upstream finished (``[DONE]`` or a JSON body); usage is Kimi's (``usage_source='kimi'``).
- ``client_gone``: the caller disconnected; the upstream request is closed at once. Billed: Kimi's
  usage if it had arrived, else the prompt estimate plus one token per content chunk delivered,
  labelled ``estimated``.
- ``upstream_cut`` / ``upstream_error`` / ``idle_timeout``: the stream broke off, carried an error
  event or went silent; billed like ``client_gone``.
- ``shutdown``: the gateway stopped before the request finished; billed like ``client_gone``.
- ``rejected`` (the gateway refused it) and upstream error answers before generation: 0 CNY.

What was delivered is therefore never billed as zero, and every estimate says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from kimiflow.core.catalog import model_info
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.gateway.admission import Rejection
from kimiflow.gateway.app import REQUEST_ID_HEADER, Gateway, bind, new_request_id
from kimiflow.gateway.errors import error_response, invalid_auth, invalid_request
from kimiflow.gateway.keys import KeyRecord
from kimiflow.gateway.store import LedgerRow
from kimiflow.gateway.upstream import UpstreamUnavailable, error_type_of
from kimiflow.gateway.watch import StreamWatch, usage_from

log = logging.getLogger("kimiflow.gateway.proxy")

_decode = msgspec.json.Decoder()


class _UsageOnly(msgspec.Struct):
    # Decoding only this field lets msgspec skip the answer's text instead of building it.
    usage: Any = None


_decode_usage = msgspec.json.Decoder(_UsageOnly)
_FORWARDED_PREFIX = "x-kimiflow-sim-"  # the simulator's fault/tokens headers, for tests; Kimi ignores them
_PASSED_HEADERS = ("Msh-Request-Id", "Msh-Gid", "Msh-Trace-Id")
KEEPALIVE = b": keep-alive\n\n"


def _forwarded(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower().startswith(_FORWARDED_PREFIX)}


def _worst_prompt(estimate: int) -> int:
    # The estimate is close to Kimi's tokenizer but not exact: pad it for the budget's worst case.
    return math.ceil(estimate * 1.25) + 16


class ChatCall:
    """One chat request on its way through: what it was charged and what it delivered."""

    def __init__(self, gw: Gateway, record: KeyRecord, request_id: str, model: str, prompt_estimate: int,
                 max_tokens: int | None, grant: object) -> None:
        self.gw = gw
        self.record = record
        self.request_id = request_id
        self.model = model
        self.prompt_estimate = prompt_estimate
        self.charged_generation = max_tokens if max_tokens is not None else gw.settings.default_max_tokens
        self.grant = grant
        self.started = time.perf_counter()
        self.wall = time.time()
        self.first_byte: float | None = None
        self.upstream_id: str | None = None
        self.row_written = False

    def row(self, status: int, ended: str, usage: Any, delivered_chunks: int = 0) -> LedgerRow:
        """The ledger row, and the books settled to the same figures (once)."""
        if usage is not None:
            prompt, completion, cached, source = usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, "kimi"
        elif status == 200:
            prompt, completion, cached, source = self.prompt_estimate, delivered_chunks, 0, "estimated"
        else:
            prompt, completion, cached, source = 0, 0, 0, "kimi"
        cost = self.gw.price(self.model, prompt, completion, cached)
        self.gw.books.settle(self.grant, tokens=prompt + self.charged_generation if status == 200 else 0, cost_cny=cost)
        now = time.perf_counter()
        self.row_written = True
        return LedgerRow(
            request_id=self.request_id, ts=self.wall, key_id=self.record.id, model=self.model, status=status,
            prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion, cost_cny=cost,
            latency_ms=round((now - self.started) * 1000, 3),
            ttft_ms=None if self.first_byte is None else round((self.first_byte - self.started) * 1000, 3),
            upstream_request_id=self.upstream_id, ended=ended, usage_source=source,
        )


def _ledger(gw: Gateway) -> Any:
    assert gw.ledger is not None, "Gateway.start() creates the ledger writer"
    return gw.ledger


def _rejection_row(gw: Gateway, record: KeyRecord, request_id: str, model: str, status: int) -> None:
    _ledger(gw).durable(LedgerRow(request_id=request_id, ts=time.time(), key_id=record.id, model=model,
                                 status=status, ended="rejected"))


async def chat_completions(gw: Gateway, request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = new_request_id()
    record = gw.authenticate(request.headers.get("Authorization"))
    if record is None:
        gw.metrics.rejections.labels("auth").inc()
        response = invalid_auth()
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    headers = {REQUEST_ID_HEADER: request_id}
    raw = await request.read()
    try:
        body = _decode.decode(raw)
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        return _early(gw, record, invalid_request("the body must be a JSON object"), headers)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _early(gw, record, invalid_request("model is required"), headers)
    allowed = record.limits.models
    if allowed and model not in allowed:
        gw.metrics.rejections.labels("model").inc()
        _rejection_row(gw, record, request_id, model, 403)
        return _early(gw, record, error_response(403, "permission_denied_error",
                                    f"Your key '{record.name}' may not use model {model}; allowed: {', '.join(allowed)}"),
                     headers)
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        return _early(gw, record, invalid_request("max_tokens must be a positive integer"), headers)
    cap = record.limits.max_tokens
    if cap is not None:
        if max_tokens is None:
            # The key's cap bounds what a request may generate, so it is sent explicitly.
            body["max_tokens"] = max_tokens = cap
            raw = msgspec.json.encode(body)
        elif max_tokens > cap:
            return _early(gw, record, invalid_request(f"max_tokens {max_tokens} is above this key's cap of {cap}; lower it"), headers)
    messages = body.get("messages")
    prompt_estimate = estimate_message_tokens(
        [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    )
    generation = max_tokens if max_tokens is not None else gw.settings.default_max_tokens
    info = model_info(model)
    if info is None and record.limits.budget_cny is not None:
        # Without a price the worst case would be 0 CNY and the budget would not bound anything.
        return _early(gw, record, error_response(403, "permission_denied_error",
                                    f"Your key '{record.name}' has a budget, and model {model} has no known price; "
                                    "use a model from Kimi's price list"), headers)
    worst_generation = max_tokens if max_tokens is not None else (info.context_length if info else generation)
    worst_cny = gw.price(model, _worst_prompt(prompt_estimate), worst_generation)
    outcome = await gw.books.acquire(record, tokens=prompt_estimate + generation, worst_cny=worst_cny)
    headers.update(gw.books.headers(record))
    if isinstance(outcome, Rejection):
        gw.metrics.rejections.labels(outcome.reason).inc()
        _rejection_row(gw, record, request_id, model, outcome.status)
        if outcome.retry_after is not None:
            headers["Retry-After"] = str(outcome.retry_after)
        return error_response(outcome.status, outcome.type, outcome.message, headers)
    call = ChatCall(gw, record, request_id, model, prompt_estimate, max_tokens, outcome)
    gw.metrics.overhead.observe(time.perf_counter() - started)
    stream = body.get("stream") is True
    upstream: aiohttp.ClientResponse | None = None
    try:
        try:
            upstream = await gw.upstream.request("POST", "/chat/completions", body=raw, headers=_forwarded(request),
                                                 stream=stream)
        except UpstreamUnavailable as exc:
            gw.metrics.upstream_errors.labels("unavailable").inc()
            _ledger(gw).durable(call.row(502, "upstream_error", None))
            return error_response(502, "server_error", f"{exc}; try again later", headers)
        except asyncio.CancelledError:
            _ledger(gw).durable(call.row(499, "shutdown" if gw.stopping else "client_gone", None))
            raise
        call.upstream_id = upstream.headers.get("Msh-Request-Id")
        for name in _PASSED_HEADERS:
            if name in upstream.headers:
                headers[name] = upstream.headers[name]
        if upstream.status != 200:
            return await _pass_error(gw, call, upstream, headers)
        if "text/event-stream" in upstream.headers.get("Content-Type", ""):
            return await _relay_stream(gw, call, request, upstream, headers)
        return await _relay_json(gw, call, upstream, headers)
    finally:
        gw.books.release(outcome)
        if upstream is not None:
            upstream.release()


def _with(response: web.Response, headers: dict[str, str]) -> web.Response:
    response.headers.update(headers)
    return response


def _early(gw: Gateway, record: KeyRecord, response: web.Response, headers: dict[str, str]) -> web.Response:
    """A request refused before admission still carries the key's ``x-ratelimit-*`` headers."""
    response.headers.update(headers)
    response.headers.update(gw.books.headers(record))
    return response


async def _pass_error(gw: Gateway, call: ChatCall, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str]) -> web.StreamResponse:
    """An upstream error before generation: its status, body (type, message) and request id, unchanged."""
    try:
        body = await upstream.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        body = b""
    kind, message = error_type_of(body)
    gw.metrics.upstream_errors.labels(kind or str(upstream.status)).inc()
    if upstream.status == 429 and kind in ("rate_limit_reached_error", "engine_overloaded_error"):
        from kimiflow.core.retry import retry_after_from

        await gw.books.on_upstream_rate_limited(retry_after_from(message, dict(upstream.headers)))
    _ledger(gw).durable(call.row(upstream.status, "upstream_error", None))
    if "Retry-After" in upstream.headers:
        headers["Retry-After"] = upstream.headers["Retry-After"]
    return web.Response(status=upstream.status, body=body, headers=headers,
                        content_type=upstream.content_type or "application/json")


async def _relay_json(gw: Gateway, call: ChatCall, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str]) -> web.StreamResponse:
    try:
        body = await upstream.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        gw.metrics.upstream_errors.labels("cut").inc()
        _ledger(gw).durable(call.row(502, "upstream_cut", None))
        return error_response(502, "server_error", "the upstream broke off its answer; try again", headers)
    except asyncio.CancelledError:
        _ledger(gw).durable(call.row(499, "shutdown" if gw.stopping else "client_gone", None))
        raise
    call.first_byte = time.perf_counter()
    try:
        usage = usage_from(_decode_usage.decode(body).usage)
    except msgspec.DecodeError:
        usage = None
    row = call.row(200, "ok", usage)
    _ledger(gw).durable(row)
    _observe(gw, call)
    return web.Response(status=200, body=body, headers=headers, content_type=upstream.content_type or "application/json")


def _observe(gw: Gateway, call: ChatCall) -> None:
    now = time.perf_counter()
    gw.metrics.observe_request(call.model, now - call.started,
                               None if call.first_byte is None else call.first_byte - call.started)


async def _relay_stream(gw: Gateway, call: ChatCall, request: web.Request, upstream: aiohttp.ClientResponse,
                        headers: dict[str, str]) -> web.StreamResponse:
    """Forward the upstream's bytes as they arrive; the row is journaled before ``[DONE]`` is released."""
    out = web.StreamResponse(status=200, headers={**headers, "Content-Type": upstream.headers["Content-Type"],
                                                   "Cache-Control": "no-cache"})
    watch = StreamWatch()
    ended = "ok"
    reader = upstream.content
    idle = gw.settings.upstream.idle_timeout
    keepalive = gw.settings.keepalive_interval
    last_data = time.monotonic()
    try:
        await out.prepare(request)
        while True:
            if watch.events == 0 and keepalive > 0:
                # Until the first event, the caller hears a comment every `keepalive` seconds, so its
                # proxies do not hang up while a long prompt is read.
                try:
                    chunk = await asyncio.wait_for(reader.readany(), keepalive)
                except aiohttp.ServerTimeoutError:
                    raise
                except asyncio.TimeoutError:
                    if time.monotonic() - last_data >= idle:
                        raise
                    try:
                        await out.write(KEEPALIVE)
                    except (ConnectionError, RuntimeError):
                        ended = "client_gone"
                        break
                    continue
            else:
                chunk = await reader.readany()
            if not chunk:
                if not watch.done:
                    ended = "upstream_error" if watch.error is not None else "upstream_cut"
                break
            now = time.perf_counter()
            if call.first_byte is None:
                call.first_byte = now
            before = watch.events
            watch.feed(chunk)
            if watch.events != before:
                last_data = time.monotonic()
            elif time.monotonic() - last_data >= idle:
                ended = "idle_timeout"  # only comments for too long: keep-alives are not progress
                break
            if watch.done and not call.row_written:
                row = call.row(200, "ok", watch.usage, watch.content_events)
                _ledger(gw).durable(row)
            try:
                await out.write(chunk)
            except (ConnectionError, RuntimeError):
                ended = "client_gone"
                break
    except asyncio.CancelledError:
        upstream.close()  # the caller is gone (or we are stopping): end the upstream request now
        if not call.row_written:
            _ledger(gw).durable(call.row(200, "shutdown" if gw.stopping else "client_gone", watch.usage,
                                        watch.content_events))
        raise
    except asyncio.TimeoutError:
        ended = "idle_timeout"
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        ended = "upstream_cut"
    if ended != "ok":
        gw.metrics.upstream_errors.labels(ended).inc() if ended != "client_gone" else None
        upstream.close()
    if not call.row_written:
        _ledger(gw).durable(call.row(200, ended, watch.usage, watch.content_events))
    _observe(gw, call)
    if ended != "client_gone":
        try:
            await out.write_eof()
        except (ConnectionError, RuntimeError):
            pass
    return out


async def list_models(gw: Gateway, request: web.Request) -> web.StreamResponse:
    record = gw.authenticate(request.headers.get("Authorization"))
    headers = {REQUEST_ID_HEADER: new_request_id()}
    if record is None:
        return _with(invalid_auth(), headers)
    headers.update(gw.books.headers(record))
    upstream = await _simple(gw, "GET", "/models", None, request)
    if isinstance(upstream, web.Response):
        return _with(upstream, headers)
    status, body, up_headers = upstream
    headers.update({k: v for k, v in up_headers.items() if k in _PASSED_HEADERS})
    allowed = record.limits.models
    if status == 200 and allowed:
        obj = _decode.decode(body)
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            obj["data"] = [m for m in obj["data"] if isinstance(m, dict) and m.get("id") in allowed]
            body = msgspec.json.encode(obj)
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


async def estimate_tokens(gw: Gateway, request: web.Request) -> web.StreamResponse:
    record = gw.authenticate(request.headers.get("Authorization"))
    headers = {REQUEST_ID_HEADER: new_request_id()}
    if record is None:
        return _with(invalid_auth(), headers)
    headers.update(gw.books.headers(record))
    upstream = await _simple(gw, "POST", "/tokenizers/estimate-token-count", await request.read(), request)
    if isinstance(upstream, web.Response):
        return _with(upstream, headers)
    status, body, up_headers = upstream
    headers.update({k: v for k, v in up_headers.items() if k in _PASSED_HEADERS})
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


async def balance(gw: Gateway, request: web.Request) -> web.StreamResponse:
    """The key's remaining budget in Kimi's balance shape; a key without a budget sees the account's."""
    record = gw.authenticate(request.headers.get("Authorization"))
    headers = {REQUEST_ID_HEADER: new_request_id()}
    if record is None:
        return _with(invalid_auth(), headers)
    headers.update(gw.books.headers(record))
    remaining = gw.books.remaining_budget(record)
    if remaining is None:
        upstream = await _simple(gw, "GET", "/users/me/balance", None, request)
        if isinstance(upstream, web.Response):
            return _with(upstream, headers)
        status, body, _ = upstream
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")
    value = round(remaining, 6)
    payload = {"code": 0, "data": {"available_balance": value, "voucher_balance": 0.0, "cash_balance": value},
               "scode": "0x0", "status": True}
    return web.Response(body=msgspec.json.encode(payload), headers=headers, content_type="application/json")


async def _simple(gw: Gateway, method: str, path: str, body: bytes | None,
                  request: web.Request) -> tuple[int, bytes, dict[str, str]] | web.Response:
    try:
        upstream = await gw.upstream.request(method, path, body=body, headers=_forwarded(request))
    except UpstreamUnavailable as exc:
        gw.metrics.upstream_errors.labels("unavailable").inc()
        return error_response(502, "server_error", f"{exc}; try again later")
    try:
        data = await upstream.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return error_response(502, "server_error", "the upstream broke off its answer; try again")
    finally:
        upstream.release()
    return upstream.status, data, dict(upstream.headers)


async def healthz(gw: Gateway, request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "stopping" if gw.stopping else "ok"})


async def metrics(gw: Gateway, request: web.Request) -> web.StreamResponse:
    from kimiflow.gateway.metrics import CONTENT_TYPE

    response = web.Response(body=gw.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def add_routes(app: web.Application, gw: Gateway) -> None:
    app.router.add_post("/v1/chat/completions", bind(gw, chat_completions))
    app.router.add_get("/v1/models", bind(gw, list_models))
    app.router.add_post("/v1/tokenizers/estimate-token-count", bind(gw, estimate_tokens))
    app.router.add_get("/v1/users/me/balance", bind(gw, balance))
    app.router.add_get("/healthz", bind(gw, healthz))
    app.router.add_get("/metrics", bind(gw, metrics))
