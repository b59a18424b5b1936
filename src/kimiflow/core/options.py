"""Per-call options, resolved against the client's configuration (sans-I/O)."""

from __future__ import annotations

import dataclasses

from kimiflow.core.config import DEFAULT_MAX_RETRIES, ClientConfig, TimeoutLike, check_max_retries, coerce_timeouts
from kimiflow.core.errors import ConfigError
from kimiflow.core.retry import RetryPolicy


def resolve_retry_policy(max_retries: int | None, retry_policy: RetryPolicy | None) -> RetryPolicy:
    """The client's retry policy, with the one rule for how many retries it allows.

    An explicit ``max_retries`` wins; otherwise the ``retry_policy``'s own ``max_retries``; otherwise
    ``DEFAULT_MAX_RETRIES`` (2). The returned policy carries that number, so ``client.max_retries``,
    the configuration and the policy always agree.

    >>> resolve_retry_policy(None, RetryPolicy(max_retries=5)).max_retries
    5
    >>> resolve_retry_policy(1, RetryPolicy(max_retries=5)).max_retries
    1
    """
    if retry_policy is None:
        return RetryPolicy(max_retries=DEFAULT_MAX_RETRIES if max_retries is None else check_max_retries(max_retries))
    if not isinstance(retry_policy, RetryPolicy):
        raise ConfigError(f"retry_policy must be a kimiflow.RetryPolicy, e.g. RetryPolicy(max_retries=5), "
                          f"got {type(retry_policy).__name__}")
    if max_retries is None:
        try:
            check_max_retries(retry_policy.max_retries)
        except ConfigError as exc:
            raise ConfigError(f"retry_policy: {exc}") from None
        return retry_policy
    # replace(), not RetryPolicy(...): a subclass with its own backoff stays itself.
    return dataclasses.replace(retry_policy, max_retries=check_max_retries(max_retries))


class CallOptions:
    """A call's ``timeout=`` and ``max_retries=`` overrides, falling back to the client's settings."""

    __slots__ = ("max_retries", "timeouts")

    def __init__(self, config: ClientConfig, timeout: TimeoutLike, max_retries: int | None) -> None:
        self.timeouts = coerce_timeouts(timeout, config.timeouts) if timeout is not None else config.timeouts
        self.max_retries = config.max_retries if max_retries is None else check_max_retries(max_retries)
