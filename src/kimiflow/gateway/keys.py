"""Virtual keys: how they are made, hashed, shown and limited.

A virtual key is ``kfg-`` + 43 URL-safe random characters. It is shown once, at creation; the
store keeps only ``HMAC-SHA256(server secret, key)`` and a display form (prefix + last 4). Where the
server secret lives is the store's business (``GatewayStore.key_secret``): a SQLite store keeps it in
a file beside the database, created with mode 0600 on first use, so a stolen database file alone
cannot be used to test guessed keys offline; a PostgreSQL store keeps it in the database, so every
replica on every machine hashes keys alike.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kimiflow.core.errors import InvalidArgumentError

KEY_PREFIX = "kfg-"
BUDGET_PERIODS = ("day", "month", "total")
SECRET_BYTES = 32


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; ``None`` means unlimited (the account's tier still applies above all keys).

    >>> KeyLimits(rpm=60, budget_cny=5.0, budget_period="day", models=("moonshot-v1-8k",))
    """

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget_cny: float | None = None
    budget_period: str = "month"
    models: tuple[str, ...] = ()
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "concurrency", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.budget_cny is not None and (not isinstance(self.budget_cny, (int, float)) or self.budget_cny < 0):
            raise InvalidArgumentError(f"--budget-cny must be a number of CNY of at least 0, got {self.budget_cny!r}")
        if self.budget_period not in BUDGET_PERIODS:
            raise InvalidArgumentError(
                f"--budget-period must be one of {', '.join(BUDGET_PERIODS)}, got {self.budget_period!r}"
            )
        for model in self.models:
            if not model or model.strip() != model or "," in model:
                raise InvalidArgumentError(f"--models takes model ids separated by commas, got {model!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    def with_changes(self, **changes: Any) -> KeyLimits:
        """A copy with the given fields replaced (validated again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class KeyRecord:
    """One virtual key as stored: never the key itself, only its keyed hash and display form."""

    id: str
    name: str
    key_hash: str
    display: str
    limits: KeyLimits = field(default_factory=KeyLimits)
    created: float = 0.0
    revoked: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_dict(self) -> dict[str, Any]:
        """The public view (what ``keys show --json`` and ``/admin/keys`` print): no hash."""
        return {
            "id": self.id,
            "name": self.name,
            "key": self.display,
            "limits": self.limits.to_dict(),
            "created": self.created,
            "revoked": self.revoked,
        }


def new_key() -> str:
    """A fresh random virtual key."""
    return KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def display_form(key: str) -> str:
    """``kfg-AbCd…wxyz``: enough to recognise a key, not enough to use it."""
    return f"{key[: len(KEY_PREFIX) + 4]}…{key[-4:]}"


def hash_key(secret: bytes, key: str) -> str:
    """The keyed hash stored for ``key`` (hex HMAC-SHA256 with the server secret)."""
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def read_secret(path: Path) -> bytes | None:
    """The server secret in the file ``path``, or ``None`` when there is no such file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < SECRET_BYTES:
        raise InvalidArgumentError(
            f"the gateway secret {path} is shorter than {SECRET_BYTES} bytes; restore it from a backup "
            "(without it no virtual key can be checked)"
        )
    return data


def new_secret() -> bytes:
    """A fresh random server secret."""
    return secrets.token_bytes(SECRET_BYTES)


def load_or_create_secret(path: Path) -> bytes:
    """Read the server secret at ``path``; create it (mode 0600, never overwritten) on first use."""
    data = read_secret(path)
    if data is not None:
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it a moment ago: give it a moment to write it
        for _ in range(100):
            if len(path.read_bytes()) >= SECRET_BYTES:
                break
            time.sleep(0.01)
        data = read_secret(path)
        if data is None:
            raise InvalidArgumentError(f"the gateway secret {path} vanished while it was being read") from None
        return data
    data = new_secret()
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return data
