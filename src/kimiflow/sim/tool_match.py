"""Which declared tools the simulated model calls, and with what arguments (issue 14).

Pure, no I/O, deterministic. A tool's vocabulary is the words of its name (split at ``_``, ``-`` and
camelCase), its description and its parameter names and descriptions; Chinese text contributes its
character pairs, so "天气" in a description meets "北京天气怎么样" in the prompt. A tool scores two
points per name word or Chinese pair and one per other word found in the last user message, plus
``NAMED_BONUS`` when
the message spells the tool's full name (so a prompt naming the function still matches best). Every
tool scoring at least ``CALL_THRESHOLD`` is called, in declaration order: several tools matching one
question are parallel calls, as Kimi makes them.

Arguments come from the parameter schema (``structured._Generator``, so they are valid for it), with
string fields filled from the prompt's words that are not the tool's own vocabulary: "What's the
weather in Beijing?" gives ``get_weather`` the city ``"Beijing"``.

>>> from kimiflow.sim.validation import ToolSpec
>>> weather = ToolSpec("get_weather", False, {"type": "object", "properties": {"city": {"type": "string"}}},
...                    "Current weather of a city")
>>> [t.name for t in matching_tools([weather], "What's the weather in Beijing?")]
['get_weather']
>>> tool_arguments(weather, "What's the weather in Beijing?", 7)
{'city': 'Beijing'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kimiflow.sim.structured import _Generator
from kimiflow.sim.validation import ToolSpec

CALL_THRESHOLD = 2
"""The score a tool needs to be called under ``tool_choice: "auto"``: one name word or two other words."""
NAMED_BONUS = 100
"""Added when the message contains the tool's full name, so naming a function always wins."""
_NAME_WEIGHT = 2
_ASCII = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PROMPT_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[A-Za-z0-9][A-Za-z0-9\-]*")
_STOP_WORDS = frozenset(
    (  # noqa: SIM905 - prose is the readable form of a word list
        "a an and are as at be by can could do does for from get give has have how i in is it its me my of on or "
        "like please set show tell that the their this to tool use using was what whats when where which who why "
        "will with would you your call function fetch return returns current now today"
    ).split()
)
_CJK_STOP = frozenset("的了吗呢吧啊是和与请我你他她它们吗？")
"""Particles and pronouns: never part of a matching pair or of an argument."""
_CJK_STOP_PAIRS = frozenset(
    {"今天", "现在", "怎么", "么样", "什么", "一下", "如何", "查询", "告诉", "帮我", "一个", "这个", "那个"}
)
"""Function phrases: they say how the user asks, not what about."""
_WEB_SEARCH_WORDS = frozenset({"web_search", "搜索", "联网", "上网"})


def _words(text: str) -> set[str]:
    """Lower-case ASCII words (no stop words) and the character pairs of each Chinese run."""
    spaced = _CAMEL.sub(" ", text).replace("_", " ").replace("-", " ").lower()
    found = {w for w in _ASCII.findall(spaced) if len(w) > 1 and w not in _STOP_WORDS}
    for run in _CJK.findall(text):
        if len(run) == 1:
            found.add(run)
        found.update(
            pair
            for pair in (run[i : i + 2] for i in range(len(run) - 1))
            if _CJK_STOP.isdisjoint(pair) and pair not in _CJK_STOP_PAIRS
        )
    return found


def _schema_text(schema: Any, depth: int = 0) -> Iterable[str]:
    if not isinstance(schema, dict) or depth > 4:
        return
    if isinstance(schema.get("description"), str):
        yield schema["description"]
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            yield str(name)
            yield from _schema_text(sub, depth + 1)
    yield from _schema_text(schema.get("items"), depth + 1)


def tool_vocabulary(tool: ToolSpec) -> tuple[set[str], set[str]]:
    """(name words, other words) of ``tool``: description, parameter names and their descriptions."""
    name_words = _words(tool.name)
    other = _words(" ".join([tool.description, *_schema_text(tool.parameters)])) - name_words
    return name_words, other


def tool_score(tool: ToolSpec, text: str) -> int:
    """How well ``tool`` fits the user message ``text`` (0: not at all)."""
    if tool.builtin:
        # $web_search has no description: its vocabulary is the way people ask to search.
        return NAMED_BONUS if any(word in text for word in _WEB_SEARCH_WORDS) else 0
    prompt = _words(text)
    name_words, other = tool_vocabulary(tool)
    # A Chinese character pair ("天气") is as specific as a name word; an English description word less so.
    score = sum(
        _NAME_WEIGHT if word in name_words or not word.isascii() else 1 for word in prompt & (name_words | other)
    )
    return score + (NAMED_BONUS if tool.name in text else 0)


def matching_tools(tools: list[ToolSpec], text: str) -> list[ToolSpec]:
    """The tools ``tool_choice: "auto"`` calls for ``text``, in declaration order (empty: answer in text)."""
    return [tool for tool in tools if tool_score(tool, text) >= CALL_THRESHOLD]


def best_tool(tools: list[ToolSpec], text: str) -> ToolSpec:
    """The single best-scoring tool (the first declared on a tie), for ``tool_choice: "required"``."""
    best = tools[0]
    best_score = tool_score(best, text)
    for tool in tools[1:]:
        score = tool_score(tool, text)
        if score > best_score:
            best, best_score = tool, score
    return best


def argument_words(tool: ToolSpec, text: str) -> list[str]:
    """The prompt's words fit to fill the tool's string fields: not stop words, not the tool's vocabulary."""
    name_words, other = tool_vocabulary(tool)
    vocabulary = name_words | other
    picked: list[str] = []
    plain: list[str] = []
    for position, word in enumerate(_PROMPT_WORD.findall(text)):
        if _CJK.fullmatch(word):
            for piece in _cjk_pieces(word, vocabulary):
                if piece not in picked:
                    picked.append(piece)
            continue
        lowered = word.lower()
        if len(lowered) > 1 and lowered not in _STOP_WORDS and lowered not in vocabulary:
            # Capitalised words are names ("Beijing", "Alice"): the likeliest values, so they come first.
            bucket = picked if word[0].isupper() and position > 0 else plain
            if word not in bucket:
                bucket.append(word)
    return picked + plain


def _cjk_pieces(run: str, vocabulary: set[str]) -> list[str]:
    """A Chinese run split where the tool's own words or function characters stand: "北京天气" → ["北京"]."""
    keep = [True] * len(run)
    for i in range(len(run) - 1):
        if run[i : i + 2] in vocabulary or run[i : i + 2] in _CJK_STOP_PAIRS:
            keep[i] = keep[i + 1] = False
    pieces: list[str] = []
    current = ""
    for char, kept in zip(run, keep, strict=True):
        if kept and char not in _CJK_STOP:
            current += char
        elif current:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


class _ArgumentGenerator(_Generator):
    """Schema-valid values whose plain strings are the prompt's words, in order, one per field."""

    def __init__(self, root: dict[str, Any], words: list[str], digest: int) -> None:
        super().__init__(root, words, digest)
        self._next_word = 0

    def string(self, schema: dict[str, Any]) -> str:
        if schema.get("format") or not isinstance(schema.get("minLength", 0), int) or schema.get("minLength", 0) > 1:
            return super().string(schema)
        word = self.words[self._next_word % len(self.words)]
        self._next_word += 1
        max_length = schema.get("maxLength")
        return word[:max_length] if isinstance(max_length, int) else word


def tool_arguments(tool: ToolSpec, text: str, digest: int) -> dict[str, Any]:
    """Arguments for calling ``tool`` about ``text``: valid for its parameter schema."""
    words = argument_words(tool, text) or ["kimiflow"]
    schema = tool.parameters
    value = _ArgumentGenerator(schema, words, digest).value(schema, 0)
    return value if isinstance(value, dict) else {}
