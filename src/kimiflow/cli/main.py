"""The ``kimiflow`` command: a lazy click group, so ``--help`` stays fast.

Each command lives in its own module and is imported only when it runs (or when ``--help``
lists it). Add a command by adding one line to ``COMMANDS``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute", imported on first use.
COMMANDS: dict[str, str] = {
    "sim": "kimiflow.cli.sim:sim",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when needed."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kimiflow")
def cli() -> None:
    """kimiflow: the Kimi (Moonshot AI) API, done right — chat, batch, simulator."""


def main() -> None:
    """Console-script entry point."""
    cli()
