"""Moonshot's error answers: status, ``error.type`` and the message templates of docs/kimi-api.md §5.

Handlers raise ``SimError``; the app turns it into ``{"error":{"message","type"}}`` with the right
status. Messages follow the 2026 table (§5.2) where it changed, the 2024 table elsewhere.
"""

from __future__ import annotations

import hashlib

import msgspec

ORG_ID = "org-kimiflowsim0000"
"""The organization id the simulator puts in rate-limit and quota messages."""


class SimError(Exception):
    """An error the simulator answers with a Moonshot error body.

    >>> raise SimError(400, "invalid_request_error", "Invalid request: model is required")
    """

    def __init__(
        self, status: int, type: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers or {}

    def body(self) -> bytes:
        """The JSON error body, message first then type (the order seen in captures)."""
        return msgspec.json.encode({"error": {"message": self.message, "type": self.type}})


def ak_id(key: str) -> str:
    """A stable, non-reversible id for an API key, used where Kimi prints ``<{ak-id}>``."""
    return "ak-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def invalid_request(details: str) -> SimError:
    """400 ``invalid_request_error`` "Invalid request: {details}"."""
    return SimError(400, "invalid_request_error", f"Invalid request: {details}")


def bad_request(message: str) -> SimError:
    """400 ``invalid_request_error`` with a message that is not in the "Invalid request:" form."""
    return SimError(400, "invalid_request_error", message)


def model_not_found(model: str) -> SimError:
    return SimError(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")


def missing_key() -> SimError:
    # 2026 table (D4): a missing or incorrect key is incorrect_api_key_error.
    return SimError(401, "incorrect_api_key_error", "Incorrect API key provided")


def wrong_key() -> SimError:
    return SimError(401, "invalid_authentication_error", "Invalid Authentication")


def concurrency_reached(key: str, limit: int, after_s: int) -> SimError:
    return SimError(
        429,
        "rate_limit_reached_error",
        f"Your account {ORG_ID}<{ak_id(key)}> request reached organization max concurrency: {limit}, "
        f"please try again after {after_s} seconds",
    )


def rpm_reached(key: str, limit: int, after_s: int, *, retry_after_header: bool = False) -> SimError:
    headers = {"Retry-After": str(after_s)} if retry_after_header else None
    return SimError(
        429,
        "rate_limit_reached_error",
        f"Your account {ORG_ID}<{ak_id(key)}> request reached organization max RPM: {limit}, "
        f"please try again after {after_s} seconds",
        headers=headers,
    )


def tpm_reached(key: str, current: int, limit: int) -> SimError:
    return SimError(
        429,
        "rate_limit_reached_error",
        f"Your account {ORG_ID}<{ak_id(key)}> request reached organization TPM rate limit, "
        f"current:{current}, limit:{limit}",
    )


def tpd_reached(key: str, current: int, limit: int) -> SimError:
    # No space after the comma: that is how the documented template reads.
    return SimError(
        429,
        "rate_limit_reached_error",
        f"Your account {ORG_ID}<{ak_id(key)}> request reached organization TPD rate limit,"
        f"current:{current}, limit:{limit}",
    )


def engine_overloaded() -> SimError:
    return SimError(429, "engine_overloaded_error", "The engine is currently overloaded, please try again later")


def quota_exceeded(balance: float) -> SimError:
    return SimError(
        429,
        "exceeded_current_quota_error",
        f"You exceeded your current token quota: <{ORG_ID}> {balance:.6f}, please check your account balance",
    )


def account_inactive(key: str) -> SimError:
    """The 2024 form of the quota error: 403 for a suspended account."""
    return SimError(
        403,
        "exceeded_current_quota_error",
        f"Your account {ORG_ID}<{ak_id(key)}> is not active, current state: suspended, "
        "you may consider to check your account balance",
    )


def format_size(n: int) -> str:
    """``100MB``-style size for the file-size message."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def not_found_path(path: str) -> SimError:
    """404 for a path the API does not have."""
    return SimError(404, "resource_not_found_error", f"Not found the path {path}")


def method_not_allowed(method: str, path: str) -> SimError:
    return SimError(405, "invalid_request_error", f"Invalid request: {method} is not allowed on {path}")
