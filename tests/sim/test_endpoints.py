"""Models, token counting, balance, files and the stats endpoint (docs/kimi-api.md §7)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from kimiflow.core.catalog import MODELS
from kimiflow.core.tokens import estimate_message_tokens
from tests.sim.conftest import Api, SimFactory, user


async def test_models_lists_the_catalog(api: Api) -> None:
    reply = await api.request("GET", "/models")
    assert reply.status == 200
    data = reply.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == list(MODELS)
    k2 = next(m for m in data["data"] if m["id"] == "kimi-k2-thinking")
    assert k2["object"] == "model" and k2["owned_by"] == "moonshot"
    assert k2["context_length"] == 262_144 and k2["supports_reasoning"] is True


async def test_estimate_token_count(api: Api) -> None:
    messages = [{"role": "system", "content": "You are Kimi."}, *user("你好，世界 hello")]
    reply = await api.request(
        "POST", "/tokenizers/estimate-token-count", json={"model": "moonshot-v1-8k", "messages": messages}
    )
    assert reply.status == 200
    assert reply.json() == {"data": {"total_tokens": estimate_message_tokens(messages)}}
    unknown = await api.request("POST", "/tokenizers/estimate-token-count", json={"model": "x", "messages": messages})
    assert unknown.status == 404
    empty = await api.request("POST", "/tokenizers/estimate-token-count", json={"model": "moonshot-v1-8k"})
    assert empty.status == 400


async def test_balance_shape(make_api: SimFactory) -> None:
    api = await make_api(balance=49.5)
    data = (await api.request("GET", "/users/me/balance")).json()
    assert data == {
        "code": 0,
        "data": {"available_balance": 49.5, "voucher_balance": 0.0, "cash_balance": 49.5},
        "scode": "0x0",
        "status": True,
    }


def _form(name: str, content: bytes, purpose: str | None = "file-extract") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=name, content_type="application/octet-stream")
    if purpose is not None:
        form.add_field("purpose", purpose)
    return form


async def test_file_lifecycle(api: Api) -> None:
    uploaded = await api.request("POST", "/files", data=_form("notes.txt", "第一行\nsecond line".encode()))
    assert uploaded.status == 200
    meta = uploaded.json()
    assert meta["object"] == "file" and meta["bytes"] == len("第一行\nsecond line".encode())
    assert meta["filename"] == "notes.txt" and meta["purpose"] == "file-extract" and meta["status"] == "ok"
    assert isinstance(meta["created_at"], int) and meta["id"].startswith("cl")
    file_id = meta["id"]
    listed = (await api.request("GET", "/files")).json()
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [file_id]
    assert (await api.request("GET", f"/files/{file_id}")).json() == meta
    content = await api.request("GET", f"/files/{file_id}/content")
    assert content.status == 200
    assert content.headers["Content-Type"] == "text/plain; charset=utf-8"
    extracted = json.loads(content.body)
    assert extracted["content"] == "第一行\nsecond line"
    assert extracted["filename"] == "notes.txt" and extracted["type"] == "file"
    deleted = await api.request("DELETE", f"/files/{file_id}")
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    for path in (f"/files/{file_id}", f"/files/{file_id}/content"):
        missing = await api.request("GET", path)
        assert missing.status == 404
        assert missing.error["type"] == "resource_not_found_error"
    assert (await api.request("DELETE", f"/files/{file_id}")).status == 404


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("a.md", b"# Title\n\n- item", "# Title\n\n- item"),
        ("a.csv", b"id,name\n1,kimi\n", "id,name\n1,kimi\n"),
        ("a.json", b'{"k": "\xe5\x80\xbc"}', '{"k": "值"}'),
        (
            "page.html",
            b"<html><head><title>T</title><style>p{}</style></head><body><h1>Hello</h1>"
            b"<p>Kimi &amp; <b>you</b></p><script>var x=1;</script></body></html>",
            "Hello\nKimi & you",
        ),
    ],
)
async def test_text_extraction(api: Api, name: str, raw: bytes, expected: str) -> None:
    file_id = (await api.request("POST", "/files", data=_form(name, raw))).json()["id"]
    extracted = json.loads((await api.request("GET", f"/files/{file_id}/content")).body)
    assert extracted["content"] == expected


async def test_binary_file_extraction_fails_with_500(api: Api) -> None:
    meta = (await api.request("POST", "/files", data=_form("x.pdf", b"\x00\x01\xff\xfe"))).json()
    assert meta["status"] == "error"
    reply = await api.request("GET", f"/files/{meta['id']}/content")
    assert reply.status == 500
    assert reply.error["type"] == "server_error"
    assert reply.error["message"].startswith("Failed to extract file: ")


async def test_file_upload_errors(make_api: SimFactory) -> None:
    api = await make_api(max_files=1, max_file_bytes=1024)
    bad_purpose = await api.request("POST", "/files", data=_form("a.txt", b"x", purpose="fine-tune"))
    assert bad_purpose.status == 400
    assert bad_purpose.error["message"].startswith("Invalid purpose: only 'file-extract'")
    no_purpose = await api.request("POST", "/files", data=_form("a.txt", b"x", purpose=None))
    assert no_purpose.status == 400
    zero = await api.request("POST", "/files", data=_form("a.txt", b""))
    assert zero.status == 400
    assert zero.error["message"] == "File size is zero, please confirm and re-upload the file"
    big = await api.request("POST", "/files", data=_form("a.txt", b"x" * 1025))
    assert big.status == 400
    assert big.error["message"] == (
        "File size is too large, max file size is 1KB, please confirm and re-upload the file"
    )
    assert (await api.request("POST", "/files", data=_form("a.txt", b"x"))).status == 200
    too_many = await api.request("POST", "/files", data=_form("b.txt", b"y"))
    assert too_many.status == 400
    assert too_many.error["message"] == (
        "The number of files you have uploaded exceeded the max file count 1, please delete previous uploaded files"
    )
    for reply in (bad_purpose, zero, big, too_many):
        assert reply.error["type"] == "invalid_request_error"
    not_multipart = await api.request("POST", "/files", json={"purpose": "file-extract"})
    assert not_multipart.status == 400


async def test_default_file_limit_message_says_100mb(api: Api) -> None:
    assert api.sim.files.too_large().message.startswith("File size is too large, max file size is 100MB")


async def test_stats_endpoint_counts_requests(api: Api) -> None:
    await api.chat({})
    await api.chat({"stream": True}, headers={"X-Kimiflow-Sim-Tokens": "4"})
    await api.chat({"model": "nope"})
    async with api.session.get(f"http://127.0.0.1:{api.sim.port}/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["chat_completions"] == 2
    assert stats["streams"] == 1
    assert stats["stream_chunks"] == 1 + 4 + 1
    assert stats["by_status"] == {"200": 2, "404": 1}
    assert stats["requests"] == 4
    assert stats == {**api.sim.stats.to_dict(), "requests": 4, "by_status": {"200": 2, "404": 1}}
