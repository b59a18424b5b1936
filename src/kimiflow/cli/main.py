"""The ``kimiflow`` command: a lazy click group, so ``--help`` stays fast.

Each command lives in its own module and is imported only when it runs (or when ``--help``
lists it). Add a command by adding one line to ``COMMANDS``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from kimiflow._version import __version__

# name -> ("module:attribute", one-line help). The help is kept here so that ``kimiflow --help``
# lists every command without importing any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("kimiflow.cli.sim:sim", "Serve the offline Kimi API simulator."),
    "batch": ("kimiflow.cli.batch:batch", "Run a JSONL file of requests at the account's limits; resumable."),
    "chat": ("kimiflow.cli.chat:chat", "Ask Kimi (streams); no prompt on a terminal = interactive chat."),
    "models": ("kimiflow.cli.account:models", "List the models your key can use."),
    "balance": ("kimiflow.cli.account:balance", "Show the account balance."),
    "tokens": ("kimiflow.cli.account:tokens", "Count the tokens of a text (or stdin)."),
    "files": ("kimiflow.cli.files:files", "Upload, list, read and delete files (file-extract)."),
    "logs": ("kimiflow.cli.logs:logs", "Show logged chat exchanges."),
    "config": ("kimiflow.cli.config:config", "Show or edit settings (key masked)."),
    "demo": ("kimiflow.cli.demo:demo", "Live tour: sync, async, streaming, batch, on a local simulator."),
    "gateway": ("kimiflow.cli.gateway:gateway", "REST gateway: virtual keys, limits, budgets, usage ledger."),
}


def remember_base_url(url: str) -> None:
    """Kept for callers that still import it from here; the helper lives in ``kimiflow.cli.boundary``.

    A forwarding function rather than a re-export: importing the boundary at the top would load
    the error machinery for every ``--help``.
    """
    from kimiflow.cli.boundary import remember_base_url as remember

    remember(url)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when needed."""

    def __init__(self, *args: Any, lazy_commands: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self._lazy_commands.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = entry[0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # The error boundary is imported only when something failed, so --help stays fast.
            from kimiflow.cli.boundary import report_error

            report_error(exc, debug=bool(ctx.params.get("debug")), ctx=ctx)
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self._lazy_commands[name][1]) for name in sorted(self._lazy_commands)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="kimiflow")
@click.option("--debug", is_flag=True, help="Show full tracebacks (or set KIMIFLOW_DEBUG=1).")
def cli(debug: bool) -> None:
    """kimiflow: the Kimi (Moonshot AI) API, done right — chat, batch, simulator."""


def main() -> None:
    """Console-script entry point."""
    cli()
