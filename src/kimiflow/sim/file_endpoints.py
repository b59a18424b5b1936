"""The file endpoints: upload, list, get, delete and content (docs/kimi-api.md §7.4) over ``SimState.files``."""

from __future__ import annotations

import msgspec
from aiohttp import BodyPartReader, web

from kimiflow.sim import errors
from kimiflow.sim.faults import Fault
from kimiflow.sim.http import json_or_fault, text_response
from kimiflow.sim.state import SimState

FILES_PREFIX = "/v1/files/"
_encode = msgspec.json.Encoder().encode


async def upload_file(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    if not request.content_type.startswith("multipart/"):
        raise errors.invalid_request("upload a file as multipart/form-data with fields 'file' and 'purpose'")
    store = state.files
    reader = await request.multipart()
    purpose: str | None = None
    filename: str | None = None
    data: bytes | None = None
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.read()).decode("utf-8", "replace").strip()
        elif part.name == "file":
            filename = part.filename or "upload.bin"
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = await part.read_chunk(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > store.max_bytes:
                    raise store.too_large()
                chunks.append(chunk)
            data = b"".join(chunks)
    store.check_purpose(purpose)
    if data is None or filename is None:
        raise errors.invalid_request("missing multipart field 'file'")
    assert purpose is not None
    stored = store.add(filename, data, purpose)
    state.stats.files_uploaded += 1
    return await json_or_fault(request, _encode(stored.as_dict()), fault)


async def list_files(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    return await json_or_fault(request, _encode(state.files.list()), fault)


def parse_file_path(request: web.BaseRequest) -> tuple[str, str] | None:
    """``(file_id, action)`` for ``/v1/files/{id}`` or ``/v1/files/{id}/content``; ``None`` for any other path.

    Raises 404 for a malformed file path and 405 for a method the path does not take.
    """
    path = request.path
    if not path.startswith(FILES_PREFIX):
        return None
    file_id, _, action = path[len(FILES_PREFIX) :].partition("/")
    if not file_id or action not in ("", "content"):
        raise errors.not_found_path(path)
    allowed = ("GET",) if action == "content" else ("GET", "DELETE")
    if request.method not in allowed:
        raise errors.method_not_allowed(request.method, path)
    return file_id, action


async def file_action(
    state: SimState, request: web.BaseRequest, file_id: str, action: str, fault: Fault | None
) -> web.StreamResponse:
    if action == "content":
        return text_response(state.files.content(file_id), request)
    if request.method == "DELETE":
        return await json_or_fault(request, _encode(state.files.delete(file_id)), fault)
    return await json_or_fault(request, _encode(state.files.get(file_id).as_dict()), fault)
