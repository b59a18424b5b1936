"""Per-call options, resolved against the client's configuration (sans-I/O)."""

from __future__ import annotations

from kimiflow.core.config import ClientConfig, TimeoutLike, check_max_retries, coerce_timeouts


class CallOptions:
    """A call's ``timeout=`` and ``max_retries=`` overrides, falling back to the client's settings."""

    __slots__ = ("max_retries", "timeouts")

    def __init__(self, config: ClientConfig, timeout: TimeoutLike, max_retries: int | None) -> None:
        self.timeouts = coerce_timeouts(timeout, config.timeouts) if timeout is not None else config.timeouts
        self.max_retries = config.max_retries if max_retries is None else check_max_retries(max_retries)
