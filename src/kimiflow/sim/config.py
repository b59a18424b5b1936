"""How a simulator instance behaves: tier, latency, seed, keys, balance, faults, limits, time.

Everything time-related goes through ``clock`` and ``sleep`` so tests can run a tier-0 minute in
microseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.tiers import TIERS

DEFAULT_KEY = "sk-sim-kimiflow-local-0000000000000000"
"""The key a simulator accepts when ``SimConfig.keys`` is empty."""

FAULT_NAMES: tuple[str, ...] = (
    "429",
    "429-retry-after",
    "overloaded",
    "quota",
    "quota-403",
    "500",
    "502",
    "503",
    "reset",
    "cut",
    "malformed",
    "error-event",
    "stall",
    "trickle",
    "keepalive",
    "truncated-200",
    "echo-key",
    "unterminated",
    "invalid-json",
    "schema-violation",
    "truncated-json",
    "empty-after-reasoning",
)
"""Every fault the simulator can inject, by the name used in ``fault_rates`` and the fault header."""


@dataclass(frozen=True)
class LatencyModel:
    """Time to first token plus a steady token rate, with optional seeded jitter.

    ``jitter`` is a fraction: 0.4 spreads each figure uniformly over ±40 %. ``tokens_per_second``
    of 0 means "no per-token delay".

    >>> LatencyModel(ttft_s=0.5, tokens_per_second=60, jitter=0.4)
    """

    ttft_s: float = 0.0
    tokens_per_second: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tokens_per_second < 0:
            raise InvalidArgumentError("LatencyModel: ttft_s and tokens_per_second must be >= 0")
        if not 0 <= self.jitter < 1:
            raise InvalidArgumentError("LatencyModel: jitter is a fraction in [0, 1), e.g. 0.4 for ±40 %")

    @property
    def is_instant(self) -> bool:
        """True when no request ever sleeps (the ``fast`` preset)."""
        return self.ttft_s == 0 and self.tokens_per_second == 0

    def sample(self, rng: random.Random) -> tuple[float, float]:
        """One request's (time to first token, seconds per token), jittered with ``rng``."""
        spread_ttft = 1 + rng.uniform(-self.jitter, self.jitter) if self.jitter else 1.0
        spread_tps = 1 + rng.uniform(-self.jitter, self.jitter) if self.jitter else 1.0
        per_token = 1.0 / (self.tokens_per_second * spread_tps) if self.tokens_per_second else 0.0
        return self.ttft_s * spread_ttft, per_token


LATENCY_PRESETS: dict[str, LatencyModel] = {
    "fast": LatencyModel(),
    # 300–700 ms to the first token, 40–80 tokens/s: what Kimi's moonshot-v1 / k2 feel like.
    "realistic": LatencyModel(ttft_s=0.5, tokens_per_second=60.0, jitter=0.33),
}


@runtime_checkable
class ScriptedAnswers(Protocol):
    """What ``SimConfig.answers`` holds: a ``kimiflow.sim.answers.AnswerScript`` (defined there, not
    here, because scripts build on simulator modules that import this one)."""

    source: str

    def __len__(self) -> int: ...

    def find(self, req: Any, body: Mapping[str, Any], used: MutableMapping[int, int]) -> Any: ...


def _default_sleep(seconds: float) -> Awaitable[None]:
    return asyncio.sleep(seconds)


@dataclass(frozen=True)
class SimConfig:
    """Configuration of one simulator.

    >>> SimConfig(tier=1, latency="realistic", seed=7, fault_rates={"500": 0.05})

    - ``tier``: ``None`` (no limits, the default for tests) or 0..5 (docs/kimi-api.md §6.1).
    - ``latency``: ``"fast"`` (never sleeps), ``"realistic"`` or a ``LatencyModel``.
    - ``keys``: accepted API keys; empty means one default key (``Simulator.api_key``).
    - ``balance``: starting account balance in CNY; every completed request's cost is deducted.
    - ``fault_rates``: fault name -> probability per request (seeded by ``seed``).
    - ``clock``/``sleep``: injected time, so tests advance a fake clock instead of waiting.
    """

    tier: int | None = None
    latency: str | LatencyModel = "fast"
    seed: int = 0
    keys: tuple[str, ...] = ()
    balance: float = 1000.0
    fault_rates: Mapping[str, float] = field(default_factory=dict)
    max_file_bytes: int = 100 * 1024 * 1024
    max_files: int = 1000
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = _default_sleep
    default_max_tokens: int | None = None
    """The max_tokens charged for rate limiting when a request sends none (§6.3); ``None``: the model's
    own default from the catalog, as Kimi charges it."""
    catalog: str = "full"
    """``"full"``: every model kimiflow knows; ``"online"``: only the models still served in late 2026,
    the retired ids answering Kimi's 404 (docs/kimi-api.md §2.5)."""
    strict_conversations: bool = True
    """Refuse conversations Kimi refuses (missing tool replies or ``reasoning_content``, duplicate tool-call
    ids); ``False`` accepts them, for users who also test against a laxer provider."""
    answers: ScriptedAnswers | None = None
    """Scripted answers, e.g. ``AnswerScript.load("answers.jsonl")`` (``kimiflow.sim.answers``);
    ``None``: every answer is generated."""
    batch_hour_s: float = 1.0
    """Batch API time compression: real seconds one simulated hour takes (1.0: a 24h window ends after
    24 s; 0.01 for tests). Batch timestamps are simulated epoch seconds (``kimiflow.sim.batches``)."""
    batch_lines_per_hour: int = 36_000
    """Batch lines the simulator answers per simulated hour; a small value makes a batch expire."""
    batch_max_lines: int = 50_000
    """Lines per batch input file (Kimi publishes none; OpenAI's limit) [UNCONFIRMED]."""

    def __post_init__(self) -> None:
        if self.tier is not None and self.tier not in TIERS:
            raise InvalidArgumentError(f"tier must be None or one of 0..5, got {self.tier!r}")
        if isinstance(self.latency, str) and self.latency not in LATENCY_PRESETS:
            raise InvalidArgumentError(
                f"unknown latency preset {self.latency!r}: use one of {', '.join(LATENCY_PRESETS)} "
                "or a LatencyModel(...)"
            )
        if isinstance(self.keys, str):
            raise InvalidArgumentError("keys must be a tuple of strings, e.g. keys=('sk-sim-a',), not one string")
        for key in self.keys:
            if not key or any(ch.isspace() for ch in key):
                raise InvalidArgumentError("every simulator key must be a non-empty string without whitespace")
        total = 0.0
        for name, rate in self.fault_rates.items():
            if name not in FAULT_NAMES:
                raise InvalidArgumentError(f"unknown fault {name!r}: known faults are {', '.join(FAULT_NAMES)}")
            if not 0 <= rate <= 1:
                raise InvalidArgumentError(f"fault rate for {name!r} must be in [0, 1], got {rate!r}")
            total += rate
        if total > 1:
            raise InvalidArgumentError(f"fault rates add up to {total:g}; their sum must be at most 1")
        if self.max_file_bytes <= 0 or self.max_files <= 0:
            raise InvalidArgumentError("max_file_bytes and max_files must be positive")
        if self.default_max_tokens is not None and self.default_max_tokens <= 0:
            raise InvalidArgumentError("default_max_tokens must be positive")
        if not self.batch_hour_s > 0:
            raise InvalidArgumentError(f"batch_hour_s must be positive seconds, got {self.batch_hour_s!r}")
        if self.batch_lines_per_hour < 1 or self.batch_max_lines < 1:
            raise InvalidArgumentError("batch_lines_per_hour and batch_max_lines must be at least 1")
        if self.catalog not in ("full", "online"):
            raise InvalidArgumentError(f"catalog must be 'full' or 'online', got {self.catalog!r}")
        if self.answers is not None and not isinstance(self.answers, ScriptedAnswers):
            raise InvalidArgumentError(
                f"answers must be a loaded script, not a {type(self.answers).__name__}: use "
                "answers=AnswerScript.load('answers.jsonl') (from kimiflow.sim.answers)"
            )

    @property
    def latency_model(self) -> LatencyModel:
        """The resolved latency model (presets looked up by name)."""
        if isinstance(self.latency, LatencyModel):
            return self.latency
        return LATENCY_PRESETS[self.latency]

    @property
    def accepted_keys(self) -> tuple[str, ...]:
        """The keys the simulator accepts (the default key when none were configured)."""
        return self.keys or (DEFAULT_KEY,)


def parse_fault_rates(spec: str) -> dict[str, float]:
    """Parse ``"500=0.05,reset=0.02"`` into ``{"500": 0.05, "reset": 0.02}``.

    >>> parse_fault_rates("500=0.05,reset=0.02")
    {'500': 0.05, 'reset': 0.02}
    """
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise InvalidArgumentError(f"fault rate {item!r} needs the form NAME=RATE, e.g. 500=0.05")
        if name not in FAULT_NAMES:
            raise InvalidArgumentError(f"unknown fault {name!r}: known faults are {', '.join(FAULT_NAMES)}")
        try:
            rates[name] = float(value)
        except ValueError:
            raise InvalidArgumentError(f"fault rate for {name!r} must be a number, got {value!r}") from None
    return rates
