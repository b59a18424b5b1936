"""Key and usage operations shared by ``kimiflow gateway keys|usage`` and the ``/admin/`` API."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.gateway.keys import (
    KeyLimits,
    KeyRecord,
    display_form,
    hash_key,
    new_key,
    new_key_id,
)
from kimiflow.gateway.store import GatewayStore

LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "budget_cny", "budget_period", "models", "max_tokens")


def secret_path(db_path: Path) -> Path:
    """The local secret file beside the state path: ``gateway.sqlite`` -> ``gateway.sqlite.secret``.

    A SQLite store keeps the server secret there; a PostgreSQL store keeps it in the database and
    reads this file only once, to adopt a secret from before (see ``GatewayStore.key_secret``)."""
    return db_path.with_name(db_path.name + ".secret")


def limits_from(data: dict[str, Any], base: KeyLimits | None = None) -> KeyLimits:
    """Limits from a JSON object or CLI options; unknown fields are refused by name."""
    unknown = sorted(set(data) - set(LIMIT_FIELDS))
    if unknown:
        raise InvalidArgumentError(f"unknown limit field(s) {', '.join(unknown)}; known: {', '.join(LIMIT_FIELDS)}")
    changes = dict(data)
    if "models" in changes:
        models = changes["models"]
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        if models is None:
            models = []
        if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
            raise InvalidArgumentError("models must be a list of model ids or a comma-separated string")
        changes["models"] = tuple(models)
    if "budget_cny" in changes and isinstance(changes["budget_cny"], int) and not isinstance(changes["budget_cny"], bool):
        changes["budget_cny"] = float(changes["budget_cny"])
    if "budget_period" in changes and changes["budget_period"] is None:
        changes["budget_period"] = "month"
    return (base or KeyLimits()).with_changes(**changes)


def validate_name(name: str) -> str:
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise InvalidArgumentError(
            f"key name {name!r} must be 1 to 64 letters, digits, '-', '_' or '.' (e.g. crm-prod)"
        )
    return name


def create_key(store: GatewayStore, db_path: Path, name: str, limits: KeyLimits, *, actor: str) -> tuple[str, KeyRecord]:
    """Make a new virtual key; returns the key (shown once) and its stored record.

    ``db_path`` is the state path (see ``kimiflow.gateway.store.state_path``); the key is hashed with
    the store's secret, the one every gateway on that store checks keys with."""
    secret = store.key_secret(secret_path(db_path))
    key = new_key()
    record = KeyRecord(id=new_key_id(), name=validate_name(name), key_hash=hash_key(secret, key),
                       display=display_form(key), limits=limits, created=time.time())
    store.create_key(record, actor=actor)
    return key, record


def created_view(key: str, record: KeyRecord) -> dict[str, Any]:
    """What ``keys create --json`` and ``POST /admin/keys`` return: the key, once."""
    return {"key": key, "id": record.id, "name": record.name, "limits": record.limits.to_dict()}


def parse_since(value: str | None) -> str | None:
    """``--since`` as an ISO day (``2026-12-01``); anything else is refused with an example."""
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidArgumentError(f"--since takes a day as YYYY-MM-DD (e.g. 2026-12-01), got {value!r}") from None


def usage_report(store: GatewayStore, *, key_name: str | None, since: str | None, by: str) -> list[dict[str, Any]]:
    key_id = None
    if key_name is not None:
        record = store.get_key(key_name)
        if record is None:
            raise InvalidArgumentError(f"no key named {key_name!r}; `kimiflow gateway keys list` shows the names")
        key_id = record.id
    return store.usage(key_id=key_id, since=parse_since(since), by=by)
