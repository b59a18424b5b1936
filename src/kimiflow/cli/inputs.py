"""What users type or pipe in, checked before anything is sent: UTF-8 text and ``-o`` request options.

Python hands undecodable argv bytes over as lone surrogates, which only fail much later when the
request is encoded; these checks turn them, and options the request cannot carry, into one
usage error that names the argument and the fix.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    _TextType = click.ParamType[str]
else:  # click before 8.2 has no generic ParamType to subscript at run time
    _TextType = click.ParamType

_LOCALE_HINT = "set a UTF-8 locale (e.g. export LANG=C.UTF-8) or convert the text, e.g. iconv -f GBK -t UTF-8"

# -o keys that another argument of `kimiflow chat` already sets, and which one.
RESERVED_OPTIONS: dict[str, str] = {
    "model": "use -m/--model",
    "messages": "give the prompt as the argument (or pipe it in) and a system prompt with -s",
    "stream": "answers stream by default; use --no-stream to wait for the whole answer",
}
# -o keys that are options of the call rather than of the request body, with the shape each needs.
_CALL_OPTIONS = ("extra_body", "extra_headers", "timeout", "max_retries")


def first_non_utf8(text: str) -> int | None:
    """The index of the first character that cannot be sent as UTF-8 (an undecodable byte), or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


class Utf8Text(_TextType):
    """A click type for free text that will be sent to the API: refuses bytes that are not UTF-8."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        index = first_non_utf8(text)
        if index is not None:
            byte = ord(text[index]) - 0xDC00 if 0xDC80 <= ord(text[index]) <= 0xDCFF else None
            what = f"byte 0x{byte:02x}" if byte is not None else "a character"
            self.fail(f"is not UTF-8 text ({what} at position {index}); {_LOCALE_HINT}.", param, ctx)
        return text


UTF8_TEXT = Utf8Text()


def read_piped_stdin() -> str | None:
    """Text piped into the command, or ``None`` when stdin is a terminal.

    Read as bytes and decoded as UTF-8 (else as the terminal's own encoding), so a file in another
    encoding is a clear usage error instead of a traceback or mojibake sent to the API.
    """
    stdin = sys.stdin
    if stdin.isatty():
        return None
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:
        try:
            text = stdin.read()
        except UnicodeDecodeError:
            raise click.UsageError(f"piped input is not UTF-8 text; {_LOCALE_HINT} FILE | kimiflow ...") from None
    else:
        data: bytes = buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            fallback = (getattr(stdin, "encoding", None) or "utf-8").lower().replace("_", "-")
            if fallback not in ("utf-8", "utf8"):
                try:
                    return data.decode(fallback)
                except (UnicodeDecodeError, LookupError):
                    pass
            raise click.UsageError(
                f"piped input is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                f"{_LOCALE_HINT} FILE | kimiflow ..."
            ) from None
    if first_non_utf8(text) is not None:
        raise click.UsageError(f"piped input is not UTF-8 text; {_LOCALE_HINT} FILE | kimiflow ...")
    return text


def parse_option(text: str) -> tuple[str, Any]:
    """``-o key=value``: the value is JSON when it parses (numbers, booleans, objects), else a string.

    >>> parse_option("top_p=0.9"), parse_option("stop=END")
    (('top_p', 0.9), ('stop', 'END'))
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{text!r} is not key=value; example: -o top_p=0.9", param_hint="'-o'")
    if first_non_utf8(text) is not None:
        raise click.BadParameter(f"{key.strip()!r} is not UTF-8 text; {_LOCALE_HINT}.", param_hint="'-o'")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _check_call_option(key: str, value: Any) -> None:
    def bad(shape: str, example: str) -> click.BadParameter:
        return click.BadParameter(f"{key} needs {shape}, e.g. -o {example}; got {value!r}", param_hint="'-o'")

    if key == "extra_body" and not isinstance(value, dict):
        raise bad("a JSON object", "extra_body='{\"partial_mode\": true}'")
    if key == "extra_headers" and not (
        isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    ):
        raise bad("a JSON object of strings", "extra_headers='{\"X-Trace\": \"abc\"}'")
    if key == "timeout" and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    ):
        raise bad("a number of seconds above 0", "timeout=30")
    if key == "max_retries" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise bad("an integer >= 0", "max_retries=2")


def parse_options(options: Iterable[str], *, set_by_flags: Iterable[str] = ()) -> dict[str, Any]:
    """Every ``-o key=value`` as request parameters; a usage error for a key given twice, a key
    another argument sets, or a call option of the wrong shape.

    >>> parse_options(["top_p=0.9", "extra_body={\\"partial_mode\\": true}"])
    {'top_p': 0.9, 'extra_body': {'partial_mode': True}}
    """
    flags = set(set_by_flags)
    params: dict[str, Any] = {}
    for text in options:
        key, value = parse_option(text)
        if key in RESERVED_OPTIONS:
            raise click.BadParameter(f"{key} cannot be set with -o: {RESERVED_OPTIONS[key]}.", param_hint="'-o'")
        if key in params:
            raise click.BadParameter(f"{key} is given twice; keep one -o {key}=...", param_hint="'-o'")
        if key in flags:
            flag = "--" + key.replace("_", "-")
            raise click.BadParameter(f"{key} is set by both -o and {flag}; keep one.", param_hint="'-o'")
        if key in _CALL_OPTIONS:
            _check_call_option(key, value)
        params[key] = value
    return params
