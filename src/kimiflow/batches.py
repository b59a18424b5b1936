"""``client.batches``: Kimi's Batch API (docs/kimi-api.md §7.5) on ``Kimi`` and ``AsyncKimi``.

>>> f = client.files.upload("requests.jsonl", purpose="batch")
>>> batch = client.batches.create(input_file_id=f.id, completion_window="24h")
>>> batch = client.batches.retrieve(batch.id); batch.status, batch.request_counts
>>> results = client.files.content(batch.output_file_id)        # JSONL, one result a line

Every call goes through the client's one retry loop and error tree, like any other endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

from kimiflow.core.config import TimeoutLike
from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.options import CallOptions
from kimiflow.core.requests import RequestSpec, encode_json
from kimiflow.types.batches import Batch, BatchList

if TYPE_CHECKING:
    from kimiflow.resources import AsyncSender, SyncSender

BATCH_ENDPOINT = "/v1/chat/completions"


def create_spec(input_file_id: str, endpoint: str, completion_window: str,
                metadata: Mapping[str, str] | None) -> RequestSpec[Batch]:
    if not isinstance(input_file_id, str) or not input_file_id:
        raise InvalidArgumentError("batches.create() needs input_file_id=, the id of a file uploaded with "
                                   "files.upload(path, purpose='batch')")
    body: dict[str, object] = {"input_file_id": input_file_id, "endpoint": endpoint,
                               "completion_window": completion_window}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return RequestSpec("POST", "/batches", Batch, body=encode_json(body))


def _batch_path(batch_id: str, suffix: str = "") -> str:
    if not isinstance(batch_id, str) or not batch_id:
        raise InvalidArgumentError("batch_id must be a non-empty string such as 'batch_...' from batches.create()")
    return f"/batches/{quote(batch_id, safe='')}{suffix}"


def retrieve_spec(batch_id: str) -> RequestSpec[Batch]:
    return RequestSpec("GET", _batch_path(batch_id), Batch)


def cancel_spec(batch_id: str) -> RequestSpec[Batch]:
    return RequestSpec("POST", _batch_path(batch_id, "/cancel"), Batch)


def list_spec(after: str | None, limit: int | None) -> RequestSpec[BatchList]:
    query = []
    if after:
        query.append(f"after={quote(after, safe='')}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise InvalidArgumentError(f"limit= must be an integer from 1 to 100, got {limit!r}")
        query.append(f"limit={limit}")
    return RequestSpec("GET", "/batches" + ("?" + "&".join(query) if query else ""), BatchList)


class Batches:
    """``client.batches``: create, retrieve, list and cancel batches."""

    def __init__(self, client: SyncSender) -> None:
        self._client = client

    def _options(self, timeout: TimeoutLike, max_retries: int | None) -> CallOptions:
        return CallOptions(self._client._config, timeout, max_retries)

    def create(self, *, input_file_id: str, endpoint: str = BATCH_ENDPOINT, completion_window: str = "24h",
               metadata: Mapping[str, str] | None = None, timeout: TimeoutLike = None,
               max_retries: int | None = None) -> Batch:
        """Start a batch over an uploaded ``purpose="batch"`` file (window ``"12h"`` to ``"7d"``)."""
        return self._client._call(create_spec(input_file_id, endpoint, completion_window, metadata),
                                  self._options(timeout, max_retries))

    def retrieve(self, batch_id: str, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> Batch:
        return self._client._call(retrieve_spec(batch_id), self._options(timeout, max_retries))

    def list(self, *, after: str | None = None, limit: int | None = None, timeout: TimeoutLike = None,
             max_retries: int | None = None) -> BatchList:
        """Newest first, ``limit`` (default 20) a page; ``after=`` the last id of the previous page."""
        return self._client._call(list_spec(after, limit), self._options(timeout, max_retries))

    def cancel(self, batch_id: str, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> Batch:
        """Ask Kimi to stop a validating, in-progress or finalizing batch (it goes ``cancelling``)."""
        return self._client._call(cancel_spec(batch_id), self._options(timeout, max_retries))


class AsyncBatches:
    """``aclient.batches``: ``Batches`` awaited."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    def _options(self, timeout: TimeoutLike, max_retries: int | None) -> CallOptions:
        return CallOptions(self._client._config, timeout, max_retries)

    async def create(self, *, input_file_id: str, endpoint: str = BATCH_ENDPOINT, completion_window: str = "24h",
                     metadata: Mapping[str, str] | None = None, timeout: TimeoutLike = None,
                     max_retries: int | None = None) -> Batch:
        return await self._client._call(create_spec(input_file_id, endpoint, completion_window, metadata),
                                        self._options(timeout, max_retries))

    async def retrieve(self, batch_id: str, *, timeout: TimeoutLike = None,
                       max_retries: int | None = None) -> Batch:
        return await self._client._call(retrieve_spec(batch_id), self._options(timeout, max_retries))

    async def list(self, *, after: str | None = None, limit: int | None = None, timeout: TimeoutLike = None,
                   max_retries: int | None = None) -> BatchList:
        return await self._client._call(list_spec(after, limit), self._options(timeout, max_retries))

    async def cancel(self, batch_id: str, *, timeout: TimeoutLike = None,
                     max_retries: int | None = None) -> Batch:
        return await self._client._call(cancel_spec(batch_id), self._options(timeout, max_retries))
