"""``kimiflow demo``: the seed article's three calling styles, live and timed, on a local simulator.

No key and no network: an in-process simulator with realistic latency answers on 127.0.0.1.
(1) one synchronous call, (2) the same questions sequentially and then concurrently with
``AsyncKimi``, with the measured speed-up, (3) a streamed answer appearing token by token, and
(4) a small paced batch when ``kimiflow.batch`` provides ``run_batch``. Answers are kept short with
``max_tokens`` so the whole tour takes well under a minute.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

QUESTIONS = [
    "用一句话解释什么是REST API。",
    "同步调用和异步调用有什么区别？",
    "SSE适合什么场景？",
    "如何保护API Key？",
    "什么是速率限制？",
    "为什么批量任务需要断点续跑？",
    "token是怎么计费的？",
    "如何给客服工单自动分类？",
    "什么是流式输出？",
    "写一句鼓励团队的话。",
]
JOKE = "講個冷笑話吧"
# The demo's script for the simulator (kimiflow.sim.answers), so its answers read as real answers
# to its questions; each fits the default --max-tokens of 30, the joke the stream step's 60.
DEMO_ANSWERS: list[dict[str, str]] = [
    {"match": "用一句话解释什么是REST API。", "reply": "REST API 用 URL 表示资源，用 GET、POST 等 HTTP 方法读写资源。"},
    {"match": "同步调用和异步调用有什么区别？", "reply": "同步调用要等结果才继续；异步调用先做别的事，结果到了再处理。"},
    {"match": "SSE适合什么场景？", "reply": "适合服务器持续推送数据，比如逐字显示回答、实时日志和进度。"},
    {"match": "如何保护API Key？", "reply": "放在环境变量或密钥服务里，不写进代码和日志，定期轮换。"},
    {"match": "什么是速率限制？", "reply": "平台对每分钟请求数和 token 数的上限，超过就返回 429。"},
    {"match": "为什么批量任务需要断点续跑？", "reply": "任务会因网络或限流中断，续跑只补做没完成的部分，不重复花钱。"},
    {"match": "token是怎么计费的？", "reply": "输入和输出的 token 分别计价，一个汉字约一个 token。"},
    {"match": "如何给客服工单自动分类？", "reply": "先定义类别，让模型按固定格式输出类别，再抽样人工复核。"},
    {"match": "什么是流式输出？", "reply": "模型边生成边返回，不必等整段答案写完就能看到前面的文字。"},
    {"match": "写一句鼓励团队的话。", "reply": "每一次小小的进步，都在把我们带向更远的地方，一起加油！"},
    {"match": JOKE, "reply": "為什麼程式設計師總是分不清萬聖節和聖誕節？因為 Oct 31 等於 Dec 25。"},
    {"match": "你好", "reply": "你好！我是 Kimi，很高兴为你服务。有什么可以帮你的吗？"},
]
SYSTEM = "你是一位語言藝術大師"
MODEL = "moonshot-v1-8k"
BATCH_TIME_LIMIT_S = 25.0


@dataclass
class ConcurrencyResult:
    """Step 2's measurement."""

    sequential_s: float
    concurrent_s: float

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.concurrent_s if self.concurrent_s > 0 else float("inf")


def _heading(text: str) -> None:
    click.echo()
    click.secho(text, bold=True)


def _code(text: str) -> None:
    click.secho("    " + text.replace("\n", "\n    "), fg="cyan")


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    """``text`` padded to ``width`` terminal columns (CJK characters take two)."""
    return text + " " * max(0, width - _display_width(text))


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    if _display_width(text) <= width:
        return text
    while _display_width(text) > width - 1:
        text = text[:-1]
    return text + "…"


def step_sync(base_url: str, api_key: str, max_tokens: int) -> float:
    """(1) The seed's ``chat_kimi`` as one call; returns seconds taken."""
    from kimiflow import Kimi

    _heading("1. A synchronous call — the seed article's chat_kimi(), in one line")
    _code(f'client = Kimi()\nclient.ask("你好", system="{SYSTEM}")')
    with Kimi(api_key=api_key, base_url=base_url) as client:
        started = time.perf_counter()
        answer = client.ask("你好", system=SYSTEM, model=MODEL, max_tokens=max_tokens)
        elapsed = time.perf_counter() - started
    click.echo(f"  Kimi: {_short(answer, 70)}")
    click.echo(f"  ({elapsed:.2f} s, the program waited the whole time)")
    return elapsed


async def _ask_all(base_url: str, api_key: str, max_tokens: int, *, concurrent: bool,
                   report: Callable[[int, float, str], None]) -> float:
    from kimiflow import AsyncKimi

    async with AsyncKimi(api_key=api_key, base_url=base_url) as client:
        started = time.perf_counter()

        async def one(i: int) -> None:
            answer = await client.ask(QUESTIONS[i], model=MODEL, max_tokens=max_tokens)
            report(i, time.perf_counter() - started, answer)

        if concurrent:
            await asyncio.gather(*(one(i) for i in range(len(QUESTIONS))))
        else:
            for i in range(len(QUESTIONS)):
                await one(i)
        return time.perf_counter() - started


def step_concurrency(base_url: str, api_key: str, max_tokens: int) -> ConcurrencyResult:
    """(2) The same questions one after another, then all at once with ``AsyncKimi``."""
    n = len(QUESTIONS)
    _heading(f"2. The same {n} questions, sequentially and then concurrently, with AsyncKimi")

    def report(i: int, at: float, answer: str) -> None:
        click.echo(f"  {at:5.2f} s  #{i + 1:<2} {_pad(_short(QUESTIONS[i], 30), 30)} → {_short(answer, 40)}")

    _code("for q in questions:\n    await client.ask(q)")
    sequential = asyncio.run(_ask_all(base_url, api_key, max_tokens, concurrent=False, report=report))
    click.echo(f"  sequential: {sequential:.2f} s")
    _code("await asyncio.gather(*(client.ask(q) for q in questions))")
    concurrent = asyncio.run(_ask_all(base_url, api_key, max_tokens, concurrent=True, report=report))
    result = ConcurrencyResult(sequential, concurrent)
    click.echo(f"  concurrent: {concurrent:.2f} s")
    click.secho(f"  speed-up: {result.speedup:.1f}x ({n} requests in flight at once instead of one)",
                fg="green", bold=True)
    return result


def step_stream(base_url: str, api_key: str, max_tokens: int) -> tuple[float, float]:
    """(3) A streamed answer; returns (seconds to first text, seconds in total)."""
    from kimiflow import Kimi

    _heading("3. Streaming (SSE): the answer appears token by token")
    _code('with client.chat.completions.stream(model=..., messages=[...]) as s:\n'
          '    for text in s.text_stream:\n        print(text, end="")')
    first: float | None = None
    with Kimi(api_key=api_key, base_url=base_url) as client:
        started = time.perf_counter()
        click.echo("  Kimi: ", nl=False)
        with client.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": JOKE}], max_tokens=max_tokens,
        ) as s:
            for text in s.text_stream:
                if first is None:
                    first = time.perf_counter() - started
                click.echo(text, nl=False)
                sys.stdout.flush()
            final = s.get_final_completion()
        total = time.perf_counter() - started
    usage = final.usage
    click.echo()
    click.echo(f"  (first text after {first or total:.2f} s, complete after {total:.2f} s; "
               f"{usage.completion_tokens if usage else '?'} tokens, usage included in the stream)")
    return first or total, total


async def _bounded(run: Any) -> Any:
    return await asyncio.wait_for(run, BATCH_TIME_LIMIT_S)


def step_batch(base_url: str, api_key: str, max_tokens: int) -> bool:
    """(4) A small paced batch, if the batch runner is available; returns whether it ran."""
    # Looked up by name: the batch runner is optional in this build, and its absence only skips a step.
    batch = importlib.import_module("kimiflow.batch")
    run_batch = getattr(batch, "run_batch", None)
    if run_batch is None:
        click.echo()
        click.echo("4. (the paced batch runner is not in this build; skipped)")
        return False
    try:
        from kimiflow.batch.progress import default_progress

        progress: Any = default_progress(sys.stdout)
    except ImportError:
        progress = None

    _heading(f"4. A paced batch of {2 * len(QUESTIONS)} requests: progress, limits and cost handled for you")
    _code("kimiflow batch tickets.jsonl -o out.jsonl --tier 1 --concurrency 4")
    with tempfile.TemporaryDirectory(prefix="kimiflow-demo-") as tmp:
        source = Path(tmp) / "tickets.jsonl"
        source.write_text(
            "".join(json.dumps({"custom_id": f"t{i + 1}", "prompt": q, "max_tokens": max_tokens},
                               ensure_ascii=False) + "\n" for i, q in enumerate(QUESTIONS * 2)),
            encoding="utf-8",
        )
        options: dict[str, Any] = {"api_key": api_key, "base_url": base_url, "tier": 1, "concurrency": 4,
                                   "model": MODEL}
        if progress is not None:
            options["progress"] = progress
        result = run_batch(str(source), str(Path(tmp) / "out.jsonl"), **options)
        try:
            # The demo promises to finish in under a minute, so the batch step is bounded too.
            summary = asyncio.run(_bounded(result)) if asyncio.iscoroutine(result) else result
        except asyncio.TimeoutError:
            click.secho(f"  the batch did not finish within {BATCH_TIME_LIMIT_S:g} s and was stopped", fg="red")
            return False
    describe = getattr(summary, "describe", None)
    for line in (describe() if callable(describe) else str(summary)).splitlines():
        click.echo(f"  {line}")
    return True


@click.command(name="demo")
@click.option("--latency", type=click.Choice(["realistic", "fast"]), default="realistic", show_default=True,
              help="The simulator's latency model (fast: no waiting, for quick checks).")
@click.option("--max-tokens", type=click.IntRange(min=1, max=400), default=30, show_default=True,
              help="Answer length for every step.")
@click.option("--no-batch", is_flag=True, help="Skip step 4.")
def demo(latency: str, max_tokens: int, no_batch: bool) -> None:
    """A live, timed tour of sync, async and streaming calls (and a batch) on a local simulator.

    Needs no key and no network: the Kimi API simulator runs inside this process on 127.0.0.1.
    """
    from kimiflow.sim import SimConfig, run_in_thread
    from kimiflow.sim.answers import AnswerScript

    started = time.perf_counter()
    click.secho("kimiflow demo — the Kimi API's three calling styles, live", bold=True)
    with run_in_thread(SimConfig(latency=latency, seed=0, answers=AnswerScript.from_records(DEMO_ANSWERS, "demo"))) as sim:
        click.echo(f"Simulator ({latency} latency) on {sim.base_url}: no key, no network needed.")
        step_sync(sim.base_url, sim.api_key, max_tokens)
        step_concurrency(sim.base_url, sim.api_key, max_tokens)
        step_stream(sim.base_url, sim.api_key, max(max_tokens, 60))
        if not no_batch:
            step_batch(sim.base_url, sim.api_key, max_tokens)
    click.echo()
    click.secho(f"Done in {time.perf_counter() - started:.1f} s. Now point the same commands at the real API:",
                bold=True)
    click.echo("  export MOONSHOT_API_KEY=sk-...          # from https://platform.moonshot.cn/console/api-keys")
    click.echo("  export MOONSHOT_BASE_URL=https://api.moonshot.ai/v1   # only for a global (.ai) key")
    click.echo('  kimiflow chat "你好"                    # or: kimiflow chat  (interactive)')
    click.echo("  kimiflow batch tickets.jsonl -o out.jsonl --tier 1")
    click.echo("  python examples/sync_chat.py            # the seed's three programs, with kimiflow")
