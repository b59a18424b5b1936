"""Client configuration, resolved once, in one place, in one order: argument > environment > default.

Environment variables: ``MOONSHOT_API_KEY``, ``MOONSHOT_BASE_URL``. The key is kept out of every
``repr`` and message; ``mask_key`` shows it the only way kimiflow ever shows it (``sk-...abcd``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from kimiflow.core.errors import ConfigError

DEFAULT_BASE_URL = "https://api.moonshot.cn/v1"
"""China platform; global accounts use ``https://api.moonshot.ai/v1`` (keys are not interchangeable)."""
ENV_API_KEY = "MOONSHOT_API_KEY"
ENV_BASE_URL = "MOONSHOT_BASE_URL"
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class Timeouts:
    """Every wait kimiflow makes is bounded by one of these (seconds).

    - ``connect``: establishing the TCP/TLS connection.
    - ``read``: waiting for a non-streaming response (Kimi can take minutes for long answers).
    - ``stream_idle``: longest gap between stream events; keep-alive comments do not count as progress.
    - ``total``: optional deadline for the whole call, retries and backoff included.

    >>> Kimi(timeout=Timeouts(connect=5, read=120, stream_idle=30, total=300))
    """

    connect: float = 10.0
    read: float = 600.0
    stream_idle: float = 60.0
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "stream_idle", "total"):
            value = getattr(self, name)
            if value is None and name == "total":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"timeout {name}={value!r} is invalid: use a positive number of seconds")


TimeoutLike = Union[float, int, Timeouts, None]
"""A number sets the read timeout and the stream idle timeout; a ``Timeouts`` sets each limit."""

DEFAULT_TIMEOUTS = Timeouts()


def coerce_timeouts(value: TimeoutLike, base: Timeouts = DEFAULT_TIMEOUTS) -> Timeouts:
    """Turn a user's ``timeout=`` into ``Timeouts`` (a number sets ``read`` and ``stream_idle``)."""
    if value is None:
        return base
    if isinstance(value, Timeouts):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"timeout={value!r} is invalid: pass seconds as a number, or a kimiflow.Timeouts")
    return dataclasses.replace(base, read=float(value), stream_idle=float(value))


def mask_key(key: str | None) -> str:
    """The only way kimiflow shows a key: ``sk-...abcd`` (``<not set>`` when missing).

    >>> mask_key("sk-1234567890abcdef")
    'sk-...cdef'
    """
    if not key:
        return "<not set>"
    if len(key) <= 8:
        return "***"
    return f"{key[:3]}...{key[-4:]}"


@dataclass(frozen=True, repr=False)
class ClientConfig:
    """Resolved, immutable configuration of a client. Its ``repr`` masks the key."""

    api_key: str
    base_url: str
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    max_retries: int = DEFAULT_MAX_RETRIES
    default_headers: Mapping[str, str] = field(default_factory=dict)
    max_connections: int = 1000

    def __repr__(self) -> str:
        return (
            f"ClientConfig(api_key={mask_key(self.api_key)!r}, base_url={self.base_url!r}, "
            f"timeouts={self.timeouts!r}, max_retries={self.max_retries!r})"
        )

    def replace(self, **changes: Any) -> ClientConfig:
        """A copy with ``changes`` applied (validated like the original)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}: use {', '.join(sorted(known | {'timeout'}))}")
        return validate_config(dataclasses.replace(self, **changes))


def check_max_retries(value: object) -> int:
    """``value`` if it is a valid retry count, else a ``ConfigError`` saying what is."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"max_retries={value!r} is invalid: use an integer >= 0")
    return value


def check_api_key(key: object) -> str:
    """The key, stripped, or a ``ConfigError`` naming the problem (never echoing the key)."""
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(
            f"no API key: set the {ENV_API_KEY} environment variable (export {ENV_API_KEY}=sk-...) "
            f"or pass api_key= to the client. Keys come from https://platform.moonshot.cn/console/api-keys "
            f"(China) or https://platform.moonshot.ai (global); they are not interchangeable."
        )
    key = key.strip()
    if any(ch.isspace() for ch in key) or not key.isprintable() or not key.isascii():
        raise ConfigError("the API key contains whitespace, control or non-ASCII characters: copy it again "
                          "from the console without them")
    return key


def _has_host(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme in ("http", "https") and bool(rest.split("/", 1)[0])


def check_headers(headers: object) -> None:
    """``ConfigError`` unless ``headers`` maps header names to values HTTP can carry (printable ASCII)."""
    if not isinstance(headers, Mapping):
        raise ConfigError(f"default_headers must be a dict of strings, got {type(headers).__name__}")
    for name, value in headers.items():
        for part, text in (("name", name), ("value", value)):
            if not isinstance(text, str) or not text.isascii() or not text.isprintable():
                raise ConfigError(
                    f"header {name!r}: its {part} must be a string of printable ASCII characters "
                    "(HTTP headers cannot carry other text; encode it, e.g. as base64 or percent-encoding)"
                )


def validate_config(config: ClientConfig) -> ClientConfig:
    """Check every field; normalise the key (stripped) and the base URL (no trailing slash)."""
    check_max_retries(config.max_retries)
    key = check_api_key(config.api_key)
    check_headers(config.default_headers)
    if not isinstance(config.base_url, str) or not _has_host(config.base_url):
        raise ConfigError(
            f"base_url {config.base_url!r} is invalid: it must start with http:// or https:// "
            f"(for example {DEFAULT_BASE_URL})"
        )
    if not isinstance(config.max_connections, int) or config.max_connections < 1:
        raise ConfigError(f"max_connections={config.max_connections!r} is invalid: use an integer >= 1")
    if not isinstance(config.timeouts, Timeouts):
        raise ConfigError(f"timeouts={config.timeouts!r} is invalid: use kimiflow.Timeouts(...) or timeout=seconds")
    url = config.base_url.rstrip("/")
    if key != config.api_key or url != config.base_url:
        config = dataclasses.replace(config, api_key=key, base_url=url)
    return config


def resolve_config(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: TimeoutLike = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    default_headers: Mapping[str, str] | None = None,
    max_connections: int = 1000,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Resolve a client's configuration: argument > environment > default.

    Raises ``ConfigError`` naming the fix when no key is found.
    """
    env = os.environ if environ is None else environ
    key = api_key if api_key is not None else env.get(ENV_API_KEY)
    url = base_url if base_url is not None else env.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return validate_config(
        ClientConfig(
            api_key=check_api_key(key),
            base_url=url,
            timeouts=coerce_timeouts(timeout),
            max_retries=max_retries,
            default_headers=dict(default_headers or {}),
            max_connections=max_connections,
        )
    )
