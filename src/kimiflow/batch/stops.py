"""Why a batch run stops, in words: each stop's summary status and the message that says what to do.

Messages name ``run_batch``'s parameters (``tier=``, ``api_key=``); the CLI translates them to flags.
"""

from __future__ import annotations

from pathlib import Path

from kimiflow.batch.progress import about
from kimiflow.batch.summary import (
    AUTH_FAILED,
    INPUT_CHANGED,
    PERMISSION_DENIED,
    QUOTA_EXCEEDED,
    STORE_FAILED,
    UNREACHABLE,
)
from kimiflow.core.errors import APIConnectionError, AuthenticationError, PermissionDeniedError, QuotaExceededError
from kimiflow.limits import LimiterState, RateLimits


def default_tier_note(limits: RateLimits, pending: int) -> str:
    """How long ``pending`` requests take at the pace tier 0 allows (its RPM, after the margin)."""
    rpm = LimiterState(limits).effective()["rpm"]
    minutes = pending / rpm if rpm > 0 else 0.0
    return (f"no tier= given, so tier 0 limits apply ({limits.concurrency} in flight, {limits.rpm} requests/min): "
            f"{pending:,} request(s) will take about {about(minutes * 60)}; pass tier=N for your account's tier")


def quota_exhausted(exc: QuotaExceededError) -> tuple[str, str]:
    return QUOTA_EXCEEDED, (f"stopped: the account's quota is exhausted ({exc}); top up the balance, then run "
                            "the same command again")


def access_denied(exc: AuthenticationError | PermissionDeniedError, base_url: str) -> tuple[str, str]:
    """Summary status and message for a key the server will not accept."""
    platforms = ("keys from platform.moonshot.cn work only with https://api.moonshot.cn/v1, keys from "
                 "platform.moonshot.ai only with https://api.moonshot.ai/v1")
    if isinstance(exc, AuthenticationError):
        return AUTH_FAILED, (
            f"stopped: the API key was rejected ({exc}); nothing more was sent. Check MOONSHOT_API_KEY "
            f"(or api_key=) and that it belongs to {base_url}: {platforms}. Then run the same command again"
        )
    return PERMISSION_DENIED, (
        f"stopped: permission denied ({exc}); nothing more was sent. Check that the key may use this model "
        f"and endpoint and that it belongs to {base_url} ({platforms}). Then run the same command again"
    )


def unreachable(base_url: str, exc: APIConnectionError) -> tuple[str, str]:
    return UNREACHABLE, (f"stopped: cannot reach {base_url}: {exc}; nothing more was sent; re-run the same "
                         "command when it is reachable")


def store_failed(output: Path, exc: BaseException) -> tuple[str, str]:
    """A result could not be made durable: nothing is lost, but nothing more may be sent."""
    return STORE_FAILED, (
        f"stopped: could not record a result in {output} or its journal ({type(exc).__name__}: {exc}); nothing "
        "more was sent. Free disk space or fix the file's permissions, then run the same command again: "
        "results already recorded are kept"
    )


def input_changed(input: Path, detail: str) -> tuple[str, str]:
    return INPUT_CHANGED, (
        f"stopped: {input} changed while the batch ran: {detail}; nothing more was sent. Restore the original "
        "file and run the same command again, or write to a new output to start a new batch"
    )
