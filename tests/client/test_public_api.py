"""The public surface: a name appearing or disappearing fails here, and the twins stay twins."""

from __future__ import annotations

import inspect

import kimiflow
from kimiflow import AsyncKimi, Kimi

EXPECTED = {
    "APIConnectionError", "APIError", "APIStatusError", "APITimeoutError", "AsyncChatCompletionStream",
    "AsyncKimi", "AsyncStream", "AuthenticationError", "BadRequestError", "ChatCompletion", "ChatCompletionChunk",
    "ChatCompletionStream", "ConfigError", "ContentFilterError", "DeadlineExceededError", "EngineOverloadedError",
    "IncompleteStreamError", "InternalServerError", "Kimi", "KimiflowError", "NotFoundError",
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
