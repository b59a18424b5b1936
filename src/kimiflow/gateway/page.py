"""The usage page at ``GET /``: server-side HTML from a Jinja2 template, no JavaScript.

Who may look: the admin (every key) or a virtual key (its own figures only, read-only). A browser
signs in once through the form (``POST /login``), which sets an HttpOnly cookie holding a random
session id that maps to the viewer in memory (12 h); scripts may send ``Authorization: Bearer``.
The token or key itself is never put in a URL or a cookie.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from kimiflow.gateway.app import Gateway, bind
from kimiflow.gateway.keys import KeyRecord

SESSION_COOKIE = "kimiflow_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
CHART_DAYS = 30

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                          autoescape=True, undefined=jinja2.StrictUndefined)


@dataclass(frozen=True)
class Viewer:
    admin: bool
    key_id: str | None = None


class Sessions:
    """Random session ids -> viewer, bounded in count and age."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[Viewer, float]] = {}

    def open(self, viewer: Viewer) -> str:
        now = time.monotonic()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: v for k, v in self._by_id.items() if v[1] > now}
            while len(self._by_id) >= MAX_SESSIONS:
                self._by_id.pop(next(iter(self._by_id)))
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (viewer, now + SESSION_SECONDS)
        return sid

    def get(self, sid: str | None) -> Viewer | None:
        entry = self._by_id.get(sid or "")
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]


def _viewer_for(gw: Gateway, credential: str) -> Viewer | None:
    header = f"Bearer {credential}"
    if gw.is_admin(header):
        return Viewer(admin=True)
    record = gw.authenticate(header)
    return Viewer(admin=False, key_id=record.id) if record is not None else None


def _chart(days: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    top = max((float(d[field]) for d in days), default=0.0) or 1.0
    return [{"day": d["day"], "value": d[field], "height": round(100 * float(d[field]) / top, 1)} for d in days]


def _model(gw: Gateway, viewer: Viewer) -> dict[str, Any]:
    """Everything the template shows, read from the store (runs in a worker thread)."""
    store = gw.store
    now = datetime.now(timezone.utc)
    today, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m-01")
    since = (now - timedelta(days=CHART_DAYS - 1)).strftime("%Y-%m-%d")
    records = [r for r in store.list_keys() if viewer.admin or r.id == viewer.key_id]
    spent_today = {row["key"]: row["cost_cny"] for row in store.usage(since=today, by="key")}
    spent_month = {row["key"]: row["cost_cny"] for row in store.usage(since=month, by="key")}
    by_day = {row["day"]: row for row in store.usage(key_id=viewer.key_id, since=since, by="day")}
    days = []
    for offset in range(CHART_DAYS - 1, -1, -1):
        day = (now - timedelta(days=offset)).strftime("%Y-%m-%d")
        row = by_day.get(day, {})
        days.append({"day": day, "requests": row.get("requests", 0),
                     "tokens": row.get("prompt_tokens", 0) + row.get("completion_tokens", 0),
                     "cost": round(row.get("cost_cny", 0.0), 4)})
    names = {r.id: r.name for r in records}
    problems = [{"time": datetime.fromtimestamp(p.ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                 "key": names.get(p.key_id, p.key_id), "model": p.model, "status": p.status, "ended": p.ended}
                for p in store.recent_problems(key_id=viewer.key_id)]
    return {"records": records, "spent_today": spent_today, "spent_month": spent_month, "days": days,
            "problems": problems, "today": today}


def _key_rows(gw: Gateway, records: list[KeyRecord], spent_today: dict[str, float],
              spent_month: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        lim = record.limits
        headroom = gw.books.headers(record) if record.active else {}
        rows.append({
            "name": record.name, "display": record.display, "active": record.active,
            "today": round(spent_today.get(record.id, 0.0), 4), "month": round(spent_month.get(record.id, 0.0), 4),
            "budget": lim.budget_cny, "period": lim.budget_period,
            "remaining": gw.books.remaining_budget(record) if record.active else None,
            "rpm": lim.rpm, "tpm": lim.tpm, "concurrency": lim.concurrency, "models": ", ".join(lim.models) or "all",
            "rpm_left": headroom.get("x-ratelimit-remaining-requests"),
            "tpm_left": headroom.get("x-ratelimit-remaining-tokens"),
        })
    return rows


async def usage_page(gw: Gateway, request: web.Request) -> web.StreamResponse:
    viewer = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        viewer = _viewer_for(gw, header[7:].strip())
    if viewer is None:
        viewer = gw.page_sessions.get(request.cookies.get(SESSION_COOKIE))
    if viewer is None:
        html = _env.get_template("login.html").render(failed=request.query.get("failed") == "1")
        return web.Response(text=html, content_type="text/html", status=401)
    data = await asyncio.to_thread(_model, gw, viewer)
    keys = _key_rows(gw, data["records"], data["spent_today"], data["spent_month"])
    html = _env.get_template("usage.html").render(
        admin=viewer.admin, who="admin — all keys" if viewer.admin else (keys[0]["name"] if keys else "?"),
        keys=keys, days=data["days"], problems=data["problems"], today=data["today"],
        charts={"requests": _chart(data["days"], "requests"), "tokens": _chart(data["days"], "tokens"),
                "cost": _chart(data["days"], "cost")},
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def login(gw: Gateway, request: web.Request) -> web.StreamResponse:
    form = await request.post()
    credential = str(form.get("token", "")).strip()
    viewer = _viewer_for(gw, credential) if credential else None
    if viewer is None:
        return web.Response(status=303, headers={"Location": "/?failed=1"})
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(SESSION_COOKIE, gw.page_sessions.open(viewer), httponly=True, samesite="Strict",
                        max_age=SESSION_SECONDS, path="/")
    return response


def add_routes(app: web.Application, gw: Gateway) -> None:
    app.router.add_get("/", bind(gw, usage_page))
    app.router.add_post("/login", bind(gw, login))
