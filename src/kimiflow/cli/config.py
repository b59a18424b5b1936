"""``kimiflow config``: show the effective settings (key masked) and edit the config file."""

from __future__ import annotations

import click

from kimiflow.cli.inputs import UTF8_TEXT


@click.group(name="config", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON (key still masked).")
@click.pass_context
def config(ctx: click.Context, as_json: bool) -> None:
    """Show the effective settings and where each comes from.

    Order: command-line flag > environment (MOONSHOT_API_KEY, MOONSHOT_BASE_URL, KIMIFLOW_MODEL)
    > config file (`kimiflow config path`) > default. Example: kimiflow config set model kimi-k2.5
    """
    if ctx.invoked_subcommand is not None:
        return
    from kimiflow.cli.home import config_path, logs_path
    from kimiflow.cli.logstore import logging_disabled
    from kimiflow.cli.output import echo_json, print_table
    from kimiflow.cli.settings import effective_settings
    from kimiflow.core.config import mask_key

    settings = effective_settings()
    shown = {
        name: (mask_key(s.value) if name == "api_key" else (s.value or "(not set)"), s.source)
        for name, s in settings.items()
    }
    extra = {
        "config_file": str(config_path()),
        "log_database": str(logs_path()),
        "logging": "off" if logging_disabled() else "on",
    }
    if as_json:
        data: dict[str, object] = {name: {"value": v, "source": src} for name, (v, src) in shown.items()}
        data.update(extra)
        echo_json(data)
        return
    rows = [[name, value, source] for name, (value, source) in shown.items()]
    rows += [[name, value, ""] for name, value in extra.items()]
    print_table("kimiflow settings", ["setting", "value", "source"], rows)


def usable_setting(name: str, value: str) -> str:
    """``value`` as it will be stored, or ``click.BadParameter`` when the setting could never work.

    The library's own checks decide (so the CLI refuses exactly what a client would refuse later);
    their messages never contain the key.
    """
    from kimiflow.core.config import check_api_key, resolve_config
    from kimiflow.core.errors import ConfigError

    value = value.strip()
    if not value:
        raise click.BadParameter(
            f"an empty {name} cannot be used; give a value, or remove the setting with `kimiflow config unset {name}`.",
            param_hint="VALUE",
        )
    try:
        if name == "api_key":
            return check_api_key(value)
        if name == "base_url":
            # A stand-in key: only the URL is being checked, and it must pass every client check.
            return resolve_config(api_key="sk-config-check", base_url=value, environ={}).base_url
    except ConfigError as exc:
        raise click.BadParameter(f"{exc}. Nothing was saved.", param_hint="VALUE") from None
    return value


@config.command(name="set")
@click.argument("name")
@click.argument("value", required=False, type=UTF8_TEXT)
def config_set(name: str, value: str | None) -> None:
    """Store a setting in the config file (api_key, base_url, model).

    Leave VALUE out to type it hidden, which keeps a key out of your shell history:
    kimiflow config set api_key
    """
    from kimiflow.cli.settings import check_setting_name, read_config_file, write_config_file

    check_setting_name(name)
    if value is None:
        value = click.prompt(name, hide_input=name == "api_key", type=UTF8_TEXT)
    value = usable_setting(name, value)
    values = read_config_file()
    values[name] = value
    write_config_file(values)
    click.echo(f"Saved {name}.", err=True)


@config.command(name="unset")
@click.argument("name")
def config_unset(name: str) -> None:
    """Remove a setting from the config file."""
    from kimiflow.cli.settings import check_setting_name, read_config_file, write_config_file

    check_setting_name(name)
    values = read_config_file()
    if values.pop(name, None) is None:
        click.echo(f"{name} was not set in the config file.", err=True)
        return
    write_config_file(values)
    click.echo(f"Removed {name}.", err=True)


@config.command(name="path")
def config_path_command() -> None:
    """Print the config file's path."""
    from kimiflow.cli.home import config_path

    click.echo(str(config_path()))
