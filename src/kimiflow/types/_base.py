"""The base of every wire object: lenient, fast, and never loses what the server sent.

Responses are decoded with msgspec straight into typed structs. Fields this version does not
know are skipped by the decoder, but the raw JSON is kept on the object, so ``to_dict()`` returns
everything the server sent, including fields added by newer API versions.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T", bound="WireModel")


class WireModel(msgspec.Struct, dict=True, omit_defaults=True):
    """A typed wire object. ``to_dict()`` gives the raw JSON object as the server sent it."""

    def to_dict(self) -> dict[str, Any]:
        """Everything the server sent (unknown fields included), as plain Python data.

        >>> resp.to_dict()["choices"][0]["message"]["content"]
        """
        raw = getattr(self, "_raw", None)
        if raw is not None:
            decoded: dict[str, Any] = msgspec.json.decode(raw)
            return decoded
        built: dict[str, Any] = msgspec.to_builtins(self)
        return built

    def to_json(self) -> bytes:
        """The object as compact JSON bytes (the server's own bytes when decoded from the wire)."""
        raw = getattr(self, "_raw", None)
        if raw is not None:
            return bytes(raw)
        return msgspec.json.encode(self)


class ResponseMeta:
    """Where a decoded response came from: its ``Msh-Request-Id`` and how many HTTP attempts it took.

    Every path that hands a response object to the caller (a JSON call, a stream's final completion)
    records it with ``set_response_meta``; ``resp.request_id`` and ``resp.attempts`` read it back.
    """

    __slots__ = ("attempts", "request_id")

    def __init__(self, request_id: str | None, attempts: int) -> None:
        self.request_id = request_id
        self.attempts = attempts

    def __repr__(self) -> str:
        return f"ResponseMeta(request_id={self.request_id!r}, attempts={self.attempts!r})"


_NO_META = ResponseMeta(None, 1)
"""What an object built by hand (not received) reports: no request id, one attempt."""


def set_response_meta(obj: object, request_id: str | None, attempts: int) -> None:
    """Record on a received wire object the request id and attempt count of its response."""
    obj._meta = ResponseMeta(request_id, attempts)  # type: ignore[attr-defined]  # dict=True structs take extra attrs


def response_meta(obj: object) -> ResponseMeta:
    """The ``ResponseMeta`` recorded on ``obj`` (request id ``None`` and one attempt if none was)."""
    meta = getattr(obj, "_meta", None)
    return meta if isinstance(meta, ResponseMeta) else _NO_META


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(data: bytes | str, into: type[T], *, keep_raw: bool = True) -> T:
    """Decode JSON bytes into a wire type, keeping the raw bytes for ``to_dict()``.

    Raises ``msgspec.ValidationError`` / ``msgspec.DecodeError`` on malformed input; callers map
    those to kimiflow errors.
    """
    decoder = _decoders.get(into)
    if decoder is None:
        # strict=False: a number sent as 3.0 or "3" still decodes (servers and gateways vary).
        decoder = _decoders[into] = msgspec.json.Decoder(into, strict=False)
    obj: T = decoder.decode(data)
    if keep_raw:
        obj._raw = data  # type: ignore[attr-defined]
    return obj
