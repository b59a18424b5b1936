"""Batch input files: JSONL of chat requests, validated and read as a stream.

Two line shapes are accepted (docs/kimi-api.md §7.5 and DESIGN.md "Batch"):

* Batch API form: ``{"custom_id": "a1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
* short form: ``{"custom_id": "a1"?, "messages": [...] | "prompt": "...", "temperature": 0.3, ...}``

A line without ``custom_id`` gets its line number as id. ``scan_input`` reads the file once,
keeping only the ids, and reports every problem with its line number before anything is sent;
``iter_requests`` then streams the requests, so a 1,000,000-line file is never held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from kimiflow.core.errors import InvalidArgumentError

CHAT_URL = "/v1/chat/completions"
MAX_REPORTED_PROBLEMS = 1000
"""Problems kept for the report; the rest are only counted."""

CLIENT_ONLY_KEYS = ("api_key", "base_url", "extra_body", "extra_headers", "extra_query", "max_retries", "timeout")
"""Keyword arguments of the Python client, not request parameters: a line carrying one could swap the
key, inject headers or change the request after it was charged, so such lines are refused."""
MAX_NESTING_HINT = 900
"""About the nesting depth at which the JSON decoder gives up (it says so with a RecursionError)."""
UTF8_BOM = b"\xef\xbb\xbf"

_decoder = msgspec.json.Decoder()


@dataclass(frozen=True)
class InputDefaults:
    """Values applied to requests that do not set them (``model``, ``max_tokens``, ``system``)."""

    model: str | None = None
    max_tokens: int | None = None
    system: str | None = None

    def as_params(self) -> dict[str, Any]:
        """The defaults as recorded in the journal (a changed default changes the answers)."""
        return {"model": self.model, "max_tokens": self.max_tokens, "system": self.system}


@dataclass(frozen=True)
class BatchRequest:
    """One request of the batch: its id, its 1-based line number and the chat completion body."""

    custom_id: str
    line: int
    body: dict[str, Any]


@dataclass(frozen=True)
class LineProblem:
    """Why one input line cannot be run."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class InputScan:
    """What ``scan_input`` found: request count, problems, and the file's fingerprint."""

    path: Path
    requests: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    problem_count: int = 0
    bad_lines: set[int] = field(default_factory=set)
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def describe(self, limit: int = 20) -> str:
        """A human report: the first ``limit`` problems and how many more there are."""
        lines = [str(p) for p in self.problems[:limit]]
        if self.problem_count > limit:
            lines.append(f"... and {self.problem_count - limit} more")
        return "\n".join(lines)


class InputError(InvalidArgumentError):
    """A line of the input file is not a runnable chat request."""


def parse_line(raw: bytes, line: int, defaults: InputDefaults) -> BatchRequest | None:
    """The request on one input line, ``None`` for a blank line; ``InputError`` says what is wrong."""
    if not raw.strip():
        return None
    try:
        obj = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InputError(
                f"not valid UTF-8 (byte {raw[bad.start]:#04x} at column {bad.start + 1}); save the file as UTF-8"
            ) from None
        raise InputError(f"invalid JSON ({exc}); each line must be one JSON object") from None
    except RecursionError:
        raise InputError(
            f"JSON nested too deeply (more than {MAX_NESTING_HINT} levels); no chat request needs that: "
            "flatten the line"
        ) from None
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    custom_id = obj.get("custom_id", None)
    if custom_id is None:
        custom_id = str(line)
    elif not isinstance(custom_id, str) or not custom_id:
        raise InputError(f"custom_id must be a non-empty string, got {custom_id!r}")
    batch_api_form = "body" in obj or "url" in obj or "method" in obj
    body = _batch_api_body(obj) if batch_api_form else _short_form_body(obj)
    return BatchRequest(custom_id, line, _finish_body(body, defaults))


def _batch_api_body(obj: dict[str, Any]) -> dict[str, Any]:
    method = obj.get("method", "POST")
    if method != "POST":
        raise InputError(f'method must be "POST", got {method!r}')
    url = obj.get("url", CHAT_URL)
    if url != CHAT_URL:
        raise InputError(f'url must be "{CHAT_URL}" (only chat completions can be batched), got {url!r}')
    body = obj.get("body")
    if not isinstance(body, dict):
        raise InputError('"body" must be a JSON object holding the chat completion request')
    unknown = set(obj) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise InputError(f"unknown Batch API field(s) {sorted(unknown)}; request parameters go inside body")
    return dict(body)


def _short_form_body(obj: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in obj.items() if k != "custom_id"}
    prompt = body.pop("prompt", None)
    if prompt is not None:
        if "messages" in body:
            raise InputError('give either "messages" or "prompt", not both')
        if not isinstance(prompt, str) or not prompt:
            raise InputError('"prompt" must be a non-empty string')
        body["messages"] = [{"role": "user", "content": prompt}]
    elif "messages" not in body:
        raise InputError('no "messages" or "prompt": add one (or use the Batch API form with "body")')
    return body


def _finish_body(body: dict[str, Any], defaults: InputDefaults) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError('"messages" must be a non-empty list of message objects')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError(f'messages[{i}] must be an object with a "role"')
    client_only = [key for key in CLIENT_ONLY_KEYS if key in body]
    if client_only:
        raise InputError(
            f"{', '.join(repr(k) for k in client_only)} {'is an option' if len(client_only) == 1 else 'are options'} "
            "of the Python client, not a request parameter; remove it (the body is sent as the request "
            "body, exactly as Kimi's Batch API sends it)"
        )
    if "stream" in body and body["stream"] is not False:
        if body["stream"] is True:
            raise InputError('"stream": true is not supported in a batch; remove it')
        raise InputError(f'"stream" may only be false in a batch, got {body["stream"]!r}; remove it')
    if not body.get("model"):
        if defaults.model is None:
            raise InputError('no model: add "model" to the request or pass model= (the default for lines without one)')
        body["model"] = defaults.model
    elif not isinstance(body["model"], str):
        raise InputError(f'"model" must be a string, got {body["model"]!r}')
    if defaults.max_tokens is not None and "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = defaults.max_tokens
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f'"{key}" must be a positive integer, got {value!r}')
    if defaults.system is not None and not any(m.get("role") == "system" for m in messages):
        body["messages"] = [{"role": "system", "content": defaults.system}, *messages]
    return body


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            # Notepad and Excel's "CSV UTF-8" start the file with a byte-order mark: not part of the JSON.
            yield number, raw[len(UTF8_BOM):] if number == 1 and raw.startswith(UTF8_BOM) else raw


def scan_input(path: str | Path, defaults: InputDefaults = InputDefaults()) -> InputScan:
    """Validate the whole file in one streaming pass, keeping only ids; fingerprint it on the way.

    >>> scan = scan_input("tickets.jsonl", InputDefaults(model="moonshot-v1-8k"))
    >>> scan.ok, scan.requests, scan.describe()
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist or is not a file")
    scan = InputScan(path)
    digest = hashlib.sha256()
    seen: dict[str, int] = {}
    for number, raw in _read_lines(path):
        digest.update(raw)
        try:
            request = parse_line(raw, number, defaults)
        except InputError as exc:
            _problem(scan, number, str(exc))
            continue
        if request is None:
            continue
        first = seen.get(request.custom_id)
        if first is not None:
            _problem(scan, number, f"duplicate custom_id {request.custom_id!r} (first on line {first})")
            continue
        seen[request.custom_id] = number
        scan.requests += 1
    scan.fingerprint = f"sha256:{digest.hexdigest()}"
    return scan


def _problem(scan: InputScan, line: int, message: str) -> None:
    scan.problem_count += 1
    scan.bad_lines.add(line)
    if len(scan.problems) < MAX_REPORTED_PROBLEMS:
        scan.problems.append(LineProblem(line, message))


def iter_requests(
    path: str | Path, defaults: InputDefaults = InputDefaults(), *, skip_lines: set[int] | None = None
) -> Iterator[BatchRequest]:
    """Stream the requests of a file that ``scan_input`` passed (``skip_lines``: its ``bad_lines``)."""
    skip = skip_lines or set()
    for number, raw in _read_lines(Path(path)):
        if number in skip:
            continue
        request = parse_line(raw, number, defaults)
        if request is not None:
            yield request
