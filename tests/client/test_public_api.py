"""The public surface: a name appearing or disappearing fails here, and the twins stay twins."""

from __future__ import annotations

import inspect

import kimiflow
from kimiflow import AsyncKimi, Kimi

EXPECTED = {
    "AnswerBudgetExceededError", "AnswerValidationError", "ParsedChatCompletion", "StructuredAnswerError",
    "TruncatedAnswerError", "MaxStepsExceededError", "ToolEvent", "ToolLoopError", "ToolRunResult",
    "APIConnectionError", "APIError", "APIStatusError", "APITimeoutError", "AsyncChatCompletionStream",
    "AsyncKimi", "AsyncStream", "AuthenticationError", "BadRequestError", "ChatCompletion", "ChatCompletionChunk",
    "ChatCompletionStream", "ClientClosedError", "ConfigError", "ContentFilterError", "DeadlineExceededError", "EngineOverloadedError",
    "IncompleteStreamError", "InternalServerError", "InvalidArgumentError", "Kimi", "KimiflowError",
    "MalformedResponseError", "NotFoundError",
    "PermissionDeniedError", "QuotaExceededError", "RateLimitError", "RetryPolicy", "Stream", "StreamError",
    "StreamIdleTimeoutError", "Timeouts", "Usage", "WEB_SEARCH_TOOL", "__version__",
}


def test_all_is_exactly_the_public_names() -> None:
    assert len(kimiflow.__all__) == len(set(kimiflow.__all__))  # its order is kept by ruff's RUF022
    assert set(kimiflow.__all__) == EXPECTED
    for name in kimiflow.__all__:
        assert hasattr(kimiflow, name)


def test_error_tree_matches_the_design() -> None:
    k = kimiflow
    assert issubclass(k.ConfigError, k.KimiflowError) and issubclass(k.APIError, k.KimiflowError)
    assert issubclass(k.ContentFilterError, k.BadRequestError)
    for cls in (k.BadRequestError, k.AuthenticationError, k.PermissionDeniedError, k.NotFoundError,
                k.RateLimitError, k.QuotaExceededError, k.InternalServerError):
        assert issubclass(cls, k.APIStatusError) and issubclass(cls, k.APIError)
    assert issubclass(k.EngineOverloadedError, k.RateLimitError)
    assert issubclass(k.APITimeoutError, k.APIConnectionError)
    assert issubclass(k.IncompleteStreamError, k.StreamError)


def _drawn_tree() -> dict[str, str]:
    """Child -> parent as drawn in ``kimiflow.core.errors``'s docstring (the one drawing of the tree)."""
    import re

    from kimiflow.core import errors

    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^((?:[│ ]   )*)(?:[├└]── )?([A-Z][A-Za-z]+Error)\b", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + (1 if re.search(r"[├└]── ", line) else 0)
        name = match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_drawn_error_tree_is_the_real_one() -> None:
    """Every class drawn in core/errors.py's docstring derives from the parent drawn above it."""
    import kimiflow.batch
    import kimiflow.limits

    drawn = _drawn_tree()
    import kimiflow.core.partial_json
    import kimiflow.core.schema
    import kimiflow.sim.answers
    import kimiflow.structured

    assert len(drawn) == 40, drawn  # every class below KimiflowError
    where = {**vars(kimiflow), **vars(kimiflow.batch), **vars(kimiflow.limits), **vars(kimiflow.structured),
             **vars(kimiflow.core.schema), **vars(kimiflow.core.partial_json), **vars(kimiflow.sim.answers)}
    for child, parent in drawn.items():
        assert child in where, f"{child} is drawn but not exported"
        assert where[parent] in where[child].__bases__, f"{child} is drawn under {parent}"
    assert issubclass(kimiflow.InvalidArgumentError, ValueError)


def test_every_exported_exception_is_a_kimiflow_error() -> None:
    import kimiflow.batch
    import kimiflow.limits
    import kimiflow.sim

    for module in (kimiflow, kimiflow.batch, kimiflow.limits, kimiflow.sim):
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                assert issubclass(obj, kimiflow.KimiflowError), f"{module.__name__}.{name}"


def _public_members(obj: object) -> dict[str, object]:
    return {name: member for name, member in inspect.getmembers(obj) if not name.startswith("_")}


def _signature(member: object) -> list[tuple[str, object, object]]:
    try:
        sig = inspect.signature(member)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_sync_and_async_clients_have_identical_names_and_signatures() -> None:
    sync_client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:4/v1")
    async_client = AsyncKimi(api_key="sk-1234567890", base_url="http://127.0.0.1:4/v1")
    pairs = [(sync_client, async_client), (sync_client.chat.completions, async_client.chat.completions),
             (sync_client.models, async_client.models), (sync_client.files, async_client.files),
             (sync_client.tokens, async_client.tokens)]
    assert {"create", "stream", "parse", "run_tools"} <= _public_members(sync_client.chat.completions).keys()
    for sync_obj, async_obj in pairs:
        sync_members, async_members = _public_members(sync_obj), _public_members(async_obj)
        assert sync_members.keys() == async_members.keys(), type(sync_obj).__name__
        for name in sync_members:
            if callable(sync_members[name]):
                assert _signature(sync_members[name]) == _signature(async_members[name]), name
    assert inspect.signature(Kimi.__init__).parameters.keys() == inspect.signature(AsyncKimi.__init__).parameters.keys()


def test_import_does_not_load_the_http_stacks() -> None:
    """``import kimiflow`` stays fast: httpx and aiohttp load when a client first sends."""
    import subprocess
    import sys

    code = "import sys, kimiflow; print('httpx' in sys.modules, 'aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
