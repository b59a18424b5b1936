"""An incremental parser for streamed JSON: feed text as it arrives, read the partial object at any time.

Pure, no I/O. ``PartialJSON.feed(text)`` returns the value parsed so far: dicts and lists with their
complete members, and an unfinished string as its prefix. Keys appear once they are complete and
their value has started; numbers, ``true``, ``false`` and ``null`` once they are complete. Every
partial value is a prefix of the final one (the property tests pin that down).

The parser keeps its state (the open containers and the unconsumed tail of the text), so each
character is parsed once: a container that is complete within the unparsed text goes whole to
the C scanner of the standard ``json`` module, strings are cut with ``str.find``, and only
containers still open at a chunk's end are walked member by member. One cost is not linear: an
unfinished string is re-materialised on each ``feed`` (Python strings are immutable), so a single
string streamed in k chunks costs k copies of its prefix. Per member the walk is Python code, so
for small chunks (tens of characters) the total is about 10-20x one ``json.loads`` of the whole
text, growing linearly; re-parsing the text so far on every chunk grows with its square.

Why not 2x: with chunks of about 50 characters nearly every member arrives inside a container
that is still open, so it is walked in Python, at about 1.5 µs a member (a handful of ``str.find``
and slice calls at about 0.1 µs each plus the state machine's bytecode). A 200 kB answer has about
7,000 members, so the walk alone is about 10 ms, while ``json.loads`` of the whole text takes
about 1 ms. Handing runs of members to C does not help in pure Python: a compiled regex for a run
of members costs about 1 µs a member in the ``re`` engine, and wrapping the text up to the last
comma for the C scanner costs as much as the walk it saves (both tried and measured). With larger
chunks more containers complete within one chunk and go to the C scanner whole: the same answer
in 100 chunks costs about 4x ``json.loads``, in 10 chunks about 2x (``bench/bench_partial_json.py``).

The returned containers are live: later feeds keep filling them. Copy one to keep a snapshot.

>>> p = PartialJSON()
>>> p.feed('{"title": "Kimi')
{'title': 'Kimi'}
>>> p.feed('flow", "tags": [1, 2')
{'title': 'Kimiflow', 'tags': [1]}
>>> p.finish(']}')
{'title': 'Kimiflow', 'tags': [1, 2]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json import decoder as _decoder
from json import scanner as _scanner
from typing import Any, cast

from kimiflow.core.errors import KimiflowError

# The stdlib's C scanner: parses one complete value at an index and says where it ended.
_scan = cast(Callable[[str, int], "tuple[Any, int]"], _scanner.make_scanner(cast(Any, json.JSONDecoder())))
scanstring = cast(Callable[[str, int], "tuple[str, int]"], _decoder.scanstring)  # type: ignore[attr-defined]
_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_CHARS = re.compile(r"[-+0-9.eE]*")
_PARTIAL_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?$|\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u?[0-9a-fA-F]{0,3})?$")

_VALUE, _FIRST_VALUE, _KEY, _FIRST_KEY, _AFTER = range(5)
_CLOSE = {"{": "}", "[": "]"}


class PartialJSONError(KimiflowError, ValueError):
    """The streamed text is not JSON; the message gives the position, never the text itself."""


def _string_prefix(raw: str) -> str:
    """The decoded prefix of an unterminated JSON string body, without a half-written escape.

    Raises ``json.JSONDecodeError`` for an escape that can never become valid.
    """
    if "\\" not in raw:
        return raw
    cut = _PARTIAL_ESCAPE.search(raw)
    if cut is not None:
        start = cut.start()
        escaped = start - len(raw[:start].rstrip("\\"))
        if escaped % 2 == 0:  # this backslash starts an escape (it is not itself escaped)
            raw = raw[:start]
    return scanstring(raw + '"', 0)[0]


class PartialJSON:
    """Incremental JSON parser: ``feed`` chunks, read ``value``, ``finish`` to get the final value.

    >>> PartialJSON().feed('[{"a": "x')
    [{'a': 'x'}]
    """

    def __init__(self) -> None:
        self._root: list[Any] = []
        # Each frame: [container, key-for-the-next-value-or-None]; the first frame holds the root.
        self._frames: list[list[Any]] = [[self._root, None]]
        self._state = _FIRST_VALUE
        self._tail = ""
        self._consumed = 0
        self._open_string = False
        self._done = False

    @property
    def value(self) -> Any:
        """The value parsed so far (None before anything is complete)."""
        return self._root[0] if self._root else None

    def feed(self, text: str) -> Any:
        """Add the next chunk of text; return the value parsed so far."""
        if self._done:
            raise PartialJSONError("the JSON document was already finished; start a new PartialJSON")
        if self._open_string and '"' not in text and "\\" not in text and "\\" not in self._tail:
            # The common case inside a long string: only its prefix grows (stored inline, as this
            # runs for most chunks of a long answer).
            tail = self._tail = self._tail + text
            frame = self._frames[-1]
            container = frame[0]
            if type(container) is list:
                container[-1] = tail[1:]
            else:
                container[frame[1]] = tail[1:]
        else:
            self._tail += text
            self._advance(False)
        root = self._root
        return root[0] if root else None

    def finish(self, text: str = "") -> Any:
        """Add the last chunk; return the complete value, or raise ``PartialJSONError`` if incomplete."""
        if text:
            self.feed(text)
        self._advance(True)
        if len(self._frames) > 1 or self._state != _AFTER or self._open_string:
            open_containers = len(self._frames) - 1
            what = f"{open_containers} container(s) still open" if open_containers else "the value is unfinished"
            raise PartialJSONError(f"the JSON document is incomplete: {what}")
        rest = self._tail[_SPACE.match(self._tail).end() :]  # type: ignore[union-attr]
        if rest:
            self._fail(self._consumed + len(self._tail) - len(rest), "extra text after the JSON value")
        self._done = True
        return self.value

    def _fail(self, position: int, expected: str) -> None:
        raise PartialJSONError(f"invalid JSON at character {position}: {expected}")

    def _put(self, value: Any) -> None:
        frame = self._frames[-1]
        container = frame[0]
        if self._open_string:
            self._open_string = False
            if type(container) is list:
                container[-1] = value
            else:
                container[frame[1]] = value
            return
        if type(container) is list:
            container.append(value)
        else:
            container[frame[1]] = value

    def _show_string(self, raw: str, offset: int) -> None:
        try:
            prefix = _string_prefix(raw)
        except json.JSONDecodeError as exc:
            self._fail(offset + exc.pos, exc.msg.lower())
        frame = self._frames[-1]
        container = frame[0]
        if type(container) is list:
            if self._open_string:
                container[-1] = prefix
            else:
                container.append(prefix)
        else:
            container[frame[1]] = prefix
        self._open_string = True

    def _advance(self, final: bool) -> None:
        tail = self._tail
        end = len(tail)
        pos = 0
        frames = self._frames
        state = self._state
        space = _SPACE.match
        try:
            while pos < end:
                c = tail[pos]
                if c in " \t\n\r":
                    pos = space(tail, pos).end()  # type: ignore[union-attr]
                    if pos >= end:
                        break
                    c = tail[pos]
                # The states come in the order a member is written (``, "key": value``): each
                # step falls through to the next instead of going round the loop again.
                if state == _AFTER:
                    if len(frames) == 1:
                        self._fail(self._consumed + pos, "extra text after the JSON value")
                    is_dict = type(frames[-1][0]) is dict
                    if c != ",":
                        if c == ("}" if is_dict else "]"):
                            frames.pop()
                            pos += 1
                            continue
                        self._fail(self._consumed + pos, f"expected ',' or '{'}' if is_dict else ']'}'")
                    state = _KEY if is_dict else _VALUE
                    pos = space(tail, pos + 1).end()  # type: ignore[union-attr]
                    if pos >= end:
                        break
                    c = tail[pos]
                if state >= _KEY:
                    if c == "}" and state == _FIRST_KEY:
                        frames.pop()
                        state = _AFTER
                        pos += 1
                        continue
                    if c != '"':
                        self._fail(self._consumed + pos, "expected a string key in double quotes")
                    quote = tail.find('"', pos + 1)
                    if quote < 0:
                        break
                    try:
                        if tail.find("\\", pos + 1, quote) < 0:
                            key, stop = tail[pos + 1 : quote], quote + 1
                        else:
                            key, stop = scanstring(tail, pos + 1)
                    except json.JSONDecodeError as exc:
                        if exc.msg.startswith("Unterminated string") or end - exc.pos < 6:
                            break
                        self._fail(self._consumed + exc.pos, exc.msg.lower())
                    colon = space(tail, stop).end()  # type: ignore[union-attr]
                    if colon >= end:
                        break
                    if tail[colon] != ":":
                        self._fail(self._consumed + colon, "expected ':' after a key")
                    frames[-1][1] = key
                    state = _VALUE
                    pos = space(tail, colon + 1).end()  # type: ignore[union-attr]
                    if pos >= end:
                        break
                    c = tail[pos]
                if c == "]" and state == _FIRST_VALUE and type(frames[-1][0]) is list and len(frames) > 1:
                    frames.pop()
                    state = _AFTER
                    pos += 1
                    continue
                if c == "{" or c == "[":
                    # A container with no closing bracket in sight is open: skip the doomed (and,
                    # through JSONDecodeError, costly) attempt to scan it whole.
                    stop = -1
                    if tail.find(_CLOSE[c], pos) >= 0:
                        try:
                            value, stop = _scan(tail, pos)
                        except (json.JSONDecodeError, StopIteration):  # it is still open
                            stop = -1
                    if stop < 0:
                        opened: Any = {} if c == "{" else []
                        self._put(opened)
                        frames.append([opened, None])
                        state = _FIRST_KEY if c == "{" else _FIRST_VALUE
                        pos += 1
                        continue
                    self._put(value)
                    state = _AFTER
                    pos = stop
                    continue
                if c == '"':
                    quote = tail.find('"', pos + 1)
                    if quote < 0:
                        self._show_string(tail[pos + 1 :], self._consumed + pos + 1)
                        break
                    if tail.find("\\", pos + 1, quote) < 0:
                        frame = frames[-1]
                        if self._open_string:
                            self._put(tail[pos + 1 : quote])
                        elif type(frame[0]) is dict:  # the most common step of all, so inlined
                            frame[0][frame[1]] = tail[pos + 1 : quote]
                        else:
                            frame[0].append(tail[pos + 1 : quote])
                        state = _AFTER
                        pos = quote + 1
                        continue
                    try:
                        value, stop = scanstring(tail, pos + 1)
                    except json.JSONDecodeError as exc:
                        if not exc.msg.startswith("Unterminated string") and not exc.msg.startswith("Invalid \\u"):
                            self._fail(self._consumed + exc.pos, exc.msg.lower())
                        if exc.msg.startswith("Invalid \\u") and exc.pos + 6 <= end:
                            self._fail(self._consumed + exc.pos, exc.msg.lower())
                        self._show_string(tail[pos + 1 :], self._consumed + pos + 1)
                        break
                    self._put(value)
                    state = _AFTER
                    pos = stop
                    continue
                try:
                    value, stop = _scan(tail, pos)
                except StopIteration:
                    if final or end - pos >= 5:
                        self._fail(self._consumed + pos, "expected a JSON value")
                    break
                except json.JSONDecodeError as exc:
                    self._fail(self._consumed + exc.pos, exc.msg.lower())
                if not final and _NUMBER_CHARS.match(tail, pos).end() >= end:  # type: ignore[union-attr]
                    break  # a number may still grow ("61." → "61.2"): wait for the character after it
                self._put(value)
                state = _AFTER
                pos = stop
                continue
        finally:
            self._state = state
            if pos:
                self._consumed += pos
                self._tail = tail[pos:]
