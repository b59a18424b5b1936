"""``kimiflow logs``: the recent exchanges from the chat log, for people or (``--json``) scripts."""

from __future__ import annotations

import time

import click

from kimiflow.cli.inputs import UTF8_TEXT

MAX_COUNT = 1_000_000


@click.command(name="logs")
@click.option("-n", "--count", "count", type=click.IntRange(min=1, max=MAX_COUNT), default=3, show_default=True,
              help=f"How many of the newest exchanges to show (at most {MAX_COUNT:,}).")
@click.option("-q", "--query", type=UTF8_TEXT, help="Only exchanges whose prompt, answer or system prompt contains TEXT.",
              metavar="TEXT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list, oldest first).")
@click.option("--path", "show_path", is_flag=True, help="Print the log database's path and exit.")
def logs(count: int, query: str | None, as_json: bool, show_path: bool) -> None:
    """Show logged chat exchanges, oldest of the selection first.

    Every `kimiflow chat` exchange is logged (prompt, answer, model, usage, cost, latency, request
    id; never the API key) unless --no-log or KIMIFLOW_NO_LOG=1. Example: kimiflow logs -n 10 -q 合同
    """
    from kimiflow.cli.home import logs_path
    from kimiflow.cli.logstore import LogStore
    from kimiflow.cli.output import echo_json, format_cost, format_usage

    path = logs_path()
    if show_path:
        click.echo(str(path))
        return
    exchanges = list(reversed(LogStore(path).recent(limit=count, query=query)))
    if as_json:
        echo_json([exchange.to_dict() for exchange in exchanges])
        return
    if not exchanges:
        click.echo("No logged exchanges" + (f" matching {query!r}." if query else " yet."), err=True)
        return
    for exchange in exchanges:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(exchange.created))
        facts = [
            when,
            exchange.model,
            f"conversation {exchange.conversation_id[:8]}",
            format_usage(exchange.prompt_tokens, exchange.completion_tokens, exchange.total_tokens),
            format_cost(exchange.cost_cny) if exchange.cost_cny is not None else "cost unknown",
        ]
        if exchange.latency_ms is not None:
            facts.append(f"{exchange.latency_ms:.0f} ms")
        if exchange.request_id:
            facts.append(f"request {exchange.request_id}")
        if exchange.interrupted:
            facts.append("interrupted")
        click.secho("# " + "  ".join(facts), bold=True)
        if exchange.system:
            click.echo(f"system: {exchange.system}")
        click.echo(f"> {exchange.prompt}")
        click.echo(exchange.answer)
        click.echo()
