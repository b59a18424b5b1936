"""``kimiflow sim``: serve the offline Kimi API simulator until Ctrl-C."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import click

from kimiflow.sim import SimConfig, Simulator, parse_fault_rates
from kimiflow.sim.answers import AnswerScript


def _fault_rates(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float]:
    if not value:
        return {}
    try:
        rates = parse_fault_rates(value)
        SimConfig(fault_rates=rates)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return rates


def _keys(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    if not keys:
        raise click.BadParameter("give at least one key, e.g. --keys sk-sim-a,sk-sim-b")
    return keys


async def _serve(config: SimConfig, host: str, port: int) -> None:
    sim = Simulator(config, host=host, port=port)
    try:
        await sim.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(f"port {port} on {host} is already in use; pick another with --port") from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    tier = "none (no limits)" if config.tier is None else str(config.tier)
    rules = "" if config.strict_conversations else ", lax conversations"
    click.echo(
        f"Kimi API simulator listening on {sim.base_url}  "
        f"(tier {tier}, latency {config.latency}, catalog {config.catalog}{rules})"
    )
    click.echo(f"API key: {sim.api_key}")
    script = config.answers
    if script is not None:
        click.echo(f"Scripted answers: {len(script)} from {script.source} (others generated)")
    click.echo("Point a client at it:")
    click.echo(f"  export MOONSHOT_BASE_URL={sim.base_url}")
    click.echo(f"  export MOONSHOT_API_KEY={sim.api_key}")
    click.echo("Press Ctrl-C to stop.", err=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0 = any free port).")
@click.option("--tier", type=click.IntRange(0, 5), default=None, help="Enforce Kimi tier 0..5 limits (default: none).")
@click.option(
    "--latency", type=click.Choice(["fast", "realistic"]), default="fast", show_default=True,
    help="fast: no delays; realistic: 300-700 ms to first token, 40-80 tokens/s.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for answers, latency jitter and faults.")
@click.option("--keys", callback=_keys, help="Comma-separated API keys to accept (default: one built-in key).")
@click.option("--balance", type=float, default=1000.0, show_default=True, help="Starting balance in CNY.")
@click.option(
    "--fault-rate", "fault_rate", callback=_fault_rates,
    help="Random faults per request, e.g. 500=0.05,reset=0.02 (names as in X-Kimiflow-Sim-Fault).",
)
@click.option(
    "--catalog", type=click.Choice(["full", "online"]), default="full", show_default=True,
    help="full: every known model; online: only the models Kimi still serves in late 2026 (others 404).",
)
@click.option(
    "--lax", "--no-strict-conversations", "lax", is_flag=True,
    help="Accept conversations Kimi refuses (unanswered or duplicate tool calls, missing reasoning_content).",
)
@click.option(
    "--answers", "answers", type=click.Path(dir_okay=False, path_type=Path),
    help='Scripted answers, JSONL: {"match": "退货政策", "reply": "七天无理由退货。"} a line (see kimiflow.sim.answers).',
)
@click.option(
    "--batch-hour", "batch_hour", type=click.FloatRange(min=0.0001), default=1.0, show_default=True,
    help="Batch API clock: real seconds per simulated hour (a 24h batch window lasts 24 x this).",
)
@click.option("--batch-lines-per-hour", type=click.IntRange(1), default=36_000, show_default=True,
              help="Batch lines answered per simulated hour (small values make batches expire).")
@click.option("--batch-max-lines", type=click.IntRange(1), default=50_000, show_default=True,
              help="Lines a batch input file may have (more fails validation).")
def sim(
    host: str, port: int, tier: int | None, latency: str, seed: int, keys: tuple[str, ...], balance: float,
    fault_rate: dict[str, float], catalog: str, lax: bool, answers: Path | None, batch_hour: float,
    batch_lines_per_hour: int, batch_max_lines: int,
) -> None:
    """Serve the offline Kimi API simulator (OpenAI-compatible, /v1) until Ctrl-C.

    With --answers FILE, a request whose last user message contains a line's "match" gets that
    line's "reply"; `kimiflow logs --export-answers FILE` writes one from your logged chats.
    """
    try:
        config = SimConfig(
            tier=tier, latency=latency, seed=seed, keys=keys, balance=balance, fault_rates=fault_rate,
            catalog=catalog, strict_conversations=not lax,
            answers=AnswerScript.load(answers) if answers is not None else None,
            batch_hour_s=batch_hour, batch_lines_per_hour=batch_lines_per_hour, batch_max_lines=batch_max_lines,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        asyncio.run(_serve(config, host, port))
    except KeyboardInterrupt:
        click.echo("Simulator stopped.", err=True)
