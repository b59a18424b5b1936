"""Request building and response classification, sans-I/O.

An endpoint call is described by a ``RequestSpec`` (method, path, JSON body or multipart form,
what to decode the answer into); the transports only send it. ``error_from_response`` turns an
error response into the most specific kimiflow exception, exactly once, for both clients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from kimiflow._version import __version__
from kimiflow.core.errors import APIStatusError, ConfigError, error_class_for, redact
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


def encode_json(payload: Mapping[str, Any]) -> bytes:
    try:
        return _encoder.encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ConfigError(f"request parameters cannot be sent as JSON: {exc}") from None


def build_chat_body(params: Mapping[str, Any], extra_body: Mapping[str, Any] | None = None) -> bytes:
    """The JSON body of a chat completion. ``None`` values are left out; ``extra_body`` is merged last.

    Raises ``ConfigError`` for obviously unusable input, before anything is sent.
    """
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError("model is required: pass model='moonshot-v1-8k' (or another name from client.models.list())")
    messages = params.get("messages")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ConfigError("messages must be a non-empty list such as [{'role': 'user', 'content': 'hello'}]")
    for index, message in enumerate(messages):
        # ``type(...) is dict`` first: the ABC isinstance check is slow and this runs per message per request.
        if not (type(message) is dict or isinstance(message, Mapping)) or "role" not in message:
            raise ConfigError(f"messages[{index}] must be a dict with a 'role' (and usually 'content'): got {message!r}")
    if "functions" in params or "function_call" in params:
        raise ConfigError("Kimi does not support 'functions'/'function_call': use tools=[{'type': 'function', ...}]")
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
    """The most specific ``APIStatusError`` for an error response (Moonshot body, or anything else)."""
    request_id = _header(headers, REQUEST_ID_HEADER)
    if api_key and api_key.encode() in body:
        body = body.replace(api_key.encode(), b"sk-***")  # a server echoing the key must not put it in .body
    raw = _json_or_none(body)
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
    except msgspec.DecodeError:
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


def request_id_of(headers: Mapping[str, str]) -> str | None:
    return _header(headers, REQUEST_ID_HEADER)


def decode_success(spec: RequestSpec[T], body: bytes, request_id: str | None, attempts: int) -> T:
    """Decode a 2xx body into ``spec.into``, recording request id and attempts (``set_response_meta``)."""
    from kimiflow.core.errors import MalformedResponseError

    if spec.into is str:
        return body.decode("utf-8", "replace")  # type: ignore[return-value]
    try:
        obj = decode(body, spec.into)  # type: ignore[type-var]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        snippet = body[:200].decode("utf-8", "replace")
        raise MalformedResponseError(
            f"the server's answer to {spec.method} {spec.path} is not valid: {exc} (body starts {snippet!r})",
            request_id=request_id,
            attempts=attempts,
        ) from None
    set_response_meta(obj, request_id, attempts)
    return obj
