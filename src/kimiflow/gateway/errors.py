"""Error answers in Kimi's own body shape, so every Kimi client already knows how to handle them."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web


def error_body(message: str, type: str) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": type}})


def error_response(status: int, type: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """``{"error": {"message", "type"}}`` with ``status``.

    >>> error_response(401, "invalid_authentication_error", "Invalid Authentication")
    """
    return web.Response(status=status, body=error_body(message, type), content_type="application/json",
                        headers=dict(headers or {}))


def invalid_auth() -> web.Response:
    return error_response(401, "invalid_authentication_error", "Invalid Authentication")


def invalid_request(details: str) -> web.Response:
    return error_response(400, "invalid_request_error", f"Invalid request: {details}")
