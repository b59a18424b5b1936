"""Request building and response classification, sans-I/O.

An endpoint call is described by a ``RequestSpec`` (method, path, JSON body or multipart form,
what to decode the answer into); the transports only send it. ``error_from_response`` turns an
error response into the most specific kimiflow exception, exactly once, for both clients.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from kimiflow._version import __version__
from kimiflow.core.errors import (
    KEYS_IN_USE,
    APIStatusError,
    InvalidArgumentError,
    error_class_for,
    redact,
    redact_bytes,
    redact_value,
)
from kimiflow.core.retry import retry_after_from
from kimiflow.types._base import decode, set_response_meta

logger = logging.getLogger("kimiflow")

T = TypeVar("T")
REQUEST_ID_HEADER = "msh-request-id"
USER_AGENT = f"kimiflow/{__version__}"
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class UploadFile:
    """One file of a multipart upload."""

    field: str
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass
class RequestSpec(Generic[T]):
    """One API call, ready for a transport. ``into`` is the wire type of a 2xx answer (``str`` for text)."""

    method: str
    path: str
    into: type[T]
    body: bytes | None = None
    form: Mapping[str, str] | None = None
    files: tuple[UploadFile, ...] = ()
    stream: bool = False
    extra_headers: Mapping[str, str] = field(default_factory=dict)


_PLAIN_SCALARS: dict[type, bool] = {str: True, int: True, bool: True, type(None): True}


def _plain_json(value: Any) -> bool:
    """True when ``value`` holds only what JSON carries as is; False means "look closer".

    msgspec would silently send NaN and infinities as ``null``, bytes as base64 and sets as lists,
    so every request body is checked first. This walk is the cheap half, ~2x msgspec's own encode
    of a chat body: exact-type checks, a call only per nested container. Object keys are left to
    msgspec, which writes numbers as strings (as ``json.dumps`` does) and refuses other keys.
    Subclasses and odd values fall to ``_unsendable``, which names the problem (or finds none).
    """
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if item - item != 0.0:  # true for NaN and ±inf, the numbers JSON has no spelling for
                return False
            continue
        if not _plain_json(item):
            return False
    return True


def _unsendable(value: Any, path: str) -> str | None:
    """What is wrong with ``value`` (at ``path``) for a JSON request body, or None if it is fine."""
    if value is None or isinstance(value, (str, int)):  # bool is an int; msgspec writes big ints exactly
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (
            f"{path}={value!r} is not a number JSON can carry: use a finite number")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{path} is {type(value).__name__}: decode it to str first (e.g. value.decode('utf-8'))"
    if isinstance(value, (set, frozenset)):
        return f"{path} is a {type(value).__name__}: pass a list (JSON has no sets)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                return f"{path} has the key {key!r} ({type(key).__name__}): JSON object keys are strings"
            problem = _unsendable(item, f"{path}.{key}" if path else str(key))
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = _unsendable(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    hint = "pass a dict" if isinstance(value, Mapping) else "pass str, int, float, bool, None, a list or a dict"
    return f"{path or 'the request body'} is a {type(value).__name__}, which JSON cannot carry: {hint}"


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as JSON bytes; ``InvalidArgumentError`` naming the first value JSON cannot carry.

    >>> encode_json({"temperature": float("nan")})
    Traceback (most recent call last):
    kimiflow.core.errors.InvalidArgumentError: temperature=nan is not a number JSON can carry: use a finite number
    """
    if not _plain_json(payload):
        problem = _unsendable(payload, "")
        if problem:
            raise InvalidArgumentError(problem)
    try:
        return _encoder.encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        # Only a key can get here (values were checked): name where it is.
        problem = _unsendable(payload, "") or f"request parameters cannot be sent as JSON: {exc}"
        raise InvalidArgumentError(problem) from None


def build_chat_body(params: Mapping[str, Any], extra_body: Mapping[str, Any] | None = None) -> bytes:
    """The JSON body of a chat completion. ``None`` values are left out; ``extra_body`` is merged last.

    Raises ``InvalidArgumentError`` for obviously unusable input, before anything is sent.
    """
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgumentError(
            "model is required: pass model='moonshot-v1-8k' (or another name from client.models.list())")
    messages = params.get("messages")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidArgumentError("messages must be a non-empty list such as [{'role': 'user', 'content': 'hello'}]")
    for index, message in enumerate(messages):
        # ``type(...) is dict`` first: the ABC isinstance check is slow and this runs per message per request.
        if not (type(message) is dict or isinstance(message, Mapping)) or "role" not in message:
            raise InvalidArgumentError(
                f"messages[{index}] must be a dict with a 'role' (and usually 'content'): got {message!r}")
    if "functions" in params or "function_call" in params:
        raise InvalidArgumentError(
            "Kimi does not support 'functions'/'function_call': use tools=[{'type': 'function', ...}]")
    body = {k: v for k, v in params.items() if v is not None}
    if extra_body:
        body.update(extra_body)
    return encode_json(body)


def request_headers(api_key: str, default_headers: Mapping[str, str], stream: bool) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "User-Agent": USER_AGENT,
    }
    headers.update(default_headers)
    return headers


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, api_key: str | None = None
) -> APIStatusError:
    """The most specific ``APIStatusError`` for an error response (Moonshot body, or anything else).

    Everything taken from the server (request id, message, type, body) is scrubbed of the key first:
    a server or proxy that echoes the request's ``Authorization`` must not put it in front of a user.
    """
    request_id = request_id_of(headers, api_key)
    body = redact_bytes(body, api_key)
    raw = redact_value(_json_or_none(body), api_key)
    message, error_type = _error_fields(raw)
    if not message:
        text = body[:500].decode("utf-8", "replace").strip()
        message = text or f"HTTP {status} with an empty body"
    message = redact(message, api_key)
    cls = error_class_for(status, error_type)
    retry_after = retry_after_from(message, headers)
    logger.debug("kimiflow: HTTP %s %s (request id %s)", status, error_type, request_id)
    return cls(
        message,
        status_code=status,
        type=error_type,
        request_id=request_id,
        body=raw,
        retry_after=retry_after,
    )


def _json_or_none(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested deeper than msgspec goes
        return None


def _error_fields(generic: Any) -> tuple[str, str | None]:
    """``error.message`` and ``error.type`` of Moonshot's error body, tolerating odd shapes and types."""
    error = generic.get("error") if isinstance(generic, dict) else None
    if not isinstance(error, dict):
        return "", None
    message, error_type = error.get("message"), error.get("type")
    return (message if isinstance(message, str) else "",
            error_type if isinstance(error_type, str) and error_type else None)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and type(headers) is dict:
        # httpx and aiohttp headers are case-insensitive already; only a plain dict needs the scan.
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    return value


def request_id_of(headers: Mapping[str, str], api_key: str | None = None) -> str | None:
    """The response's ``Msh-Request-Id``, with any key in use cut out (a hostile server may echo it there)."""
    request_id = _header(headers, REQUEST_ID_HEADER)
    if request_id is None:
        return None
    # Inline pre-check: this runs for every response, and ``redact`` itself costs ~0.3 µs.
    if "sk-" in request_id or (api_key and api_key in request_id):
        return redact(request_id, api_key)
    for key in KEYS_IN_USE:
        if key in request_id:
            return redact(request_id, api_key)
    return request_id


def decode_success(spec: RequestSpec[T], body: bytes, request_id: str | None, attempts: int) -> T:
    """Decode a 2xx body into ``spec.into``, recording request id and attempts (``set_response_meta``)."""
    from kimiflow.core.errors import MalformedResponseError

    if spec.into is str:
        return body.decode("utf-8", "replace")  # type: ignore[return-value]
    try:
        obj = decode(body, spec.into)  # type: ignore[type-var]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        snippet = redact(body[:4096].decode("utf-8", "replace"))[:200]  # scrub, then cut: no key prefix survives
        raise MalformedResponseError(
            f"the server's answer to {spec.method} {spec.path} is not valid: {redact(str(exc))} (body starts {snippet!r})",
            request_id=request_id,
            attempts=attempts,
        ) from None
    set_response_meta(obj, request_id, attempts)
    return obj
