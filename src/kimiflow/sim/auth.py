"""Bearer-key authentication, with Kimi's two 401 answers (docs/kimi-api.md §5)."""

from __future__ import annotations

from collections.abc import Container

from aiohttp import web

from kimiflow.sim import errors


def authenticate(request: web.BaseRequest, accepted_keys: Container[str]) -> str:
    """The request's API key; 401 ``incorrect_api_key_error`` without one, ``invalid_authentication_error``
    for a key the simulator does not accept.

    >>> authenticate(request, frozenset({"sk-sim-a"}))
    'sk-sim-a'
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.missing_key()
    if token not in accepted_keys:
        raise errors.wrong_key()
    return token
