"""``/admin/``: key and usage management over HTTP with ``Authorization: Bearer <admin token>``.

- ``GET /admin/keys`` · ``POST /admin/keys`` ``{"name", limits...}`` (returns the key, once)
- ``GET|PATCH|DELETE /admin/keys/{name}`` (DELETE revokes; the row stays for the ledger) and
  ``POST /admin/keys/{name}/revoke``
- ``GET /admin/usage?key=NAME&since=YYYY-MM-DD&by=day|model|key`` · ``GET /admin/audit``

Every change is in the audit log (actor ``http``) and applies to the running gateway at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.gateway.app import Gateway
from kimiflow.gateway.errors import error_response, invalid_auth
from kimiflow.gateway.manage import create_key, created_view, limits_from, usage_report

Handler = Callable[[Gateway, web.Request], Awaitable[web.StreamResponse]]


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        raise InvalidArgumentError("the body must be a JSON object, e.g. {\"name\": \"crm\", \"rpm\": 60}") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("the body must be a JSON object, e.g. {\"name\": \"crm\", \"rpm\": 60}")
    return body


async def list_keys(gw: Gateway, request: web.Request) -> web.StreamResponse:
    records = await asyncio.to_thread(gw.store.list_keys)
    return web.json_response({"object": "list", "data": [r.to_dict() for r in records]})


async def create(gw: Gateway, request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise InvalidArgumentError("name is required, e.g. {\"name\": \"crm\"}")
    limits = limits_from(body)
    key, record = await asyncio.to_thread(create_key, gw.store, gw.settings.db_path, name, limits, actor="http")
    await gw.reload_keys(force=True)
    return web.json_response(created_view(key, record), status=201)


async def show(gw: Gateway, request: web.Request) -> web.StreamResponse:
    record = await asyncio.to_thread(gw.store.get_key, request.match_info["name"])
    if record is None:
        return error_response(404, "resource_not_found_error", f"no key named {request.match_info['name']!r}")
    data = record.to_dict()
    data["spent_cny"] = round(gw.books.spent(record), 6)
    data["remaining_budget_cny"] = gw.books.remaining_budget(record)
    return web.json_response(data)


async def update(gw: Gateway, request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    body = await _json_body(request)
    current = await asyncio.to_thread(gw.store.get_key, name)
    if current is None:
        return error_response(404, "resource_not_found_error", f"no key named {name!r}")
    limits = limits_from(body, current.limits)
    record = await asyncio.to_thread(gw.store.update_key, name, limits, actor="http")
    await gw.reload_keys(force=True)
    return web.json_response(record.to_dict())


async def revoke(gw: Gateway, request: web.Request) -> web.StreamResponse:
    record = await asyncio.to_thread(gw.store.revoke_key, request.match_info["name"], actor="http")
    await gw.reload_keys(force=True)
    return web.json_response(record.to_dict())


async def usage(gw: Gateway, request: web.Request) -> web.StreamResponse:
    q = request.query
    rows = await asyncio.to_thread(usage_report, gw.store, key_name=q.get("key"), since=q.get("since"),
                                   by=q.get("by", "day"))
    return web.json_response({"object": "list", "data": rows})


async def audit(gw: Gateway, request: web.Request) -> web.StreamResponse:
    return web.json_response({"object": "list", "data": await asyncio.to_thread(gw.store.audit_log)})


def add_routes(app: web.Application, gw: Gateway) -> None:
    def guarded(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def route(request: web.Request) -> web.StreamResponse:
            if not gw.is_admin(request.headers.get("Authorization")):
                return invalid_auth()
            try:
                return await handler(gw, request)
            except InvalidArgumentError as exc:
                return error_response(400, "invalid_request_error", str(exc))

        return route

    app.router.add_get("/admin/keys", guarded(list_keys))
    app.router.add_post("/admin/keys", guarded(create))
    app.router.add_get("/admin/keys/{name}", guarded(show))
    app.router.add_patch("/admin/keys/{name}", guarded(update))
    app.router.add_delete("/admin/keys/{name}", guarded(revoke))
    app.router.add_post("/admin/keys/{name}/revoke", guarded(revoke))
    app.router.add_get("/admin/usage", guarded(usage))
    app.router.add_get("/admin/audit", guarded(audit))
