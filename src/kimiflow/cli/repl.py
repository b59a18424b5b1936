"""The interactive ``kimiflow chat``: line editing, history, streaming answers, slash commands.

Enter sends; Esc then Enter (or Alt-Enter) starts a new line, and a line of just ``\"\"\"`` opens a
block that a second ``\"\"\"`` closes, for pasting. Ctrl-C stops the answer being streamed and
returns to the prompt; Ctrl-D or ``/exit`` leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from kimiflow.cli.conversation import Conversation
from kimiflow.cli.output import AnswerPrinter
from kimiflow.core.errors import KimiflowError

ReadLine = Callable[[str], str]
"""Reads one input (raises ``EOFError`` on Ctrl-D, ``KeyboardInterrupt`` on Ctrl-C)."""

HELP = """Commands:
  /reset          forget the conversation (the system prompt stays)
  /model [NAME]   show or switch the model
  /system [TEXT]  show or set the system prompt
  /save FILE      write the conversation to FILE as Markdown
  /usage          tokens and cost so far
  /exit           leave (or Ctrl-D)
Esc+Enter inserts a new line; \"\"\" on its own line starts and ends a multi-line block.
Ctrl-C stops an answer without leaving."""

BLOCK = '"""'


def prompt_toolkit_reader() -> ReadLine:
    """A line reader with editing, persistent history and Esc+Enter for a new line."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    from kimiflow.cli.home import history_path

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: object) -> None:
        event.current_buffer.insert_text("\n")  # type: ignore[attr-defined]

    session: PromptSession[str] = PromptSession(history=FileHistory(str(history_path())), key_bindings=bindings)

    def read(prompt: str) -> str:
        text: str = session.prompt(prompt)
        return text

    return read


def read_message(read_line: ReadLine) -> str:
    """One user message; a ``\"\"\"`` line collects lines until the closing ``\"\"\"``."""
    first = read_line("> ")
    if first.strip() != BLOCK:
        return first
    lines: list[str] = []
    while True:
        line = read_line("… ")
        if line.strip() == BLOCK:
            return "\n".join(lines)
        lines.append(line)


class Repl:
    """The interactive loop over a ``Conversation``; ``read_line`` is injectable for tests.

    >>> Repl(convo).run()
    """

    def __init__(self, convo: Conversation, read_line: ReadLine | None = None) -> None:
        self.convo = convo
        self.read_line = read_line

    def run(self) -> None:
        read_line = self.read_line or prompt_toolkit_reader()
        click.echo(f"Chatting with {self.convo.model}. /help for commands; Ctrl-D or /exit to leave.")
        if self.convo.history:
            click.echo(f"Continuing a conversation of {len(self.convo.history) // 2} exchanges.")
        while True:
            try:
                message = read_message(read_line)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line, like a shell
            except EOFError:
                click.echo()
                return
            text = message.strip()
            if not text:
                continue
            if text.startswith("/"):
                if self.command(text) == "exit":
                    return
                continue
            self.ask(message)

    def ask(self, message: str) -> None:
        printer = AnswerPrinter(reasoning_to_stderr=False)
        try:
            reply = self.convo.send(message, on_text=printer.text, on_reasoning=printer.reasoning)
        except KeyboardInterrupt:
            # Ctrl-C before the first byte arrived: nothing was answered, nothing is kept.
            click.echo("\n[cancelled]")
            return
        except KimiflowError as exc:
            # One failed request (a wrong /model, a network blip) must not end the conversation.
            from kimiflow.cli.boundary import describe_error

            click.echo(f"\nError: {describe_error(exc, base_url=self.convo.client.base_url)}", err=True)
            return
        click.echo()
        if reply.cancelled:
            click.echo("[cancelled]")  # Ctrl-C before the first token: the turn is forgotten
        elif reply.interrupted:
            click.echo("[interrupted]")

    def command(self, text: str) -> str | None:
        """Run one slash command; returns ``"exit"`` to leave."""
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        convo = self.convo
        if name in ("/exit", "/quit"):
            return "exit"
        if name == "/help":
            click.echo(HELP)
        elif name == "/reset":
            convo.reset()
            click.echo("Conversation reset.")
        elif name == "/model":
            if arg:
                convo.model = arg
            click.echo(f"Model: {convo.model}")
        elif name == "/system":
            if arg:
                convo.system = arg
            click.echo(f"System prompt: {convo.system or '(none)'}")
        elif name == "/save":
            if not arg:
                click.echo("Usage: /save FILE")
            else:
                try:
                    Path(arg).expanduser().write_text(convo.transcript(), encoding="utf-8")
                    click.echo(f"Saved to {arg}.")
                except OSError as exc:
                    click.echo(f"Cannot save to {arg}: {exc.strerror or exc}")
        elif name == "/usage":
            click.echo(convo.totals.describe())
        else:
            click.echo(f"Unknown command {name}; /help lists them.")
        return None


def run_repl(convo: Conversation, read_line: ReadLine | None = None) -> None:
    """Chat interactively until Ctrl-D or ``/exit``."""
    Repl(convo, read_line).run()
