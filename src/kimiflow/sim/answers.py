"""Scripted answers: a JSONL file that pins what the simulator replies to given requests.

``kimiflow sim --answers FILE`` or ``SimConfig(answers=AnswerScript.load("FILE"))``. One JSON object a line; blank
lines are skipped. The simplest line::

    {"match": "退货政策", "reply": "七天无理由退货。"}

answers "七天无理由退货。" whenever the last user message contains "退货政策". Lines are tried in
order and the first whose conditions all hold wins; a request no line matches gets generated text.

Conditions (at least one; all given must hold; ``"match": ""`` matches every request):

- ``match``: a substring of the last user message;
- ``regex``: a Python regular expression searched in the last user message;
- ``model``: the request's model id, exactly;
- ``match_system``: a substring of the system message(s);
- ``request``: an object matched as a subset of the request body: every key it names must be in
  the body with a matching value: objects recursively as subsets; a list when its items match
  items of the body's list in the same order (others may lie between); other values equal. E.g.
  ``{"temperature": 0.3}``, or ``{"messages": [{"role": "tool"}]}`` for the turn after a tool result
  (put that line before the one that makes the tool call: the last user message is still the same).

Reply (at least one of ``reply``, ``tool_calls``, ``error``, ``fault``):

- ``reply``: the content text; ``reasoning``: the ``reasoning_content`` (sent by thinking models
  only, like Kimi);
- ``tool_calls``: ``[{"name": "get_weather", "arguments": {"city": "北京"}}]`` (``arguments`` an
  object or its JSON text; ``id`` optional, Kimi's ``name:index`` by default), finish reason
  ``tool_calls``;
- ``error``: ``{"status": 400, "type": "invalid_request_error", "message": "..."}`` answered
  instead (alone: it excludes the other reply keys);
- ``fault``: a fault as in the ``X-Kimiflow-Sim-Fault`` header, e.g. ``"cut;after=3"`` or
  ``"500"``; a fault header on the request itself takes precedence.

Replies in turn (``replies``) and a bound (``times``):

- ``replies``: a list answered in turn, one item per request the line matches: the first matching
  request gets ``replies[0]``, the next ``replies[1]``, and after the last the last one repeats.
  Each item is a reply text or an object with the reply keys above, e.g. "first a tool call, then a
  final answer"::

      {"match": "天气", "replies": [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "北京"}}]},
                                   "北京今天晴，25°C。"]}

  ``replies`` replaces the reply keys on its line (give one or the other).
- ``times``: the line answers at most this many matching requests; after that it no longer
  matches, so the next matching line (or generated text) is the fallback. "Fail twice then
  succeed"::

      {"match": "退货", "error": {"status": 500, "type": "server_error", "message": "scripted"}, "times": 2}
      {"match": "退货", "reply": "七天无理由退货。"}

  With ``replies``, ``times`` must be at least the number of replies (the last repeats until then).

Turns are counted per simulator across all keys and connections, in the order requests arrive
(a request counts when it matches, whatever it is then answered with). ``POST /_sim/answers/reset``
(or ``SimState.reset_answers()``) starts every line from its first reply again, e.g. before each
test of a suite that shares one ``kimiflow sim``.

``comment`` is ignored; a line holding only a comment is skipped. Token counts come from the simulator's estimator, so usage, ``max_tokens``
(truncation with ``finish_reason: "length"``), ``stop``, billing and rate limits treat a scripted
reply like a generated one, and a stream sends it in about one chunk per token; the
``X-Kimiflow-Sim-Tokens`` header does not lengthen a scripted reply.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.tokens import estimate_text_tokens
from kimiflow.sim import errors
from kimiflow.sim.completion import ChoicePlan, ToolCallPlan
from kimiflow.sim.config import FAULT_NAMES, ScriptedAnswers
from kimiflow.sim.errors import SimError
from kimiflow.sim.faults import FAULT_HEADER, Fault, status_fault_error
from kimiflow.sim.http import json_response
from kimiflow.sim.state import SimState
from kimiflow.sim.textgen import cut_at_stop
from kimiflow.sim.validation import ChatRequest

CONDITION_KEYS = ("match", "regex", "model", "match_system", "request")
REPLY_KEYS = ("reply", "reasoning", "tool_calls", "error", "fault")
_KNOWN_KEYS = frozenset((*CONDITION_KEYS, *REPLY_KEYS, "replies", "times", "comment"))
_STEP_KEYS = frozenset((*REPLY_KEYS, "comment"))
RESET_PATH = "/_sim/answers/reset"
_ARG_FRAGMENT_CHARS = 8
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_encode = msgspec.json.Encoder().encode


class AnswerScriptError(InvalidArgumentError):
    """A scripted-answers file that cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class ScriptedToolCall:
    """One tool call a scripted answer makes."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class ScriptedReply:
    """What one scripted turn answers: text, reasoning and tool calls, or an error, with a fault."""

    reply: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    error: SimError | None = None
    fault: Fault | None = None

    def plans(self, req: ChatRequest) -> list[ChoicePlan]:
        """The ``n`` choices this answer gives ``req``, cut by ``max_tokens`` and ``stop`` like generated text."""
        return [self._plan(req, index) for index in range(req.n)]

    def _plan(self, req: ChatRequest, index: int) -> ChoicePlan:
        plan = ChoicePlan(index)
        cap = req.max_tokens
        reasoning = _token_pieces(self.reasoning or "") if req.model.reasoning else []
        if cap is not None and len(reasoning) > cap:
            plan.reasoning, plan.reasoning_encoded = _with_encoded(reasoning[:cap])
            plan.finish_reason = "length"
            return plan
        plan.reasoning, plan.reasoning_encoded = _with_encoded(reasoning)
        room = None if cap is None else cap - len(reasoning)
        content = _token_pieces(self.reply or "")
        if room is not None and len(content) > room:
            content = content[:room]
            plan.finish_reason = "length"
        pieces, encoded = _with_encoded(content)
        stopped, plan.content, plan.content_encoded = cut_at_stop(pieces, encoded, req.stop)
        if stopped:
            plan.finish_reason = "stop"
            return plan
        if self.tool_calls and plan.finish_reason != "length":
            calls = [_tool_call_plan(call, i) for i, call in enumerate(self.tool_calls)]
            if room is None or len(content) + sum(1 + len(c.fragments) for c in calls) <= room:
                plan.tool_calls = calls
                plan.finish_reason = "tool_calls"
            else:
                plan.finish_reason = "length"
        return plan


@dataclass(frozen=True)
class ScriptedAnswer:
    """One line of a script: its conditions, its replies in turn and how many requests it answers."""

    line: int
    replies: tuple[ScriptedReply, ...]
    match: str | None = None
    regex: re.Pattern[str] | None = None
    model: str | None = None
    match_system: str | None = None
    request: Mapping[str, Any] | None = None
    times: int | None = None

    def matches(self, req: ChatRequest, body: Mapping[str, Any], user_text: str, system_text: str) -> bool:
        """Whether every condition of this line holds for the request."""
        if self.model is not None and req.model.id != self.model:
            return False
        if self.match is not None and self.match not in user_text:
            return False
        if self.match_system is not None and self.match_system not in system_text:
            return False
        if self.regex is not None and self.regex.search(user_text) is None:
            return False
        return self.request is None or _is_subset(self.request, body)

    def turn(self, used: int) -> ScriptedReply:
        """The reply for the line's ``used + 1``-th matching request: in turn, then the last one again."""
        return self.replies[min(used, len(self.replies) - 1)]


def _is_subset(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, Mapping):
        return isinstance(value, Mapping) and all(
            key in value and _is_subset(sub, value[key]) for key, sub in pattern.items()
        )
    if isinstance(pattern, list):
        if not isinstance(value, list):
            return False
        # In order, not necessarily adjacent: [{"role": "tool"}] holds for any conversation with a
        # tool result, which is how a script answers the turn after its own tool call.
        items = iter(value)
        return all(any(_is_subset(p, v) for v in items) for p in pattern)
    if isinstance(pattern, bool) or isinstance(value, bool):
        # bool is an int in Python: true must not match 1.
        return type(pattern) is type(value) and pattern == value
    if isinstance(pattern, int | float) and isinstance(value, int | float):
        return pattern == value
    return type(pattern) is type(value) and bool(pattern == value)


def _token_pieces(text: str) -> list[str]:
    """``text`` in as many contiguous pieces as the estimator counts tokens (at most one per character).

    Splits fall on character boundaries at even spacing: a stream then carries the reply in about
    one chunk per token, and the pieces always join back to exactly ``text``.
    """
    if not text:
        return []
    count = max(1, min(len(text), estimate_text_tokens(text)))
    bounds = [math.floor(i * len(text) / count) for i in range(count + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(count)]


def _with_encoded(pieces: list[str]) -> tuple[list[str], list[bytes]]:
    return pieces, [_encode(piece) for piece in pieces]


def _tool_call_plan(call: ScriptedToolCall, index: int) -> ToolCallPlan:
    fragments = [call.arguments[i : i + _ARG_FRAGMENT_CHARS] for i in range(0, len(call.arguments), _ARG_FRAGMENT_CHARS)]
    return ToolCallPlan(index, call.id or f"{call.name}:{index}", "function", call.name, call.arguments, fragments)


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "" if content is None else str(content)


class AnswerScript:
    """The scripted answers of one simulator, tried in order.

    >>> script = AnswerScript.from_records([{"match": "退货政策", "reply": "七天无理由退货。"}])
    >>> SimConfig(answers=script)            # or AnswerScript.load("answers.jsonl")
    """

    def __init__(self, answers: Sequence[ScriptedAnswer], source: str = "<answers>") -> None:
        self.answers = tuple(answers)
        self.source = source

    def __len__(self) -> int:
        return len(self.answers)

    def __repr__(self) -> str:
        return f"AnswerScript({self.source!r}, {len(self.answers)} answers)"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnswerScript:
        """Read a JSONL script; ``AnswerScriptError`` naming the file and line when it is unusable."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AnswerScriptError(f"answers file {str(file)!r} does not exist; check the path") from None
        except UnicodeDecodeError:
            raise AnswerScriptError(f"answers file {str(file)!r} is not UTF-8 text; save it as UTF-8 JSONL") from None
        except OSError as exc:
            raise AnswerScriptError(f"cannot read answers file {str(file)!r}: {exc.strerror or exc}") from None
        return cls.from_lines(text.splitlines(), source=str(file))

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "<answers>") -> AnswerScript:
        """Parse JSONL lines (blank ones skipped)."""
        answers = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise AnswerScriptError(
                    f"{source} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    'each line must be one object like {"match": "退货政策", "reply": "七天无理由退货。"}'
                ) from None
            if isinstance(record, dict) and set(record) == {"comment"}:
                continue
            answers.append(parse_answer(record, number, source))
        return cls(answers, source)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], source: str = "<answers>") -> AnswerScript:
        """Build a script from already-parsed objects (numbered from 1 in error messages)."""
        return cls([parse_answer(record, i, source) for i, record in enumerate(records, start=1)], source)

    def find(self, req: ChatRequest, body: Mapping[str, Any], used: MutableMapping[int, int]) -> ScriptedReply | None:
        """The reply of the first line whose conditions hold for this request and its raw body.

        ``used`` counts the requests each line (by index) has answered, for ``replies`` and
        ``times``; the caller owns it (one per simulator) and this call advances it.
        """
        user_text = ""
        for message in reversed(req.messages):
            if message.get("role") == "user":
                user_text = _message_text(message)
                break
        system_text = "\n".join(_message_text(m) for m in req.messages if m.get("role") == "system")
        for index, answer in enumerate(self.answers):
            count = used.get(index, 0)
            if answer.times is not None and count >= answer.times:
                continue
            if answer.matches(req, body, user_text, system_text):
                used[index] = count + 1
                return answer.turn(count)
        return None


def _fail(source: str, line: int, problem: str) -> AnswerScriptError:
    return AnswerScriptError(f"{source} line {line}: {problem}")


def _string_field(record: Mapping[str, Any], key: str, source: str, line: int) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(source, line, f'"{key}" must be a string, got {type(value).__name__}')
    return value


def _parse_tool_calls(value: Any, source: str, line: int) -> tuple[ScriptedToolCall, ...]:
    example = 'e.g. "tool_calls": [{"name": "get_weather", "arguments": {"city": "北京"}}]'
    if not isinstance(value, list) or not value:
        raise _fail(source, line, f'"tool_calls" must be a non-empty list, {example}')
    calls = []
    for i, item in enumerate(value):
        where = f"tool_calls[{i}]"
        if not isinstance(item, dict):
            raise _fail(source, line, f"{where} must be an object, {example}")
        unknown = sorted(set(item) - {"name", "arguments", "id"})
        if unknown:
            raise _fail(source, line, f"{where} has unknown key {unknown[0]!r}; use name, arguments and id")
        name = item.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _fail(source, line, f"{where} needs a function name (letters, digits, _ or -), got {name!r}")
        arguments = item.get("arguments", {})
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                raise _fail(source, line, f"{where}.arguments as a string must be the JSON text of an object")
            text = arguments
        elif isinstance(arguments, dict):
            text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        else:
            raise _fail(source, line, f"{where}.arguments must be an object or its JSON text")
        call_id = item.get("id")
        if call_id is not None and (not isinstance(call_id, str) or not call_id):
            raise _fail(source, line, f"{where}.id must be a non-empty string")
        calls.append(ScriptedToolCall(name, text, call_id))
    return tuple(calls)


def _parse_error(value: Any, source: str, line: int) -> SimError:
    example = '{"status": 400, "type": "invalid_request_error", "message": "..."}'
    if not isinstance(value, dict):
        raise _fail(source, line, f'"error" must be an object like {example}')
    unknown = sorted(set(value) - {"status", "type", "message"})
    if unknown:
        raise _fail(source, line, f'"error" has unknown key {unknown[0]!r}; use status, type and message')
    status = value.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise _fail(source, line, f'"error.status" must be an HTTP error status from 400 to 599, got {status!r}')
    kind = value.get("type")
    message = value.get("message")
    if not isinstance(kind, str) or not kind or not isinstance(message, str):
        raise _fail(source, line, f'"error" needs a non-empty string "type" and a string "message", like {example}')
    return SimError(status, kind, message)


def _parse_fault(value: Any, source: str, line: int) -> Fault:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, line, '"fault" must be a fault name with optional parameters, e.g. "cut;after=3"')
    name = value.split(";", 1)[0].strip()
    if name not in FAULT_NAMES:
        raise _fail(source, line, f"unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}")
    try:
        fault = Fault.parse(value)
    except SimError as exc:
        problem = exc.message.removeprefix("Invalid request: ").replace(f"in {FAULT_HEADER}", 'in "fault"')
        raise _fail(source, line, problem) from None
    if fault.times is not None:
        raise _fail(source, line, '"fault" in a script applies to every request its line answers; drop "times" '
                                  'from the fault and bound the line with "times": N instead')
    return fault


def parse_answer(record: Any, line: int, source: str = "<answers>") -> ScriptedAnswer:
    """One script line, validated; ``AnswerScriptError`` saying what is wrong and how to fix it."""
    if not isinstance(record, dict):
        raise _fail(source, line, f'must be a JSON object like {{"match": "退货政策", "reply": "七天无理由退货。"}}, '
                                  f"got {type(record).__name__}")
    unknown = sorted(set(record) - _KNOWN_KEYS)
    if unknown:
        raise _fail(source, line, f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_KNOWN_KEYS))}")
    if not any(record.get(key) is not None for key in CONDITION_KEYS):
        raise _fail(source, line, f"give at least one condition ({', '.join(CONDITION_KEYS)}); "
                                  '"match": "" answers every request')
    replies = _parse_replies(record, source, line)
    times = _parse_times(record.get("times"), len(replies), source, line)
    pattern = _string_field(record, "regex", source, line)
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise _fail(source, line, f'"regex" {pattern!r} is not a valid regular expression: {exc}') from None
    request = record.get("request")
    if request is not None and not isinstance(request, dict):
        raise _fail(source, line, '"request" must be an object matched against the request body, '
                                  'e.g. {"temperature": 0.3}')
    return ScriptedAnswer(
        line=line,
        replies=replies,
        match=_string_field(record, "match", source, line),
        regex=regex,
        model=_string_field(record, "model", source, line),
        match_system=_string_field(record, "match_system", source, line),
        request=request,
        times=times,
    )


def _parse_replies(record: Mapping[str, Any], source: str, line: int) -> tuple[ScriptedReply, ...]:
    """The line's replies in turn: its ``replies`` list, or the one reply its own keys give."""
    steps = record.get("replies")
    if steps is None:
        return (_parse_reply(record, source, line, ""),)
    given = [key for key in REPLY_KEYS if record.get(key) is not None]
    if given:
        raise _fail(source, line, f'give either "replies" or "{given[0]}" on a line, not both; '
                                  f'put "{given[0]}" inside one of the replies')
    example = '"replies": [{"tool_calls": [{"name": "get_weather"}]}, "晴，25°C。"]'
    if not isinstance(steps, list) or not steps:
        raise _fail(source, line, f'"replies" must be a non-empty list of reply texts or objects, e.g. {example}')
    parsed = []
    for i, step in enumerate(steps):
        where = f"replies[{i}]"
        if isinstance(step, str):
            parsed.append(ScriptedReply(reply=step))
            continue
        if not isinstance(step, dict):
            raise _fail(source, line, f"{where} must be a reply text or an object with "
                                      f"{', '.join(REPLY_KEYS)}, got {type(step).__name__}")
        unknown = sorted(set(step) - _STEP_KEYS)
        if unknown:
            hint = " (conditions and times belong to the line, not to one reply)" if unknown[0] in _KNOWN_KEYS else ""
            raise _fail(source, line, f"{where} has unknown key {unknown[0]!r}{hint}; "
                                      f"a reply takes {', '.join(REPLY_KEYS)}")
        parsed.append(_parse_reply(step, source, line, f"{where}: "))
    return tuple(parsed)


def _parse_reply(record: Mapping[str, Any], source: str, line: int, where: str) -> ScriptedReply:
    """One reply (a line's own reply keys, or one item of its ``replies``), validated."""
    if not any(record.get(key) is not None for key in ("reply", "tool_calls", "error", "fault")):
        raise _fail(source, line, f'{where}give what to answer: "reply", "tool_calls", "error" or "fault"'
                                  + ("" if where else ', or "replies" in turn'))
    if record.get("error") is not None and any(
        record.get(key) is not None for key in ("reply", "reasoning", "tool_calls", "fault")
    ):
        fix = "to another reply" if where else "to another line"
        raise _fail(source, line, f'{where}"error" answers alone; move reply, reasoning, tool_calls or fault {fix}')
    try:
        tool_calls = record.get("tool_calls")
        error = record.get("error")
        fault = record.get("fault")
        return ScriptedReply(
            reply=_string_field(record, "reply", source, line),
            reasoning=_string_field(record, "reasoning", source, line),
            tool_calls=_parse_tool_calls(tool_calls, source, line) if tool_calls is not None else (),
            error=_parse_error(error, source, line) if error is not None else None,
            fault=_parse_fault(fault, source, line) if fault is not None else None,
        )
    except AnswerScriptError as exc:
        if not where:
            raise
        prefix = f"{source} line {line}: "
        raise AnswerScriptError(prefix + where + str(exc).removeprefix(prefix)) from None


def _parse_times(value: Any, replies: int, source: str, line: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(source, line, f'"times" must be a whole number of requests, 1 or more, got {value!r}; '
                                  'drop it to answer every matching request')
    if value < replies:
        raise _fail(source, line, f'"times" is {value} but the line has {replies} replies, so the last '
                                  f"{replies - value} would never be sent; raise times to {replies} or drop those replies")
    return value


def find_answer(
    script: ScriptedAnswers, req: ChatRequest, body: Mapping[str, Any], used: MutableMapping[int, int]
) -> ScriptedReply | None:
    """The reply ``script`` gives this request (advancing ``used``), or ``None`` (generated text)."""
    found = script.find(req, body, used)
    if found is None or isinstance(found, ScriptedReply):
        return found
    raise TypeError(f"{type(script).__name__}.find must return a ScriptedReply or None, got {type(found).__name__}")


def scripted_fault(answer: ScriptedReply, fault: Fault | None, key: str, quoted_rpm: int) -> Fault | None:
    """The fault a request gets once ``answer`` matched it: the header's first, else the script's.

    Raises the answer's scripted error, or the error a scripted status fault answers with.
    """
    if answer.error is not None:
        raise SimError(answer.error.status, answer.error.type, answer.error.message)
    if fault is not None or answer.fault is None:
        return fault
    error = status_fault_error(answer.fault, key, quoted_rpm)
    if error is not None:
        raise error
    return answer.fault


def reset_answers(state: SimState, request: web.BaseRequest) -> web.Response:
    """``POST /_sim/answers/reset``: every line starts again from its first reply and its full ``times``."""
    if request.method != "POST":
        raise errors.method_not_allowed(request.method, RESET_PATH)
    lines = state.reset_answers()
    return json_response(200, _encode({"reset": True, "lines_restarted": lines}), request)
