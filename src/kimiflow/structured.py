"""Structured answers as pure steps: the parse request, the validated answer, the re-ask messages.

No I/O: a client's ``parse()`` sends what ``build_parse_request`` returns, hands the answer to
``parse_answer`` and, on ``AnswerValidationError``, sends ``reask_messages`` (bounded by its own
retry count). Kept apart from the clients so every step is testable and reusable (batch, CLI).

>>> import msgspec
>>> class Ticket(msgspec.Struct):
...     title: str
...     priority: int
>>> request = build_parse_request("kimi-k2.6", [{"role": "user", "content": "file it"}], Ticket)
>>> request.response_format["type"], request.response_format["json_schema"]["name"]
('json_schema', 'Ticket')
>>> parse_answer(Ticket, {"content": '{"title": "t", "priority": 2}'}, "stop")
Ticket(title='t', priority=2)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from kimiflow.core.errors import InvalidArgumentError, KimiflowError
from kimiflow.core.loops import DEFAULT_MAX_VALIDATION_RETRIES as DEFAULT_MAX_VALIDATION_RETRIES
from kimiflow.core.loops import StructuredMode as StructuredMode
from kimiflow.types.chat import Usage

if TYPE_CHECKING:
    from kimiflow.core.jsonvalidate import CompiledSchema

STRUCTURED_MODES: tuple[tuple[str, StructuredMode], ...] = (
    ("moonshot-v1-", "json_schema"),
    ("kimi-k2", "json_schema"),
    ("kimi-k3", "json_schema"),
)
"""Model-id prefixes and the response_format each accepts (docs/kimi-api.md §2.7); the first match
wins and any other model gets ``json_object`` with the schema in the system prompt. Data, so a
caller can pass its own table when Kimi's support changes."""


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")
# Validator messages that quote the answer itself: cut to their rule for exception text and logs.
_QUOTES_ANSWER = re.compile(r"(Invalid enum value|unknown field)\b.*", re.IGNORECASE)


@dataclass(frozen=True)
class FieldError:
    """One validation error: where in the answer (a JSON path such as ``$.items[2].price``) and what."""

    path: str
    message: str


def redacted_message(message: str) -> str:
    """A validation message without the parts that quote the answer (enum values, unknown keys).

    >>> redacted_message("Invalid enum value 'secret'")
    'Invalid enum value'
    """
    return _QUOTES_ANSWER.sub(lambda m: m.group(1), message)


class StructuredAnswerError(KimiflowError):
    """No valid structured answer came back. ``usage`` is the total over every attempt (re-asks
    included) and ``completions`` each attempt's completion, when a client's ``parse()`` raised it."""

    usage: Usage | None
    completions: list[Any]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.usage = None
        self.completions = []


class AnswerValidationError(StructuredAnswerError, ValueError):
    """The answer is not valid JSON or does not match the type; ``errors`` lists them by JSON path.

    The message names paths and rules only; the answer itself is in ``content``, never in the text.
    """

    def __init__(self, type_name: str, errors: list[FieldError], content: str | None) -> None:
        shown = "; ".join(f"{e.path}: {redacted_message(e.message)}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"the answer does not match {type_name}: {shown}{more}")
        self.errors = errors
        self.content = content


class TruncatedAnswerError(StructuredAnswerError):
    """The answer stopped at ``max_tokens`` (``finish_reason: "length"``) before the JSON was complete.

    ``completion`` is the raw truncated completion when a client's ``parse()`` raised it.
    """

    def __init__(self, message: str, content: str | None, reasoning_content: str | None) -> None:
        super().__init__(message)
        self.content = content
        self.reasoning_content = reasoning_content
        self.completion: Any = None


class AnswerBudgetExceededError(StructuredAnswerError):
    """``parse()``'s ``token_budget`` was spent before a valid answer came; ``last_error`` says why
    the last answer was rejected."""

    def __init__(self, message: str, last_error: AnswerValidationError) -> None:
        super().__init__(message)
        self.last_error = last_error


@dataclass(frozen=True)
class ParseRequest:
    """What to send for a structured answer: the messages and response_format, and how they were chosen."""

    model: str
    messages: list[dict[str, Any]]
    response_format: dict[str, Any]
    mode: StructuredMode
    schema: dict[str, Any]
    name: str
    target: Any = field(repr=False)

    def as_params(self) -> dict[str, Any]:
        """The request parameters (``model``, ``messages``, ``response_format``) as a plain dict."""
        return {"model": self.model, "messages": self.messages, "response_format": self.response_format}


def structured_mode(model: str, modes: Sequence[tuple[str, StructuredMode]] = STRUCTURED_MODES) -> StructuredMode:
    """The response_format ``model`` accepts, by the first matching prefix in ``modes``.

    >>> structured_mode("kimi-k2.6"), structured_mode("kimi-latest")
    ('json_schema', 'json_object')
    """
    for prefix, mode in modes:
        if model.startswith(prefix):
            return mode
    return "json_object"


def _type_name(target: Any) -> str:
    if isinstance(target, Mapping):
        title = target.get("title")
        return title if isinstance(title, str) and title else "answer"
    return str(getattr(target, "__name__", None) or "answer")


def schema_prompt(schema: Mapping[str, Any]) -> str:
    """The system prompt that carries the schema when the model only has ``json_object``."""
    return (
        "Reply with one JSON object only: no prose, no code fences. "
        "It must conform to this JSON schema:\n" + json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    )


def build_parse_request(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    target: Any,
    *,
    mode: StructuredMode | None = None,
    name: str | None = None,
    modes: Sequence[tuple[str, StructuredMode]] = STRUCTURED_MODES,
) -> ParseRequest:
    """The request for a ``target``-typed answer (see ``kimiflow.core.schema.json_schema_of`` for types).

    ``json_schema`` mode sends the MFJS schema as ``response_format``; ``json_object`` mode sends
    ``{"type": "json_object"}`` and adds a system message with the schema after the leading system
    messages. The input messages are not changed.
    """
    if not model:
        raise InvalidArgumentError("model is required for a structured answer, e.g. model='kimi-k2.6'")
    if not messages:
        raise InvalidArgumentError("messages must not be empty: say what the JSON answer should contain")
    if messages[-1].get("partial"):
        raise InvalidArgumentError(
            "Partial Mode cannot be combined with a structured answer (Kimi rejects it); "
            "remove partial from the last message"
        )
    chosen = mode or structured_mode(model, modes)
    if chosen not in ("json_schema", "json_object"):
        raise InvalidArgumentError(f"mode must be 'json_schema' or 'json_object', got {chosen!r}")
    # Imported here: the normaliser is the heaviest import of the package and only parse() needs it.
    from kimiflow.core.schema import to_mfjs

    schema = to_mfjs(target)
    if isinstance(target, Mapping):
        _compiled(target)  # a schema our validator cannot use is refused before a request is paid for
    schema_name = _NAME_CHARS.sub("_", name or _type_name(target))[:64] or "answer"
    out = [dict(m) for m in messages]
    if chosen == "json_schema":
        response_format: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "strict": True, "schema": schema},
        }
    else:
        response_format = {"type": "json_object"}
        lead = 0
        while lead < len(out) and out[lead].get("role") == "system":
            lead += 1
        out.insert(lead, {"role": "system", "content": schema_prompt(schema)})
    return ParseRequest(model, out, response_format, chosen, schema, schema_name, target)


def _pydantic_model(target: Any) -> Any:
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(target, type) and issubclass(target, pydantic.BaseModel):
        return pydantic
    return None


def _json_path(loc: Sequence[Any]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


_COMPILED: dict[str, CompiledSchema] = {}
_COMPILED_MAX = 64


def _compiled(schema: Mapping[str, Any]) -> CompiledSchema:
    """The compiled validator of ``schema``, kept by its canonical JSON text: each re-ask and each batch
    line with the same schema reuses it, and a schema changed in place gets compiled afresh."""
    from kimiflow.core.jsonvalidate import compile_schema

    try:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"the schema dict is not plain JSON ({exc}); use only dicts, lists, strings, "
                                   "numbers, booleans and null") from None  # fmt: skip
    found = _COMPILED.get(key)
    if found is None:
        found = compile_schema(schema)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = found
    return found


def validate_answer(target: Any, content: str | None) -> Any:
    """``content`` decoded and validated against ``target`` (the original type, with every constraint).

    A schema dict must decode to a JSON object that conforms to that schema, the user's own (not the
    MFJS one sent to Kimi), checked by ``kimiflow.core.jsonvalidate`` with every error listed.
    Raises ``AnswerValidationError`` with the errors by JSON path.
    """
    name = _type_name(target)
    if content is None or not content.strip():
        raise AnswerValidationError(name, [FieldError("$", "the answer is empty")], content)
    pydantic = _pydantic_model(target)
    if pydantic is not None:
        try:
            return target.model_validate_json(content)
        except pydantic.ValidationError as exc:
            errors = [
                FieldError(_json_path(e["loc"]), "not valid JSON" if e["type"] == "json_invalid" else e["msg"])
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise AnswerValidationError(name, errors, content) from None
    try:
        if isinstance(target, Mapping):
            validator = _compiled(target)  # a schema kimiflow cannot use is the caller's error, raised first
            value = msgspec.json.decode(content)
            if not isinstance(value, dict):
                raise msgspec.ValidationError(f"Expected `object`, got `{type(value).__name__}`")
            issues = validator.errors(value)
            if issues:
                raise AnswerValidationError(name, [FieldError(i.path, i.message) for i in issues], content)
            return value
        return msgspec.json.decode(content, type=target)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _MSGSPEC_PATH.search(text)
        path = match.group(1) if match else "$"
        message = text[: match.start()] if match else text
        raise AnswerValidationError(name, [FieldError(path, message)], content) from None
    except msgspec.DecodeError as exc:
        raise AnswerValidationError(name, [FieldError("$", f"not valid JSON ({exc})")], content) from None


def parse_answer(target: Any, message: Mapping[str, Any], finish_reason: str | None) -> Any:
    """The validated ``target`` from an answer's message, or a typed error saying why there is none.

    ``finish_reason: "length"`` is a ``TruncatedAnswerError`` (never a JSON error): the fix is a
    larger ``max_tokens``, not a re-ask.
    """
    content = message.get("content")
    reasoning = message.get("reasoning_content")
    if finish_reason == "length":
        if not content and reasoning:
            hint = ("the thinking model spent the whole max_tokens budget on reasoning_content and wrote no "
                    "answer; raise max_tokens or turn thinking off")  # fmt: skip
        else:
            hint = "the answer was cut off at max_tokens before the JSON was complete; raise max_tokens"
        raise TruncatedAnswerError(f"no structured answer (finish_reason 'length'): {hint}", content, reasoning)
    return validate_answer(target, content)


def reask_messages(
    messages: Sequence[Mapping[str, Any]], answer: Mapping[str, Any], error: AnswerValidationError
) -> list[dict[str, Any]]:
    """The conversation for the next attempt: the invalid answer as given, then what was wrong with it.

    The assistant message keeps its ``reasoning_content`` (thinking models require it back); the
    user message lists the validation errors by JSON path. The input messages are not changed.
    """
    assistant: dict[str, Any] = {"role": "assistant", "content": answer.get("content") or ""}
    if answer.get("reasoning_content") is not None:
        assistant["reasoning_content"] = answer["reasoning_content"]
    problems = "\n".join(f"- {e.path}: {e.message}" for e in error.errors)
    correction = {
        "role": "user",
        "content": "Your previous answer does not match the required JSON schema:\n"
        f"{problems}\nReply again with the corrected JSON object only.",
    }
    return [*(dict(m) for m in messages), assistant, correction]
