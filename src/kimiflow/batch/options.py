"""``BatchOptions``: everything a batch run is told, validated and resolved once, for the CLI and library alike.

>>> options = BatchOptions(tier=2, model="moonshot-v1-8k", max_attempts=5)
>>> summary = await run_batch("tickets.jsonl", "out.jsonl", options=options)

Limits come from ``limiter`` (any ``kimiflow.limits.Limiter``), else ``limits``, else ``tier`` (0 when
not given) with ``concurrency``/``rpm``/``tpm``/``tpd`` overriding its preset. Messages name these
parameters; the CLI translates them to its flags.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kimiflow.batch.inputs import InputDefaults
from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.loops import DEFAULT_MAX_VALIDATION_RETRIES
from kimiflow.core.retry import RetryPolicy
from kimiflow.limits import Limiter, RateLimits

UNREACHABLE_AFTER = 10
"""Requests that in a row end unable to connect (no success since) before the run stops."""
MAX_RATE_LIMITED_RETRIES = 20
"""A request answered 429 more often than this fails (a limit far tighter than configured)."""


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch. Immutable; every value is checked when it is built.

    ``max_attempts`` counts sends per request for transient failures (5xx, resets, timeouts, a
    malformed 200), backing off from ``backoff_initial`` doubling up to ``backoff_max`` seconds; 429s
    are retried after the limiter's pause, at most ``MAX_RATE_LIMITED_RETRIES`` times. ``model``,
    ``max_tokens`` and ``system`` apply to lines that set none. ``api_key``/``base_url``/``timeout``
    configure the client the run builds when the caller passes none.
    """

    limiter: Limiter | None = None
    limits: RateLimits | None = None
    tier: int | None = None
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    max_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    errors: str | Path | None = None
    model: str | None = None
    max_tokens: int | None = None
    system: str | None = None
    skip_invalid: bool = False
    retry_failed: bool = False
    grace_seconds: float = 30.0
    unreachable_after: int = UNREACHABLE_AFTER
    heartbeat_seconds: float = 1.0
    handle_signals: bool = False
    resume_command: str | None = None
    api_key: str | None = None
    base_url: str | None = None
    timeout: float | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    schema: dict[str, Any] | None = None
    """A JSON Schema every answer must match (``kimiflow batch --schema``): each line is asked with
    ``parse()``'s re-ask loop and its output line carries the validated object as ``parsed``. Checked
    against Kimi's dialect (MFJS) when the options are built, before anything is sent."""
    max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES
    """With ``schema``: re-asks after an invalid answer, inside the line's one journal entry."""
    tier_defaulted: bool | None = None
    """Whether the limits are tier 0's only because none were chosen (the run then says how long it
    will take at that pace). ``None``: worked out from the other fields."""
    rate_limits: RateLimits = field(init=False, repr=False)
    """The limits resolved from ``limiter`` / ``limits`` / ``tier`` and overrides."""

    def __post_init__(self) -> None:
        _positive_int("max_attempts", self.max_attempts)
        _positive_int("unreachable_after", self.unreachable_after)
        for name in ("max_tokens", "concurrency", "rpm", "tpm", "tpd"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        if self.tier is not None and (isinstance(self.tier, bool) or self.tier not in range(6)):
            raise InvalidArgumentError(f"tier= must be one of Kimi's tiers 0 to 5, got {self.tier!r}")
        for name in ("grace_seconds", "backoff_initial"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"{name}= must not be negative, got {getattr(self, name)!r}")
        if self.backoff_max < self.backoff_initial:
            raise InvalidArgumentError(f"backoff_max= ({self.backoff_max}) must be at least backoff_initial= "
                                       f"({self.backoff_initial})")
        if self.heartbeat_seconds <= 0:
            raise InvalidArgumentError(f"heartbeat_seconds= must be positive, got {self.heartbeat_seconds!r}")
        if self.schema is not None:
            _check_schema(self.schema)
        if isinstance(self.max_validation_retries, bool) or not isinstance(self.max_validation_retries, int) \
                or self.max_validation_retries < 0:
            raise InvalidArgumentError(f"max_validation_retries= must be a whole number of at least 0, got "
                                       f"{self.max_validation_retries!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidArgumentError(f"timeout= must be positive seconds, got {self.timeout!r}")
        given = [name for name in ("limiter", "limits") if getattr(self, name) is not None]
        overrides = {k: getattr(self, k) for k in ("concurrency", "rpm", "tpm", "tpd") if getattr(self, k) is not None}
        if len(given) > 1 or (given and (self.tier is not None or overrides)):
            raise InvalidArgumentError(
                "give the limits one way: limiter=, or limits=, or tier= (with concurrency=/rpm=/tpm=/tpd= "
                f"overriding it); got {', '.join(given + (['tier'] if self.tier is not None else []) + list(overrides))}"
            )
        if self.limiter is not None:
            if not isinstance(self.limiter, Limiter):
                raise InvalidArgumentError(f"limiter= must implement kimiflow.limits.Limiter, got "
                                           f"{type(self.limiter).__name__}")
            resolved = self.limiter.limits
        elif self.limits is not None:
            resolved = self.limits
        else:
            resolved = RateLimits.for_tier(0 if self.tier is None else self.tier, **overrides)
        object.__setattr__(self, "rate_limits", resolved)
        if self.tier_defaulted is None:
            complete = all(k in overrides for k in ("concurrency", "rpm", "tpm"))
            object.__setattr__(self, "tier_defaulted", not given and self.tier is None and not complete)

    @classmethod
    def from_keywords(cls, **keywords: Any) -> BatchOptions:
        """Options from ``run_batch``'s keyword form; an unknown keyword is named with the known ones."""
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise InvalidArgumentError(f"run_batch() got unknown option(s) {', '.join(unknown)}; "
                                       f"known: {', '.join(sorted(known))}")
        return cls(**keywords)

    def with_limiter(self, limiter: Limiter) -> BatchOptions:
        """A copy paced by ``limiter`` (e.g. a ``RedisLimiter`` built from these ``rate_limits``) instead."""
        return replace(self, limiter=limiter, limits=None, tier=None, concurrency=None, rpm=None, tpm=None,
                       tpd=None, tier_defaulted=self.tier_defaulted)

    @property
    def defaults(self) -> InputDefaults:
        """The values applied to lines that do not set them."""
        return InputDefaults(model=self.model, max_tokens=self.max_tokens, system=self.system)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The batch's knobs for the one backoff formula: ``max_attempts`` sends, 0.5 s doubling to 20 s."""
        return RetryPolicy(max_retries=self.max_attempts - 1, initial_delay=self.backoff_initial,
                           max_delay=self.backoff_max, jitter=0.5)


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(f"{name}= must be a whole number of at least 1, got {value!r}")


def _check_schema(schema: object) -> None:
    """``schema=`` must be a JSON Schema object Kimi can take once normalised (path and rule otherwise)."""
    if not isinstance(schema, dict):
        raise InvalidArgumentError(f"schema= must be a JSON Schema object (a dict such as {{\"type\": \"object\", "
                                   f"...}}), got {type(schema).__name__}")
    if schema.get("type") != "object":
        raise InvalidArgumentError("schema= must describe a JSON object (\"type\": \"object\" at the root): Kimi's "
                                   "structured answers are objects; wrap other values in an object with one property")
    from kimiflow.core.schema import to_mfjs  # the normaliser is heavy: loaded only for a schema

    to_mfjs(schema)  # InvalidSchemaError (an InvalidArgumentError) with the path and the rule
