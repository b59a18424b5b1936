"""``kimiflow logs``: the recent exchanges from the chat log, for people or (``--json``) scripts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kimiflow.cli.inputs import UTF8_TEXT

if TYPE_CHECKING:
    from kimiflow.cli.logstore import Exchange

MAX_COUNT = 1_000_000


@click.command(name="logs")
@click.option("-n", "--count", "count", type=click.IntRange(min=1, max=MAX_COUNT), default=3, show_default=True,
              help=f"How many of the newest exchanges to show (at most {MAX_COUNT:,}).")
@click.option("-q", "--query", type=UTF8_TEXT, help="Only exchanges whose prompt, answer or system prompt contains TEXT.",
              metavar="TEXT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list, oldest first).")
@click.option("--path", "show_path", is_flag=True, help="Print the log database's path and exit.")
@click.option("--export-answers", "export_to", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the logged exchanges (all, or -n/-q's selection) as a script for kimiflow sim --answers.")
@click.pass_context
def logs(ctx: click.Context, count: int, query: str | None, as_json: bool, show_path: bool,
         export_to: Path | None) -> None:
    """Show logged chat exchanges, oldest of the selection first.

    Every `kimiflow chat` exchange is logged (prompt, answer, model, usage, cost, latency, request
    id; never the API key) unless --no-log or KIMIFLOW_NO_LOG=1. Example: kimiflow logs -n 10 -q 合同

    Replay recorded answers offline: kimiflow logs --export-answers answers.jsonl, then
    kimiflow sim --answers answers.jsonl.
    """
    from kimiflow.cli.home import logs_path
    from kimiflow.cli.logstore import LogStore
    from kimiflow.cli.output import echo_json, format_cost, format_usage

    path = logs_path()
    if show_path:
        click.echo(str(path))
        return
    if export_to is not None:
        # An export takes the whole log unless -n was given explicitly.
        explicit = ctx.get_parameter_source("count") is not click.core.ParameterSource.DEFAULT
        selected = list(reversed(LogStore(path).recent(limit=count if explicit else MAX_COUNT, query=query)))
        _export_answers(selected, export_to)
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
        for call in exchange.tool_calls:
            outcome = "->" if call.get("ok", True) else "-> failed:"
            click.echo(f"[tool] {call.get('name')}({call.get('arguments')}) {outcome} {call.get('result')} "
                       f"({call.get('duration_ms', 0):.0f} ms)")
        click.echo(exchange.answer)
        click.echo()


def answer_records(exchanges: list[Exchange]) -> tuple[list[dict[str, Any]], int, int]:
    """Script lines for ``exchanges`` (oldest first): ``(lines, interrupted skipped, repeats skipped)``.

    Each line matches the exchange's prompt, model and system prompt and replies with its answer
    (and reasoning). Matching is by substring and the first line wins, so longer prompts go first:
    "你好" must not capture "你好吗". A prompt asked again (same model and system) keeps its first
    answer, the one a replay of the recorded conversation expects.
    """
    lines: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str | None]] = set()
    interrupted = repeats = 0
    for exchange in exchanges:
        if exchange.interrupted:
            interrupted += 1
            continue
        identity = (exchange.prompt, exchange.model, exchange.system)
        if identity in seen:
            repeats += 1
            continue
        seen.add(identity)
        line: dict[str, Any] = {"match": exchange.prompt, "model": exchange.model}
        if exchange.system:
            line["match_system"] = exchange.system
        line["reply"] = exchange.answer
        if exchange.reasoning:
            line["reasoning"] = exchange.reasoning
        lines.append(line)
    lines.sort(key=lambda line: -len(line["match"]))
    return lines, interrupted, repeats


def _export_answers(exchanges: list[Exchange], target: Path) -> None:
    lines, interrupted, repeats = answer_records(exchanges)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    notes = []
    if interrupted:
        notes.append(f"{interrupted} interrupted exchange(s) left out")
    if repeats:
        notes.append(f"{repeats} repeated prompt(s) kept their first answer")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    click.echo(f"Wrote {len(lines)} scripted answer(s) to {target}{suffix}. Serve them: "
               f"kimiflow sim --answers {target}", err=True)
