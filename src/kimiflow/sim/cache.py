"""Automatic prefix caching as Kimi's K2.x/K3 bill it: ``usage.cached_tokens`` for a repeated prefix.

A model caches automatically when the catalog gives it a cache-hit price (kimi-api.md §7, §8). The
simulator remembers, per API key, the hashes of each request's message prefixes (one hash per message
boundary, chained, so a hash stands for the whole conversation up to there). A later request whose
leading messages hash the same had those tokens cached; they are counted in whole ``BLOCK_TOKENS``
blocks, so a prefix shorter than one block (the first request of a short chat) never hits.

Memory is bounded: one LRU of at most ``max_entries`` hashes across all keys.

>>> cache = PrefixCache(max_entries=100)
>>> chat = [{"role": "system", "content": "x " * 600}, {"role": "user", "content": "hi"}]
>>> cache.lookup_and_store("sk-a", "kimi-k2.6", chat)
0
>>> cache.lookup_and_store("sk-a", "kimi-k2.6", [*chat, {"role": "user", "content": "more"}]) >= 512
True
>>> cache.lookup_and_store("sk-b", "kimi-k2.6", chat)
0
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import msgspec

from kimiflow.core.catalog import ModelInfo
from kimiflow.core.tokens import REQUEST_OVERHEAD, estimate_one_message_tokens

BLOCK_TOKENS = 256
"""Cache granularity: cached tokens are a multiple of this (a hit needs a prefix of > 256 tokens, T6)."""
DEFAULT_MAX_ENTRIES = 65_536
"""About 5 MB of 32-byte digests plus their token counts, whatever the traffic."""
_encode = msgspec.json.Encoder().encode
_MAX_ROOTS = 4096
"""Bound of the per-(key, model) root hash states kept (starts over when full; a root is cheap to rebuild)."""


def caches_automatically(model: ModelInfo) -> bool:
    """Whether ``model`` caches prompt prefixes by itself: it has a cache-hit price."""
    return model.cache_hit_price is not None


class PrefixCache:
    """Per-key LRU of conversation-prefix hashes; ``lookup_and_store`` answers one request's cached tokens."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._roots: dict[tuple[str, str], Any] = {}
        """Each (key, model)'s hash state before the first message, copied per request instead of rebuilt."""

    def __len__(self) -> int:
        return len(self._seen)

    def lookup_and_store(self, key: str, model: str, messages: list[dict[str, Any]]) -> int:
        """Tokens of ``messages`` already cached for ``key`` on ``model``; remembers this request's prefixes."""
        root = self._roots.get((key, model))
        if root is None:
            if len(self._roots) >= _MAX_ROOTS:
                self._roots.clear()
            root = self._roots[(key, model)] = hashlib.blake2b(f"{key}\0{model}".encode(), digest_size=16)
        running = root.copy()
        seen = self._seen
        tokens = REQUEST_OVERHEAD
        cached = 0
        missed = False
        for message in messages:
            running.update(_encode(message))
            digest = running.digest()
            if not missed and digest in seen:
                seen.move_to_end(digest)
                # Only a hit needs the count (the request's own count comes from validation).
                tokens += estimate_one_message_tokens(message)
                cached = tokens
            else:
                missed = True
                self._remember(digest)
        return (cached // BLOCK_TOKENS) * BLOCK_TOKENS

    def _remember(self, digest: bytes) -> None:
        self._seen[digest] = None
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
