"""Progress displays: plain periodic lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

from rich.console import Console

from kimiflow.batch.progress import PlainProgress, RichProgress, default_progress


def test_plain_progress_prints_periodic_lines_with_rate_eta_tokens_cost_errors() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = PlainProgress(out, interval=10.0, clock=lambda: now[0])
    progress.start(total=100, already_done=20)
    for i in range(30):
        now[0] = i * 0.5
        progress.advance(ok=i % 10 != 0, tokens=100, cost_cny=0.01)
    progress.stop()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("batch: 20/100 done, 0 failed")
    assert len(lines) == 3  # start, one periodic line at 10 s, stop
    assert "50/100 done, 3 failed" in lines[-1] and "3000 tokens" in lines[-1] and "¥0.3000" in lines[-1]
    assert "ETA 0:00:" in lines[-1] and "/min" in lines[-1]


def test_rich_progress_renders_a_bar_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    progress = RichProgress(console)
    progress.start(total=10, already_done=0)
    for _ in range(10):
        progress.advance(ok=True, tokens=5, cost_cny=0.001)
    progress.note("hello")
    progress.stop()
    text = buffer.getvalue()
    assert "10/10" in text and "50 tok" in text and "hello" in text


def test_default_progress_is_plain_when_not_a_terminal() -> None:
    assert isinstance(default_progress(io.StringIO()), PlainProgress)


def test_plain_progress_tick_prints_while_nothing_finishes() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = PlainProgress(out, interval=10.0, clock=lambda: now[0])
    progress.start(total=5, already_done=0)
    for second in range(1, 26):
        now[0] = float(second)
        progress.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("batch: 0/5 done") for line in lines)  # at 0, 10, 20 s


def test_plain_progress_start_continues_from_earlier_runs() -> None:
    out = io.StringIO()
    progress = PlainProgress(out, interval=10.0, clock=lambda: 0.0)
    progress.start(total=300, already_done=196, failed=3, tokens=41_234, cost_cny=1.5)
    progress.advance(ok=True, tokens=100, cost_cny=0.5)
    progress.stop()
    first, last = out.getvalue().splitlines()
    assert first.startswith("batch: 196/300 done, 3 failed") and "41234 tokens, ¥1.5000" in first
    assert last.startswith("batch: 197/300 done, 3 failed") and "41334 tokens, ¥2.0000" in last


def test_about_gives_rough_human_durations() -> None:
    from kimiflow.batch.progress import about

    assert about(50_000 / 3 * 60) == "12 days"
    assert about(3 * 86400) == "3.0 days"
    assert about(5400) == "1.5 hours"
    assert about(600) == "10 minutes"
    assert about(30) == "30 seconds"
