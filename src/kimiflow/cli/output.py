"""Output helpers shared by the commands: JSON for scripts, rich tables for people.

rich is imported inside the functions so that ``kimiflow --help`` never pays for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console


def stdout_is_tty() -> bool:
    """True when stdout is a terminal (tables and colour); False for pipes and CliRunner."""
    return sys.stdout.isatty()


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON, keeping CJK characters readable.

    >>> echo_json({"answer": "你好"})
    """
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def console(*, stderr: bool = False) -> Console:
    """A rich console writing to the current (possibly CliRunner-captured) stdout or stderr."""
    import rich.console

    return rich.console.Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; tab-separated lines with a header row otherwise.

    >>> print_table("Models", ["id", "context"], [["moonshot-v1-8k", 8192]])
    """
    if not stdout_is_tty():
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join("" if cell is None else str(cell) for cell in row))
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(table)


def format_cost(cny: float | None) -> str:
    """A CNY amount with enough digits for one small request.

    >>> format_cost(0.000184)
    '¥0.000184'
    """
    if cny is None:
        return "unknown"
    return f"¥{cny:.6f}" if cny < 1 else f"¥{cny:.2f}"


def format_usage(prompt_tokens: int | None, completion_tokens: int | None, total_tokens: int | None) -> str:
    """``12 prompt + 30 completion = 42 tokens``, or ``tokens unknown`` when usage never arrived.

    >>> format_usage(12, 30, 42), format_usage(None, None, None)
    ('12 prompt + 30 completion = 42 tokens', 'tokens unknown')
    """
    if prompt_tokens is None and completion_tokens is None and total_tokens is None:
        return "tokens unknown"  # an interrupted answer: 0 would claim it cost nothing
    return f"{prompt_tokens or 0} prompt + {completion_tokens or 0} completion = {total_tokens or 0} tokens"


class AnswerPrinter:
    """Prints a streamed answer as it arrives: thinking models' reasoning dimmed, then the answer.

    ``reasoning_to_stderr`` keeps stdout for the answer alone (one-shot chat into a pipe).

    >>> printer = AnswerPrinter(reasoning_to_stderr=True)
    >>> convo.send("你好", on_text=printer.text, on_reasoning=printer.reasoning)
    """

    def __init__(self, *, reasoning_to_stderr: bool) -> None:
        self._reasoning_err = reasoning_to_stderr
        self._thinking = False

    def reasoning(self, text: str) -> None:
        self._thinking = True
        click.echo(click.style(text, dim=True), nl=False, err=self._reasoning_err)
        (sys.stderr if self._reasoning_err else sys.stdout).flush()

    def text(self, text: str) -> None:
        if self._thinking:
            click.echo(err=self._reasoning_err)  # end the reasoning's line before the answer starts
            self._thinking = False
        click.echo(text, nl=False)
        sys.stdout.flush()
