"""Structured answers in the simulator: Kimi's MFJS 400s, and JSON content that fits the schema.

Pure, no I/O. ``schema_error`` gives the 400 Kimi sends for a schema it rejects (docs/kimi-api.md
§2.7); ``json_answer`` writes the content for ``json_schema`` (a value conforming to the schema) or
``json_object`` (an object), deterministic from the request digest, with strings made from the
words of the last user message; ``json_pieces`` cuts it into token-sized pieces for streaming;
``faulty_content`` spoils an answer the way the answer faults (``ANSWER_FAULTS``) ask.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import msgspec

from kimiflow.core.mfjs import check_mfjs
from kimiflow.sim import errors

_MAX_DEPTH = 12
"""Past this depth only required fields, minimal arrays and non-recursive branches are generated."""
_FALLBACK_WORDS = ("kimiflow", "月之暗面", "report", "工单", "summary", "北京")
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]{1,4}|[A-Za-z0-9][A-Za-z0-9_\-']*")
_PIECE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|\w{1,6}|\s+|[^\w\s]", re.UNICODE)
_encode = msgspec.json.Encoder().encode
_raw_decoder = json.JSONDecoder()


def schema_error(schema: Any, where: str) -> errors.SimError | None:
    """Kimi's 400 for an invalid MFJS ``schema`` used as ``where`` (response_format or tools), or None."""
    problems = check_mfjs(schema)
    if not problems:
        return None
    first = problems[0]
    if where == "tools":
        if first.rule == "root-type":
            return errors.bad_request('tools.function.parameters.type is required and must be "object"')
        return errors.bad_request(
            f"tools.function.parameters is not a valid moonshot flavored json schema, details: <{first.message}>"
        )
    return errors.invalid_request(
        f"response_format.json_schema is not a valid moonshot flavored json schema, details: <{first.message}>"
    )


def prompt_words(messages: list[dict[str, Any]]) -> list[str]:
    """The words of the last user message (CJK in runs of up to 4 characters), for filling strings."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        words = _WORD.findall(str(content or ""))
        if words:
            return words
    return list(_FALLBACK_WORDS)


class _Generator:
    def __init__(self, root: dict[str, Any], words: list[str], digest: int) -> None:
        self.root = root
        self.defs = root.get("$defs") if isinstance(root.get("$defs"), dict) else {}
        self.words = words
        self.state = digest or 1

    def next(self) -> int:
        # xorshift64: a deterministic stream of choices from the request digest.
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        self.state = x
        return x

    def resolve(self, ref: str) -> Any:
        if ref == "#":
            return self.root
        if ref.startswith("#/$defs/") and isinstance(self.defs, dict):
            return self.defs.get(ref[len("#/$defs/") :], {})
        return {}

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > 3 * _MAX_DEPTH:
            return None
        if isinstance(schema.get("$ref"), str):
            return self.value(self.resolve(schema["$ref"]), depth + 1)
        branches = schema.get("anyOf")
        if isinstance(branches, list) and branches:
            if depth >= _MAX_DEPTH:
                simple = [b for b in branches if isinstance(b, dict) and b.get("type") not in ("object", "array")
                          and "$ref" not in b]  # fmt: skip
                branches = simple or branches
            return self.value(branches[self.next() % len(branches)], depth + 1)
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][self.next() % len(schema["enum"])]
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = kind[self.next() % len(kind)] if kind else None
        if kind == "object" or (kind is None and depth == 0):
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "integer":
            low, high = self.bounds(schema, 0, 100)
            return int(low + self.next() % (int(high) - int(low) + 1)) if high >= low else int(low)
        if kind == "number":
            low, high = self.bounds(schema, 0, 100)
            return round(low + (high - low) * (self.next() % 1000) / 1000, 2) if high > low else low
        if kind == "boolean":
            return self.next() % 2 == 0
        if kind == "null":
            return None
        return self.string(schema)

    @staticmethod
    def bounds(schema: dict[str, Any], low: float, high: float) -> tuple[float, float]:
        def number(key: str) -> float | None:
            value = schema.get(key, schema.get("exclusive" + key.capitalize()))
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        found_lo, found_hi = number("minimum"), number("maximum")
        lo = found_lo if found_lo is not None else (found_hi - 100 if found_hi is not None else low)
        hi = found_hi if found_hi is not None else lo + (100 if found_lo is not None else high - low)
        if "exclusiveMinimum" in schema and "minimum" not in schema:
            lo += 1 if schema.get("type") == "integer" else 0.01
        if "exclusiveMaximum" in schema and "maximum" not in schema:
            hi -= 1 if schema.get("type") == "integer" else 0.01
        if schema.get("type") == "integer":
            lo, hi = -(-lo // 1), hi // 1
        return lo, hi

    def string(self, schema: dict[str, Any]) -> str:
        hint = f"{schema.get('format', '')} {schema.get('description', '')}"
        if "date-time" in hint:
            return f"2026-{1 + self.next() % 12:02d}-{1 + self.next() % 28:02d}T09:30:00Z"
        if "format: date" in hint or schema.get("format") == "date":
            return f"2026-{1 + self.next() % 12:02d}-{1 + self.next() % 28:02d}"
        if "uuid" in hint:
            return str(uuid.UUID(int=self.next() << 64 | self.next(), version=4))
        if "email" in hint:
            return f"{self.words[self.next() % len(self.words)].lower()}@example.com"
        count = 1 + self.next() % 3
        text = " ".join(self.words[self.next() % len(self.words)] for _ in range(count))
        min_length = schema.get("minLength")
        max_length = schema.get("maxLength")
        guard = 0
        while isinstance(min_length, int) and len(text) < min_length and guard < 1000:
            guard += 1
            text += " " + self.words[self.next() % len(self.words)]
        if isinstance(max_length, int):
            text = text[:max_length]
        return text

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", max(low, 3))
        low = low if isinstance(low, int) else 0
        high = high if isinstance(high, int) else low + 3
        count = low if depth >= _MAX_DEPTH else min(max(low, 1 + self.next() % 3), high)
        items = schema.get("items", {"type": "string"})
        return [self.value(items, depth + 1) for _ in range(count)]

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or depth < _MAX_DEPTH:
                out[name] = self.value(sub, depth + 1)
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, dict) and depth < _MAX_DEPTH:
            for _ in range(1 + self.next() % 2):
                out[self.words[self.next() % len(self.words)]] = self.value(extra or {"type": "string"}, depth + 1)
        return out


def json_answer(response_format: dict[str, Any], messages: list[dict[str, Any]], digest: int) -> str:
    """The answer's content: JSON conforming to the json_schema, or an object for json_object."""
    words = prompt_words(messages)
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        return _encode(_Generator(schema, words, digest).value(schema, 0)).decode()
    schema = schema_in_prompt(messages)
    if schema is not None:
        # json_object follows the prompt: a schema described there is what a model would obey.
        return _encode(_Generator(schema, words, digest).value(schema, 0)).decode()
    generator = _Generator({}, words, digest)
    answer = " ".join(words[generator.next() % len(words)] for _ in range(3 + generator.next() % 5))
    return _encode({"answer": answer}).decode()


def schema_in_prompt(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A JSON schema (an object schema written after the word "schema") in a system message, if any."""
    for message in messages:
        content = message.get("content")
        if message.get("role") != "system" or not isinstance(content, str):
            continue
        at = content.find("schema")
        start = content.find("{", at) if at >= 0 else -1
        if start < 0:
            continue
        try:
            schema, _ = _raw_decoder.raw_decode(content, start)
        except ValueError:
            continue
        if isinstance(schema, dict) and schema.get("type") == "object":
            return schema
    return None


def json_pieces(text: str) -> tuple[list[str], list[bytes]]:
    """``text`` cut into token-sized pieces (one CJK character, a word of up to 6 letters, a symbol)."""
    pieces = _PIECE.findall(text)
    return pieces, [_encode(p) for p in pieces]


ANSWER_FAULTS: tuple[str, ...] = ("invalid-json", "schema-violation", "truncated-json", "empty-after-reasoning")
"""Faults that spoil the answer itself (a 200 with a bad structured answer), for re-ask tests:
``invalid-json`` wraps the content in a Markdown code fence; ``schema-violation`` gives the first
field of the object a value of the wrong JSON type (string <-> number; an empty object becomes
``[]``); ``truncated-json`` cuts the content in half with ``finish_reason: "length"``;
``empty-after-reasoning`` spends the whole budget (``max_tokens``, else 256) on reasoning_content
and answers nothing, with ``finish_reason: "length"``."""

EMPTY_AFTER_REASONING_TOKENS = 256


def _wrong_type(value: Any) -> Any:
    return 12345 if isinstance(value, str) else "not the expected type"


def faulty_content(fault: str, content: str) -> str:
    """``content`` spoiled as the ``invalid-json``, ``schema-violation`` or ``truncated-json`` fault asks."""
    if fault == "invalid-json":
        return "```json\n" + content + "\n```"
    if fault == "truncated-json":
        return content[: len(content) // 2]
    try:
        value = json.loads(content)
    except ValueError:
        return _encode([content]).decode()
    if isinstance(value, dict) and value:
        first = next(iter(value))
        value[first] = _wrong_type(value[first])
        return _encode(value).decode()
    return _encode([value] if not isinstance(value, dict) else []).decode()
