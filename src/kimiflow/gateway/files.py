"""The files endpoints with ownership: a key sees, reads and deletes only the files it uploaded.

Uploads are forwarded as the caller sent them (multipart bytes unchanged); the upstream's file id
is recorded against the uploading key. Any other key asking for that id gets the upstream's own
404 shape, so it cannot even learn that the file exists.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from kimiflow.gateway.app import REQUEST_ID_HEADER, Gateway, bind, new_request_id
from kimiflow.gateway.errors import error_response, invalid_auth
from kimiflow.gateway.keys import KeyRecord
from kimiflow.gateway.upstream import UpstreamUnavailable

MAX_UPLOAD_BYTES = 100 * 1024 * 1024 + 64 * 1024  # Kimi's 100 MB per file, plus the multipart framing


def _not_found(file_id: str) -> web.Response:
    return error_response(404, "resource_not_found_error", f"Not found the file {file_id} or Permission denied")


async def _forward(gw: Gateway, method: str, path: str, *, body: bytes | None = None,
                   content_type: str | None = None) -> tuple[int, bytes, str, dict[str, str]] | web.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        upstream = await gw.upstream.request(method, path, body=body, headers=headers)
    except UpstreamUnavailable as exc:
        return error_response(502, "server_error", f"{exc}; try again later")
    try:
        data = await upstream.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return error_response(502, "server_error", "the upstream broke off its answer; try again")
    finally:
        upstream.release()
    passed = {k: v for k, v in upstream.headers.items() if k in ("Msh-Request-Id",)}
    return upstream.status, data, upstream.headers.get("Content-Type", "application/json"), passed


def _respond(result: tuple[int, bytes, str, dict[str, str]] | web.Response, headers: dict[str, str],
             body: bytes | None = None) -> web.Response:
    if isinstance(result, web.Response):
        result.headers.update(headers)
        return result
    status, data, content_type, passed = result
    response = web.Response(status=status, body=data if body is None else body, headers={**headers, **passed})
    response.headers["Content-Type"] = content_type
    return response


def _caller(gw: Gateway, request: web.Request) -> tuple[KeyRecord | None, dict[str, str]]:
    record = gw.authenticate(request.headers.get("Authorization"))
    return record, {REQUEST_ID_HEADER: new_request_id()}


async def upload(gw: Gateway, request: web.Request) -> web.StreamResponse:
    record, headers = _caller(gw, request)
    if record is None:
        return _respond(invalid_auth(), headers)
    body = await request.read()
    result = await _forward(gw, "POST", "/files", body=body, content_type=request.headers.get("Content-Type"))
    if not isinstance(result, web.Response) and result[0] == 200:
        try:
            file_id = msgspec.json.decode(result[1]).get("id")
        except (msgspec.DecodeError, AttributeError):
            file_id = None
        if isinstance(file_id, str):
            await asyncio.to_thread(gw.store.add_file, file_id, record.id)
    return _respond(result, headers)


async def list_files(gw: Gateway, request: web.Request) -> web.StreamResponse:
    record, headers = _caller(gw, request)
    if record is None:
        return _respond(invalid_auth(), headers)
    result = await _forward(gw, "GET", "/files")
    if isinstance(result, web.Response) or result[0] != 200:
        return _respond(result, headers)
    own = await asyncio.to_thread(gw.store.files_of, record.id)
    listing: Any = msgspec.json.decode(result[1])
    if isinstance(listing, dict) and isinstance(listing.get("data"), list):
        listing["data"] = [f for f in listing["data"] if isinstance(f, dict) and f.get("id") in own]
    return _respond(result, headers, msgspec.json.encode(listing))


async def one_file(gw: Gateway, request: web.Request) -> web.StreamResponse:
    """``GET /v1/files/{id}``, ``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}``."""
    record, headers = _caller(gw, request)
    if record is None:
        return _respond(invalid_auth(), headers)
    file_id = request.match_info["file_id"]
    if await asyncio.to_thread(gw.store.file_owner, file_id) != record.id:
        return _respond(_not_found(file_id), headers)
    suffix = "/content" if request.path.endswith("/content") else ""
    result = await _forward(gw, request.method, f"/files/{file_id}{suffix}")
    if request.method == "DELETE" and not isinstance(result, web.Response) and result[0] == 200:
        await asyncio.to_thread(gw.store.remove_file, file_id)
    return _respond(result, headers)


def add_routes(app: web.Application, gw: Gateway) -> None:
    app.router.add_post("/v1/files", bind(gw, upload))
    app.router.add_get("/v1/files", bind(gw, list_files))
    app.router.add_get("/v1/files/{file_id}", bind(gw, one_file))
    app.router.add_get("/v1/files/{file_id}/content", bind(gw, one_file))
    app.router.add_delete("/v1/files/{file_id}", bind(gw, one_file))
