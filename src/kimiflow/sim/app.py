"""The simulator server: routing, auth, headers, faults, accounting, and its in-process life cycle.

Built on aiohttp's low-level ``web.Server`` (no router, no middlewares) so that the simulator is
never the bottleneck of a benchmark: one dict lookup routes a request.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web

from kimiflow.core.catalog import MODELS
from kimiflow.core.tiers import tier_limits
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.sim import errors
from kimiflow.sim.chat import handle_chat, read_body, stall_until_disconnect
from kimiflow.sim.config import SimConfig
from kimiflow.sim.errors import SimError
from kimiflow.sim.faults import FAULT_HEADER, Fault, FaultPicker
from kimiflow.sim.files import FileStore
from kimiflow.sim.limits import TierLimiter
from kimiflow.sim.stats import SimStats
from kimiflow.sim.textgen import Corpus
from kimiflow.sim.validation import decode_json_object, resolve_model, validate_messages

JSON_TYPE = "application/json; charset=utf-8"
STATS_PATH = "/_sim/stats"
REQUEST_ID = web.RequestKey("request_id", str)
_encode = msgspec.json.Encoder().encode
# Injected status faults: (key, fault, the RPM to quote) -> the error Kimi would send.
_STATUS_FAULTS: dict[str, Callable[[str, Fault, int], SimError]] = {
    "429": lambda key, f, rpm: errors.rpm_reached(key, rpm, f.retry_after),
    "429-retry-after": lambda key, f, rpm: errors.rpm_reached(key, rpm, f.retry_after, retry_after_header=True),
    "overloaded": lambda key, f, rpm: errors.engine_overloaded(),
    "quota": lambda key, f, rpm: errors.quota_exceeded(0.0),
    "quota-403": lambda key, f, rpm: errors.account_inactive(key),
    "500": lambda key, f, rpm: SimError(500, "unexpected_output", "invalid state transition"),
    "502": lambda key, f, rpm: SimError(502, "server_error", "Bad gateway: the upstream engine did not answer"),
    "503": lambda key, f, rpm: SimError(503, "server_unavailable", "The service is temporarily unavailable"),
}

Handler = Callable[[web.BaseRequest, str, "Fault | None"], Awaitable[web.StreamResponse]]


def _models_body() -> bytes:
    data: list[dict[str, Any]] = [
        {
            "id": m.id,
            "object": "model",
            "created": m.created,
            "owned_by": "moonshot",
            "root": m.id,
            "parent": None,
            "permission": [],
            "context_length": m.context_length,
            "supports_image_in": m.vision,
            "supports_video_in": m.vision and m.reasoning,
            "supports_reasoning": m.reasoning,
        }
        for m in MODELS.values()
    ]
    return _encode({"object": "list", "data": data})


class Simulator:
    """A running Kimi API simulator on 127.0.0.1.

    >>> async with Simulator(SimConfig(seed=1)) as sim:
    ...     client = AsyncKimi(api_key=sim.api_key, base_url=sim.base_url)
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.stats = SimStats()
        self.corpus = Corpus.build(self.config.seed)
        self.limiter = TierLimiter(
            tier_limits(self.config.tier) if self.config.tier is not None else None, self.config.clock
        )
        self.files = FileStore(self.config.max_files, self.config.max_file_bytes)
        self._faults = FaultPicker(self.config.fault_rates, self.config.seed)
        self._latency = self.config.latency_model
        self._latency_rng = random.Random(f"kimiflow-sim-latency-{self.config.seed}")
        self._keys = frozenset(self.config.accepted_keys)
        self._balance = float(self.config.balance)
        self._gid = f"enterprise-tier-{self.config.tier if self.config.tier is not None else 5}"
        self._rid_prefix = "{:08x}-{:04x}-11ef-{:04x}-".format(*struct.unpack(">IHH", os.urandom(8)))
        self._rid_counter = 0
        self._models = _models_body()
        self._runner: web.ServerRunner | None = None
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/v1/models"): self._list_models,
            ("POST", "/v1/tokenizers/estimate-token-count"): self._estimate_tokens,
            ("GET", "/v1/users/me/balance"): self._balance_info,
            ("POST", "/v1/files"): self._upload_file,
            ("GET", "/v1/files"): self._list_files,
        }

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> Simulator:
        """Bind and start serving; ``port=0`` picks a free port (read it from ``sim.port``)."""
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        return self

    async def stop(self) -> None:
        """Stop serving and drop open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- public state -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give a client, e.g. ``http://127.0.0.1:54321/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def api_key(self) -> str:
        """A key the simulator accepts (the first configured key, or the default one)."""
        return self.config.accepted_keys[0]

    @property
    def balance(self) -> float:
        """The account balance in CNY, after every completed request's cost."""
        return self._balance

    def charge(self, cost: float) -> None:
        """Deduct ``cost`` CNY from the balance."""
        self._balance -= cost

    def sample_latency(self) -> tuple[float, float]:
        """(time to first token, seconds per token) for the next request."""
        if self._latency.is_instant:
            return 0.0, 0.0
        return self._latency.sample(self._latency_rng)

    def __repr__(self) -> str:
        return f"Simulator(base_url={self.base_url!r}, tier={self.config.tier!r})"

    # -- responses --------------------------------------------------------------------------

    def _headers(self, request: web.BaseRequest, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, "Msh-Request-Id": request[REQUEST_ID], "Msh-Gid": self._gid}

    def json_response(self, status: int, body: bytes, request: web.BaseRequest) -> web.Response:
        """A JSON answer with Kimi's headers."""
        return web.Response(status=status, body=body, headers=self._headers(request, JSON_TYPE))

    def stream_response(self, request: web.BaseRequest) -> web.StreamResponse:
        """The SSE response object (not yet prepared)."""
        headers = self._headers(request, "text/event-stream")
        headers["Cache-Control"] = "no-cache"
        return web.StreamResponse(status=200, headers=headers)

    async def broken_json_response(self, request: web.BaseRequest, body: bytes, fault: Fault) -> web.StreamResponse:
        """200 headers announcing ``body``, then half of it and a close (``cut``) or silence (``stall``)."""
        resp = web.StreamResponse(status=200, headers=self._headers(request, JSON_TYPE))
        resp.content_length = len(body)
        await resp.prepare(request)
        if fault.name == "stall":
            await stall_until_disconnect(request, resp, None)
        else:
            await resp.write(body[: len(body) // 2])
        transport = request.transport
        if transport is not None:
            transport.close()
        return resp

    def _reset(self, request: web.BaseRequest) -> web.StreamResponse:
        """Abort the TCP connection before any response byte: the client sees a reset."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns close into a TCP RST instead of an orderly FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.stats.resets += 1
        return web.StreamResponse(status=499)

    # -- dispatch ---------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._rid_counter += 1
        request[REQUEST_ID] = f"{self._rid_prefix}{self._rid_counter:012x}"
        stats = self.stats
        stats.requests += 1
        try:
            resp = await self._dispatch(request)
        except SimError as exc:
            if exc.status == 429:
                stats.rate_limited += 1
            resp = self.json_response(exc.status, exc.body(), request)
            for name, value in exc.headers.items():
                resp.headers[name] = value
        if resp.status != 499:
            stats.by_status[resp.status] += 1
        return resp

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == STATS_PATH:
            return self.json_response(200, _encode(self.stats.to_dict()), request)
        key = self._authenticate(request)
        handler = self._routes.get((request.method, path))
        file_id, action = None, None
        if handler is None and path.startswith("/v1/files/"):
            file_id, _, action = path[len("/v1/files/") :].partition("/")
            if not file_id or action not in ("", "content"):
                raise self._not_found(path)
            allowed = ("GET",) if action == "content" else ("GET", "DELETE")
            if request.method not in allowed:
                raise self._bad_method(request)
        elif handler is None:
            if any(p == path for _, p in self._routes):
                raise self._bad_method(request)
            raise self._not_found(path)
        fault = self._faults.pick(request.headers.get(FAULT_HEADER))
        if fault is not None:
            self.stats.faults[fault.name] += 1
            if fault.name == "reset":
                return self._reset(request)
            status_fault = _STATUS_FAULTS.get(fault.name)
            if status_fault is not None:
                limits = self.limiter.limits
                raise status_fault(key, fault, limits.rpm if limits is not None else tier_limits(5).rpm)
        if handler is not None:
            return await handler(request, key, fault)
        assert file_id is not None
        return await self._file_action(request, file_id, action, fault)

    def _authenticate(self, request: web.BaseRequest) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.missing_key()
        if token not in self._keys:
            raise errors.wrong_key()
        return token

    @staticmethod
    def _not_found(path: str) -> SimError:
        return SimError(404, "resource_not_found_error", f"Not found the path {path}")

    @staticmethod
    def _bad_method(request: web.BaseRequest) -> SimError:
        return SimError(405, "invalid_request_error", f"Invalid request: {request.method} is not allowed on {request.path}")

    async def _json_or_fault(self, request: web.BaseRequest, payload: Any, fault: Fault | None) -> web.StreamResponse:
        body = _encode(payload)
        if fault is not None and fault.name in ("cut", "stall"):
            return await self.broken_json_response(request, body, fault)
        return self.json_response(200, body, request)

    # -- endpoints --------------------------------------------------------------------------

    async def _chat(self, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
        return await handle_chat(self, request, key, fault)

    async def _list_models(self, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
        if fault is not None and fault.name in ("cut", "stall"):
            return await self.broken_json_response(request, self._models, fault)
        return self.json_response(200, self._models, request)

    async def _estimate_tokens(self, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
        data = decode_json_object(await read_body(request))
        resolve_model(data)
        messages = validate_messages(data)
        return await self._json_or_fault(request, {"data": {"total_tokens": estimate_message_tokens(messages)}}, fault)

    async def _balance_info(self, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
        cash = round(self._balance, 5)
        voucher = 0.0
        # Kimi: cash may go negative (arrears); available then equals the voucher balance (§7.3).
        available = voucher + max(cash, 0.0)
        payload = {
            "code": 0,
            "data": {"available_balance": available, "voucher_balance": voucher, "cash_balance": cash},
            "scode": "0x0",
            "status": True,
        }
        return await self._json_or_fault(request, payload, fault)

    async def _upload_file(self, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            raise errors.invalid_request("upload a file as multipart/form-data with fields 'file' and 'purpose'")
        reader = await request.multipart()
        purpose: str | None = None
        filename: str | None = None
        data: bytes | None = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.read()).decode("utf-8", "replace").strip()
            elif part.name == "file":
                filename = part.filename or "upload.bin"
                chunks: list[bytes] = []
                size = 0
                while True:
                    chunk = await part.read_chunk(1 << 16)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.files.max_bytes:
                        raise self.files.too_large()
                    chunks.append(chunk)
                data = b"".join(chunks)
        self.files.check_purpose(purpose)
        if data is None or filename is None:
            raise errors.invalid_request("missing multipart field 'file'")
        assert purpose is not None
        stored = self.files.add(filename, data, purpose)
        self.stats.files_uploaded += 1
        return await self._json_or_fault(request, stored.as_dict(), fault)

    async def _list_files(self, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
        return await self._json_or_fault(request, self.files.list(), fault)

    async def _file_action(
        self, request: web.BaseRequest, file_id: str, action: str | None, fault: Fault | None
    ) -> web.StreamResponse:
        if action == "content":
            body = self.files.content(file_id)
            headers = self._headers(request, "text/plain; charset=utf-8")
            return web.Response(status=200, body=body, headers=headers)
        if request.method == "DELETE":
            return await self._json_or_fault(request, self.files.delete(file_id), fault)
        return await self._json_or_fault(request, self.files.get(file_id).as_dict(), fault)


@contextmanager
def run_in_thread(
    config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0
) -> Iterator[Simulator]:
    """Run a simulator on its own event loop in a background thread, for synchronous code.

    >>> with run_in_thread(SimConfig(seed=3)) as sim:
    ...     Kimi(api_key=sim.api_key, base_url=sim.base_url).ask("你好")
    """
    sim = Simulator(config, host=host, port=port)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(sim.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="kimiflow-sim", daemon=True)
    thread.start()
    if not ready.wait(start_timeout):
        raise RuntimeError(f"the simulator did not start within {start_timeout} s")
    if failure:
        thread.join(start_timeout)
        loop.close()
        raise failure[0]
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(start_timeout)
