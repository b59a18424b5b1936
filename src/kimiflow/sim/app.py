"""The simulator server: routing, its in-process life cycle and its public state.

Built on aiohttp's low-level ``web.Server`` (no router, no middlewares) so that the simulator is
never the bottleneck of a benchmark: one dict lookup routes a request. What is served lives
elsewhere, one concept per module: ``http`` (headers, responses, broken answers), ``auth``,
``faults``, ``chat``, ``account`` (models, balance, tokens), ``file_endpoints``, ``batches``, ``state``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import msgspec
from aiohttp import web

from kimiflow.core.errors import KimiflowError
from kimiflow.sim import errors
from kimiflow.sim.account import MODEL_PATH_PREFIX, balance_info, estimate_tokens, list_models, retrieve_model
from kimiflow.sim.answers import RESET_PATH, reset_answers
from kimiflow.sim.auth import authenticate
from kimiflow.sim.batches import BATCHES_PATH, batch_action, create_batch, list_batches, parse_batch_path
from kimiflow.sim.chat import handle_chat
from kimiflow.sim.config import SimConfig
from kimiflow.sim.errors import SimError
from kimiflow.sim.faults import FAULT_HEADER, Fault, FaultPicker, echoed_key_error, status_fault_error
from kimiflow.sim.file_endpoints import file_action, list_files, parse_file_path, upload_file
from kimiflow.sim.http import GROUP_ID, REQUEST_ID, RequestIds, json_response, reset_connection
from kimiflow.sim.state import SimState

STATS_PATH = "/_sim/stats"
CHAT_PATH = "/v1/chat/completions"
_encode = msgspec.json.Encoder().encode

Handler = Callable[[SimState, web.BaseRequest, str, "Fault | None"], Awaitable[web.StreamResponse]]
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", CHAT_PATH): handle_chat,
    ("GET", "/v1/models"): list_models,
    ("POST", "/v1/tokenizers/estimate-token-count"): estimate_tokens,
    ("GET", "/v1/users/me/balance"): balance_info,
    ("POST", "/v1/files"): upload_file,
    ("GET", "/v1/files"): list_files,
    ("POST", BATCHES_PATH): create_batch,
    ("GET", BATCHES_PATH): list_batches,
}
_ROUTED_PATHS = frozenset(path for _, path in ROUTES)


class Simulator:
    """A running Kimi API simulator on 127.0.0.1.

    >>> async with Simulator(SimConfig(seed=1)) as sim:
    ...     client = AsyncKimi(api_key=sim.api_key, base_url=sim.base_url)
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.state = SimState(self.config)
        # The state's parts, reachable from the server as before the split.
        self.stats = self.state.stats
        self.corpus = self.state.corpus
        self.limiter = self.state.limiter
        self.files = self.state.files
        self._faults = FaultPicker(self.config.fault_rates, self.config.seed)
        self._keys = frozenset(self.config.accepted_keys)
        self._request_ids = RequestIds()
        self._runner: web.ServerRunner | None = None

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
        return self.state.balance

    def charge(self, cost: float) -> None:
        """Deduct ``cost`` CNY from the balance."""
        self.state.charge(cost)

    def sample_latency(self) -> tuple[float, float]:
        """(time to first token, seconds per token) for the next request."""
        return self.state.sample_latency()

    def __repr__(self) -> str:
        return f"Simulator(base_url={self.base_url!r}, tier={self.config.tier!r})"

    # -- dispatch ---------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request[REQUEST_ID] = self._request_ids.next()
        request[GROUP_ID] = self.state.group_id
        stats = self.stats
        stats.requests += 1
        try:
            resp = await self._dispatch(request)
        except SimError as exc:
            if exc.status == 429:
                stats.rate_limited += 1
            resp = json_response(exc.status, exc.body(), request)
            for name, value in exc.headers.items():
                resp.headers[name] = value
        if resp.status != 499:
            stats.by_status[resp.status] += 1
        return resp

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == STATS_PATH:
            return json_response(200, _encode(self.stats.to_dict()), request)
        if path == RESET_PATH:
            return reset_answers(self.state, request)
        key = authenticate(request, self._keys)
        handler = ROUTES.get((request.method, path))
        if handler is None and request.method == "GET" and path.startswith(MODEL_PATH_PREFIX):
            handler = retrieve_model
        file_path = parse_file_path(request) if handler is None else None
        batch_path = parse_batch_path(request) if handler is None and file_path is None else None
        if handler is None and file_path is None and batch_path is None:
            if path in _ROUTED_PATHS:
                raise errors.method_not_allowed(request.method, path)
            raise errors.not_found_path(path)
        fault = self._faults.pick(request.headers.get(FAULT_HEADER))
        if fault is not None:
            self.stats.faults[fault.name] += 1
            if fault.name == "reset":
                self.stats.resets += 1
                return reset_connection(request)
            if fault.name == "echo-key":
                authorization = request.headers.get("Authorization", "")
                request[REQUEST_ID] = authorization
                if path != CHAT_PATH:
                    # Chat decides itself: a 500 for JSON, a mid-stream error event for a stream.
                    raise echoed_key_error(authorization)
            error = status_fault_error(fault, key, self.state.quoted_rpm())
            if error is not None:
                raise error
        if handler is not None:
            return await handler(self.state, request, key, fault)
        if batch_path is not None:
            return await batch_action(self.state, request, *batch_path, fault)
        assert file_path is not None
        return await file_action(self.state, request, *file_path, fault)


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
        raise KimiflowError(f"the simulator did not start within {start_timeout} s")
    if failure:
        thread.join(start_timeout)
        loop.close()
        raise failure[0]
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(start_timeout)
