"""Account commands: ``kimiflow models``, ``kimiflow balance``, ``kimiflow tokens``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kimiflow.cli.inputs import UTF8_TEXT, read_piped_stdin

if TYPE_CHECKING:
    from kimiflow.types import MessageParam


@click.command(name="models")
@click.option("--json", "as_json", is_flag=True, help="Print the model objects as JSON.")
def models(as_json: bool) -> None:
    """List the models your key can use, with context window and prices (CNY per 1M tokens)."""
    from kimiflow.cli.connect import open_client
    from kimiflow.cli.output import echo_json, print_table
    from kimiflow.core.catalog import model_info

    with open_client() as client:
        listed = client.models.list()
    if as_json:
        echo_json([m.to_dict() for m in listed.data])
        return
    rows = []
    for m in sorted(listed.data, key=lambda m: m.id):
        info = model_info(m.id)
        context = m.context_length or (info.context_length if info else None)
        reasoning = m.supports_reasoning if m.supports_reasoning is not None else (info.reasoning if info else None)
        rows.append([
            m.id,
            context,
            "yes" if reasoning else "",
            f"{info.input_price:g}" if info else "?",
            f"{info.output_price:g}" if info else "?",
        ])
    print_table("Models", ["id", "context", "thinking", "input ¥/1M", "output ¥/1M"], rows)


@click.command(name="balance")
@click.option("--json", "as_json", is_flag=True, help="Print the raw balance JSON.")
def balance(as_json: bool) -> None:
    """Show the account balance (CNY on api.moonshot.cn, USD on api.moonshot.ai)."""
    from kimiflow.cli.connect import open_client
    from kimiflow.cli.output import echo_json, print_table

    with open_client() as client:
        result = client.balance()
    if as_json:
        echo_json(result.to_dict())
        return
    data = result.data
    print_table("Balance", ["available", "voucher", "cash"],
                [[f"{data.available_balance:.2f}", f"{data.voucher_balance:.2f}", f"{data.cash_balance:.2f}"]])
    if data.available_balance <= 0:
        click.echo("The balance is used up: API calls will fail until you top up.", err=True)


@click.command(name="tokens")
@click.argument("text", required=False, type=UTF8_TEXT)
@click.option("-m", "--model", type=UTF8_TEXT, help="Model whose tokenizer counts (default: the `model` setting).")
@click.option("-s", "--system", type=UTF8_TEXT, help="Count a system prompt too.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")
def tokens(text: str | None, model: str | None, system: str | None, as_json: bool) -> None:
    """Count the tokens of TEXT (or of piped stdin) with Kimi's tokenizer endpoint.

    Example: cat report.txt | kimiflow tokens
    """
    from kimiflow.cli.connect import open_client
    from kimiflow.cli.output import echo_json
    from kimiflow.cli.settings import resolve

    if text is None:
        text = read_piped_stdin()
    if not text:
        raise click.UsageError("no text: give it as an argument or pipe it in (cat file.txt | kimiflow tokens).")
    messages: list[MessageParam] = [{"role": "user", "content": text}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with open_client() as client:
        counted = client.tokens.count(model=model or resolve("model") or "", messages=messages)
    if as_json:
        echo_json(counted.to_dict())
    else:
        click.echo(counted.total_tokens)
