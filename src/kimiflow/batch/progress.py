"""Progress of a batch run: a rich bar on a terminal, plain periodic lines otherwise.

The runner reports through the small ``Progress`` interface, so tests and library users can plug
in their own (or ``NullProgress``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    """What the runner tells a progress display.

    ``start`` gets the figures of earlier runs of the batch (a resume) so the display continues
    from them; ``tick`` is called about once a second whatever happens, so a display can show
    that the run is alive while it waits for the rate limiter.
    """

    def start(self, total: int, already_done: int, *, failed: int = 0, tokens: int = 0,
              cost_cny: float = 0.0) -> None: ...

    def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None: ...

    def tick(self) -> None: ...

    def note(self, message: str) -> None: ...

    def stop(self) -> None: ...


class NullProgress:
    """Shows nothing."""

    def start(self, total: int, already_done: int, *, failed: int = 0, tokens: int = 0,
              cost_cny: float = 0.0) -> None:
        pass

    def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
        pass

    def tick(self) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


class _Counts:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.total = 0
        self.done = 0
        self.ok = 0
        self.failed = 0
        self.tokens = 0
        self.cost = 0.0
        self.started = clock()
        self.done_at_start = 0

    def rate_per_min(self) -> float:
        elapsed = self.clock() - self.started
        finished_here = self.done - self.done_at_start
        return finished_here / elapsed * 60.0 if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate_per_min()
        if rate <= 0:
            return None
        return (self.total - self.done) / rate * 60.0

    def seed(self, total: int, already_done: int, failed: int, tokens: int, cost: float) -> None:
        """Continue from the figures of earlier runs of the same batch."""
        self.total, self.done, self.done_at_start = total, already_done, already_done
        self.failed, self.ok = failed, already_done - failed
        self.tokens, self.cost = tokens, cost

    def record(self, ok: bool, tokens: int, cost: float) -> None:
        self.done += 1
        self.ok += ok
        self.failed += not ok
        self.tokens += tokens
        self.cost += cost


def about(seconds: float) -> str:
    """A rough human duration: ``about(950_000)`` → ``"11 days"``, ``about(5400)`` → ``"1.5 hours"``."""
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 1.5 * size:
            value = seconds / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{max(seconds, 0.0):.0f} seconds"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """One line every ``interval`` seconds (and at the end), for logs and pipes; also while waiting.

    >>> PlainProgress(sys.stderr, interval=10)
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.counts = _Counts(clock)
        self._last = -float("inf")

    def start(self, total: int, already_done: int, *, failed: int = 0, tokens: int = 0,
              cost_cny: float = 0.0) -> None:
        self.counts.seed(total, already_done, failed, tokens, cost_cny)
        self.counts.started = self.counts.clock()
        self._last = self.counts.started
        self._line()

    def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
        self.counts.record(ok, tokens, cost_cny)
        self.tick()

    def tick(self) -> None:
        """Print a line if ``interval`` seconds passed since the last one (finished or not)."""
        now = self.counts.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def note(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def stop(self) -> None:
        self._line()

    def _line(self) -> None:
        c = self.counts
        print(
            f"batch: {c.done}/{c.total} done, {c.failed} failed, {c.rate_per_min():.0f}/min, "
            f"ETA {_eta(c.eta_seconds())}, {c.tokens} tokens, ¥{c.cost:.4f}",
            file=self.stream,
            flush=True,
        )


class RichProgress:
    """A live rich progress bar: done/total, rate, ETA, tokens, cost so far, errors."""

    def __init__(self, console: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichBar

        self.console = console or Console(stderr=True)
        self.counts = _Counts(clock)
        self._bar = RichBar(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/min"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tok  ¥{task.fields[cost]}  [red]{task.fields[errors]} errors"),
            console=self.console,
            transient=False,
        )
        self._task: Any = None

    def start(self, total: int, already_done: int, *, failed: int = 0, tokens: int = 0,
              cost_cny: float = 0.0) -> None:
        self.counts.seed(total, already_done, failed, tokens, cost_cny)
        self.counts.started = self.counts.clock()
        self._bar.start()
        self._task = self._bar.add_task("batch", total=total, completed=already_done, rate="0",
                                        tokens=tokens, cost=f"{cost_cny:.4f}", errors=failed)

    def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
        self.counts.record(ok, tokens, cost_cny)
        self.tick()

    def tick(self) -> None:
        """Refresh the rate (it falls while the run waits)."""
        c = self.counts
        if self._task is None:
            return
        self._bar.update(self._task, completed=c.done, rate=f"{c.rate_per_min():.0f}", tokens=c.tokens,
                         cost=f"{c.cost:.4f}", errors=c.failed)

    def note(self, message: str) -> None:
        self._bar.console.print(message)

    def stop(self) -> None:
        self._bar.stop()


def default_progress(stream: TextIO | None = None) -> Progress:
    """``RichProgress`` when ``stream`` (stderr by default) is a terminal, ``PlainProgress`` otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichProgress()
    return PlainProgress(stream)
