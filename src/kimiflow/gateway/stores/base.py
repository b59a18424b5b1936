"""What every gateway store shares: the ``GatewayStore`` protocol, the ledger row and the UTC day key."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from kimiflow.gateway.keys import KeyLimits, KeyRecord

USAGE_GROUPS = ("day", "model", "key")


@dataclass(frozen=True)
class LedgerRow:
    """One request, as billed. ``ended`` says how it ended; ``usage_source`` is 'kimi' or 'estimated'."""

    request_id: str
    ts: float
    key_id: str
    model: str
    status: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_cny: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_request_id: str | None = None
    ended: str = "ok"
    usage_source: str = "kimi"


class GatewayStore(Protocol):
    """What the gateway needs from a database."""

    def create_key(self, record: KeyRecord, *, actor: str) -> None: ...
    def update_key(self, name: str, limits: KeyLimits, *, actor: str) -> KeyRecord: ...
    def revoke_key(self, name: str, *, actor: str) -> KeyRecord: ...
    def get_key(self, name: str) -> KeyRecord | None: ...
    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]: ...
    def keys_version(self) -> int: ...
    def write_ledger(self, rows: Sequence[LedgerRow]) -> int: ...
    def ledger_rows(self, *, key_id: str | None = None) -> list[LedgerRow]: ...
    def spend_since(self, key_id: str, day: str) -> float: ...
    def recent_problems(self, *, key_id: str | None = None, limit: int = 20) -> list[LedgerRow]: ...
    def usage(self, *, key_id: str | None = None, since: str | None = None, by: str = "day") -> list[dict[str, Any]]: ...
    def audit(self, actor: str, action: str, key_id: str | None, details: dict[str, Any]) -> None: ...
    def add_file(self, file_id: str, key_id: str) -> None: ...
    def file_owner(self, file_id: str) -> str | None: ...
    def files_of(self, key_id: str) -> set[str]: ...
    def remove_file(self, file_id: str) -> None: ...
    def audit_log(self) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


def utc_day(ts: float) -> str:
    """The UTC calendar day of a Unix time, as the rollups key it (``2026-12-02``)."""
    return _utc_day(int(ts // 86_400))


@functools.lru_cache(maxsize=64)
def _utc_day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


