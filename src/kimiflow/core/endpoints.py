"""Every API endpoint as a ``RequestSpec`` builder, shared by ``Kimi`` and ``AsyncKimi``."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kimiflow.core.config import check_headers
from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.requests import RequestSpec, UploadFile, build_chat_body, encode_json
from kimiflow.types.account import Balance, TokenCount
from kimiflow.types.chat import ChatCompletion, ChatCompletionChunk
from kimiflow.types.files import FileDeleted, FileList, FileObject
from kimiflow.types.models import ModelList

FILE_PURPOSES = ("file-extract", "image", "video", "batch")


def chat_completion(
    params: Mapping[str, Any],
    *,
    extra_body: Mapping[str, Any] | None,
    extra_headers: Mapping[str, str] | None,
) -> RequestSpec[ChatCompletion]:
    return RequestSpec("POST", "/chat/completions", ChatCompletion, body=build_chat_body(params, extra_body),
                       extra_headers=_checked(extra_headers))


def chat_completion_stream(
    params: Mapping[str, Any],
    *,
    extra_body: Mapping[str, Any] | None,
    extra_headers: Mapping[str, str] | None,
) -> RequestSpec[ChatCompletionChunk]:
    body = build_chat_body({**params, "stream": True}, extra_body)
    return RequestSpec("POST", "/chat/completions", ChatCompletionChunk, body=body, stream=True,
                       extra_headers=_checked(extra_headers))


def _checked(extra_headers: Mapping[str, str] | None) -> dict[str, str]:
    if not extra_headers:
        return {}
    check_headers(extra_headers)
    return dict(extra_headers)


def ask_messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidArgumentError("ask() needs a non-empty prompt string")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages


def reject_stream_in_ask(params: Mapping[str, Any]) -> None:
    if params.get("stream"):
        raise InvalidArgumentError("ask() returns the whole answer and cannot stream: use "
                          "client.chat.completions.stream(...) and its text_stream instead")


def list_models() -> RequestSpec[ModelList]:
    return RequestSpec("GET", "/models", ModelList)


def balance() -> RequestSpec[Balance]:
    return RequestSpec("GET", "/users/me/balance", Balance)


def count_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> RequestSpec[TokenCount]:
    if not model:
        raise InvalidArgumentError("tokens.count() needs model=, e.g. model='moonshot-v1-8k'")
    if not messages:
        raise InvalidArgumentError("tokens.count() needs messages=[{'role': 'user', 'content': '...'}]")
    body = encode_json({"model": model, "messages": list(messages)})
    return RequestSpec("POST", "/tokenizers/estimate-token-count", TokenCount, body=body)


def upload_file(file: str | os.PathLike[str] | bytes, purpose: str, filename: str | None) -> RequestSpec[FileObject]:
    if purpose not in FILE_PURPOSES:
        raise InvalidArgumentError(f"purpose={purpose!r} is invalid: use one of {', '.join(FILE_PURPOSES)}")
    if isinstance(file, bytes):
        content, name = file, filename or "upload.bin"
    else:
        path = Path(file)
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read {str(path)!r} to upload: {exc.strerror or exc}") from None
        name = filename or path.name
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return RequestSpec("POST", "/files", FileObject, form={"purpose": purpose},
                       files=(UploadFile("file", name, content, content_type),))


def list_files() -> RequestSpec[FileList]:
    return RequestSpec("GET", "/files", FileList)


def _file_path(file_id: str, suffix: str = "") -> str:
    if not isinstance(file_id, str) or not file_id:
        raise InvalidArgumentError("file_id must be a non-empty string such as 'cl9t...' from files.list()")
    return f"/files/{quote(file_id, safe='')}{suffix}"


def retrieve_file(file_id: str) -> RequestSpec[FileObject]:
    return RequestSpec("GET", _file_path(file_id), FileObject)


def file_content(file_id: str) -> RequestSpec[str]:
    return RequestSpec("GET", _file_path(file_id, "/content"), str)


def delete_file(file_id: str) -> RequestSpec[FileDeleted]:
    return RequestSpec("DELETE", _file_path(file_id), FileDeleted)
