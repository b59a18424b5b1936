"""kimiflow's exception tree and the one table that maps a response to it.

Every exception kimiflow raises on purpose derives from ``KimiflowError``::

    KimiflowError
    ├── ConfigError                      the client's configuration is missing or invalid (key, base URL,
    │                                    timeouts, headers, settings file)
    ├── InvalidArgumentError (ValueError)  an argument to a call is unusable (no model, bad messages,
    │   │                                a value JSON cannot carry, limits out of range); nothing was sent
    │   ├── RequestTooLargeError         a request can never fit the TPM/TPD limit (kimiflow.limits)
    │   ├── InvalidSchemaError           a type or schema MFJS cannot express: path and rule (core.schema)
    │   ├── InputError                   a batch input line is invalid (kimiflow.batch)
    │   ├── BatchInputError              a batch input has invalid lines; nothing was sent
    │   ├── PathConflictError            two of a batch's files are one file (errors= equal to output=)
    │   └── AnswerScriptError            a simulator answers file is invalid (kimiflow.sim.answers)
    ├── ClientClosedError                the client was closed, or an AsyncKimi used from another loop
    ├── PartialJSONError (ValueError)    streamed JSON that can never become a document (core.partial_json)
    ├── BatchStoreError                  a batch result cannot be made durable (disk full, journal locked)
    ├── RemoteBatchError                 a Batch API batch (``--remote``) failed Kimi's validation; nothing ran
    ├── JournalError                     a batch journal cannot be used as asked
    │   ├── JournalMismatchError         another input file or other parameters than the batch began with
    │   ├── JournalStateError            a move the journal's state machine does not allow
    │   └── OutputConflictError          the output holds results of something else
    ├── StructuredAnswerError            parse() got no valid answer (kimiflow.structured); ``usage`` and
    │   │                                ``completions`` hold every attempt's cost and completion
    │   ├── AnswerValidationError (ValueError)  not JSON, or not the type; errors by JSON path
    │   ├── TruncatedAnswerError         finish_reason "length" before the JSON ended; raise max_tokens
    │   └── AnswerBudgetExceededError    parse()'s token_budget ran out before a valid answer
    ├── ToolLoopError                    run_tools() ended without a final answer (kimiflow.tool_loop);
    │   │                                ``messages`` (the transcript), ``usage`` and ``cost_cny``
    │   └── MaxStepsExceededError        every one of max_steps completions still asked for tools
    └── APIError                         anything that went wrong talking to the API
        ├── APIStatusError               the server answered with an error status
        │   ├── BadRequestError          400
        │   │   └── ContentFilterError   400 content_filter
        │   ├── AuthenticationError      401
        │   ├── PermissionDeniedError    403
        │   ├── NotFoundError            404
        │   ├── RateLimitError           429 rate_limit_reached_error
        │   │   └── EngineOverloadedError  429 engine_overloaded_error
        │   ├── QuotaExceededError       403/429 exceeded_current_quota_error (never retried)
        │   └── InternalServerError      5xx
        ├── MalformedResponseError       a 2xx whose body is not what the API sends (retried like a 5xx)
        ├── APIConnectionError           no usable HTTP response
        │   └── APITimeoutError          connect / read / stream-idle / total deadline
        │       ├── StreamIdleTimeoutError
        │       └── DeadlineExceededError
        └── StreamError                  a stream failed after it started (``partial`` holds what came)
            └── IncompleteStreamError    the stream ended without ``data: [DONE]``

``ValueError`` is a second base only where callers reasonably catch it: ``InvalidArgumentError``
(code that validates arguments catches ``ValueError`` by habit) and the two errors about text that
does not parse (``AnswerValidationError``, ``PartialJSONError``), as ``json.JSONDecodeError`` is one. Every API error carries ``status_code``, ``type``, ``message``,
``request_id`` (``Msh-Request-Id``) and ``attempts``. The API key never appears in any of them:
messages are built from server text and request metadata only, and ``redact`` scrubs the key in
use and anything that looks like a key. Server text can echo the key (a hostile proxy copying
``Authorization`` into ``Msh-Request-Id`` or an error body), so every client's key is remembered
here when its configuration is validated (``remember_key``) and scrubbed in any shape, not only
``sk-...``, wherever ``redact`` runs: errors, request ids, DEBUG lines, batch files, the CLI.
"""

from __future__ import annotations

import re
from typing import Any

_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{6,}")
_MASK = "sk-***"
# Keys of the clients configured in this process, so that ``redact`` scrubs them from text built
# anywhere (errors, request ids, DEBUG lines, batch files, the CLI) without each caller holding the
# key. Insertion-ordered and bounded: a process cycling through many keys forgets the oldest.
KEYS_IN_USE: dict[str, None] = {}
_MAX_KEYS_IN_USE = 32
# Shorter "keys" are test placeholders; scrubbing them would mangle ordinary words.
_MIN_SECRET_LENGTH = 8


def remember_key(key: str) -> None:
    """Have ``redact`` scrub ``key`` from every text from now on (done for each client's key)."""
    if len(key) < _MIN_SECRET_LENGTH or key in KEYS_IN_USE:
        return
    if len(KEYS_IN_USE) >= _MAX_KEYS_IN_USE:
        del KEYS_IN_USE[next(iter(KEYS_IN_USE))]
    KEYS_IN_USE[key] = None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without any key: each ``secret``, every key in use in this process, and anything
    shaped like an ``sk-`` key become ``sk-***``.

    >>> redact("upstream said: Bearer sk-abcdef123456")
    'upstream said: Bearer sk-***'
    """
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, _MASK)
    for key in KEYS_IN_USE:
        if key in text:
            text = text.replace(key, _MASK)
    if "sk-" in text:
        text = _KEY_PATTERN.sub(_MASK, text)
    return text


def redact_bytes(body: bytes, *secrets: str | None) -> bytes:
    """``body`` with every key ``redact`` knows replaced, for raw bytes kept or shown later."""
    for secret in (*secrets, *KEYS_IN_USE):
        if secret and len(secret) >= 4:
            raw = secret.encode()
            if raw in body:
                body = body.replace(raw, _MASK.encode())
    return body


def redact_value(value: Any, *secrets: str | None, _depth: int = 0) -> Any:
    """A copy of decoded JSON ``value`` with ``redact`` applied to every string in it (keys included).

    Below 100 levels the value is returned as it is: callers scrub the raw bytes with
    ``redact_bytes`` before decoding, so this pass only adds the rare escaped spelling of a key.
    """
    if isinstance(value, str):
        return redact(value, *secrets)
    if _depth >= 100:
        return value
    if isinstance(value, dict):
        return {redact(str(k), *secrets): redact_value(v, *secrets, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, *secrets, _depth=_depth + 1) for v in value]
    return value


class KimiflowError(Exception):
    """Base of every error kimiflow raises."""


class ConfigError(KimiflowError):
    """The client's configuration is missing or invalid; the message says how to fix it."""


class InvalidArgumentError(KimiflowError, ValueError):
    """An argument to a kimiflow call is unusable; nothing was sent. The message says how to fix it."""


class ClientClosedError(KimiflowError):
    """The client was closed (or an ``AsyncKimi`` is used from another event loop than its own)."""


class APIError(KimiflowError):
    """An error talking to the Kimi API."""

    status_code: int | None = None
    partial: Any = None
    """For a stream that failed after it started: the completion accumulated up to the failure."""

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.request_id = request_id
        self.body = body
        self.attempts = attempts

    def __str__(self) -> str:
        parts = [self.message]
        details = []
        if self.status_code is not None:
            details.append(str(self.status_code))
        if self.type:
            details.append(self.type)
        if self.request_id:
            details.append(f"request id {self.request_id}")
        if self.attempts > 1:
            details.append(f"after {self.attempts} attempts")
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)


class APIStatusError(APIError):
    """The server answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, type=type, request_id=request_id, body=body, attempts=attempts)
        self.status_code = status_code
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the request is invalid; fix it, retrying cannot help."""


class ContentFilterError(BadRequestError):
    """400 ``content_filter``: the input or output was judged high-risk."""


class AuthenticationError(APIStatusError):
    """401: the key is missing or wrong (keys of api.moonshot.cn and api.moonshot.ai are not interchangeable)."""


class PermissionDeniedError(APIStatusError):
    """403 ``permission_denied_error``."""


class NotFoundError(APIStatusError):
    """404: unknown model, file or endpoint."""


class RateLimitError(APIStatusError):
    """429 ``rate_limit_reached_error``: concurrency, RPM, TPM or TPD reached. Retried after a pause."""


class EngineOverloadedError(RateLimitError):
    """429 ``engine_overloaded_error``: the engine is busy. Retried with backoff."""


class QuotaExceededError(APIStatusError):
    """``exceeded_current_quota_error`` on 403 or 429: balance or quota exhausted. Never retried."""


class InternalServerError(APIStatusError):
    """5xx: the server failed. Retried (the request may have been billed)."""


class MalformedResponseError(APIError):
    """A 2xx answer whose body is not what the API sends (truncated or garbled by a proxy, say).

    Retried like a 5xx: the request may have been billed, but no usable answer arrived.
    """


class APIConnectionError(APIError):
    """No usable HTTP response: connection refused or reset, DNS failure, protocol error."""


class APITimeoutError(APIConnectionError):
    """A time limit fired; ``which`` says which one (connect, read, stream idle, total)."""

    def __init__(self, message: str = "request timed out", *, which: str = "read", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.which = which


class StreamIdleTimeoutError(APITimeoutError):
    """No stream data arrived within the idle timeout (keep-alive comments do not count)."""


class DeadlineExceededError(APITimeoutError):
    """The request's total deadline passed."""


class StreamError(APIError):
    """A stream failed after it had started; ``partial`` holds what arrived before the failure."""

    def __init__(self, message: str, *, partial: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.partial = partial


class IncompleteStreamError(StreamError):
    """The stream ended without ``data: [DONE]`` (Kimi: only ``[DONE]`` means complete)."""


def client_closed_error(client_name: str) -> ClientClosedError:
    """The error for using a client after ``close()`` (or after its ``with`` block ended)."""
    return ClientClosedError(
        f"this client is closed: create a new {client_name}() (a `with` block closes the client at its end, "
        "and with_options() copies share their parent's connections)")


_BY_TYPE: dict[str, type[APIStatusError]] = {
    "content_filter": ContentFilterError,
    "exceeded_current_quota_error": QuotaExceededError,
    "engine_overloaded_error": EngineOverloadedError,
    "rate_limit_reached_error": RateLimitError,
    "invalid_authentication_error": AuthenticationError,
    "incorrect_api_key_error": AuthenticationError,
    "permission_denied_error": PermissionDeniedError,
    "resource_not_found_error": NotFoundError,
}

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def error_class_for(status: int, error_type: str | None) -> type[APIStatusError]:
    """The most specific exception class for an HTTP status and Kimi ``error.type``.

    The type wins where it is more specific than the status (a quota error is ``QuotaExceededError``
    on 403 and on 429), but never moves an error to another status family.
    """
    by_type = _BY_TYPE.get(error_type or "")
    if by_type is not None:
        if by_type is QuotaExceededError and status in (403, 429):
            return by_type
        base = _BY_STATUS.get(status)
        if base is not None and issubclass(by_type, base):
            return by_type
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)
