"""Client configuration, resolved once, in one place, in one order: argument > environment > default.

Environment variables: ``MOONSHOT_API_KEY``, ``MOONSHOT_BASE_URL``. The key is kept out of every
``repr`` and message; ``mask_key`` shows it the only way kimiflow ever shows it (``sk-...abcd``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import urlsplit

from kimiflow.core.errors import ConfigError, redact, remember_key

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
            # ``not value > 0`` is also true for NaN, which compares false with everything.
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or math.isinf(value):
                raise ConfigError(f"timeout {name}={value!r} is invalid: use a positive, finite number of seconds"
                                  + (" (total=None means no deadline)" if name == "total" else ""))


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
    if key.startswith(("http://", "https://")):
        raise ConfigError(f"the API key looks like a URL, not a key: are {ENV_API_KEY} and {ENV_BASE_URL} swapped? "
                          f"The key goes in {ENV_API_KEY} (or api_key=), the URL in {ENV_BASE_URL} (or base_url=)")
    if any(ch.isspace() for ch in key) or not key.isprintable() or not key.isascii():
        raise ConfigError("the API key contains whitespace, control or non-ASCII characters: copy it again "
                          "from the console without them")
    return key


_MAX_BASE_URL_LENGTH = 2048


def check_base_url(url: object, api_key: str = "") -> str:
    """``url`` without a trailing slash, or a ``ConfigError`` saying what is wrong with it.

    Checked here, once, so that a bad port, a broken IPv6 literal or an absurdly long URL is one
    clear line instead of a traceback from inside httpx or aiohttp at the first request. A value
    without a scheme is never echoed whole: swapped environment variables put the key there.
    """
    example = f"for example {DEFAULT_BASE_URL}"
    if not isinstance(url, str):
        raise ConfigError(f"base_url must be a string ({example}), got {type(url).__name__}")
    if len(url) > _MAX_BASE_URL_LENGTH:
        raise ConfigError(f"base_url is {len(url):,} characters long (at most {_MAX_BASE_URL_LENGTH:,}): "
                          f"it should be the API's address only, {example}")
    if "://" not in url:
        raise ConfigError(
            f"base_url {mask_key(url)!r} ({len(url)} characters, masked in case it is a key) is invalid: it must "
            f"start with http:// or https:// ({example}). If {ENV_BASE_URL} holds your API key, it and "
            f"{ENV_API_KEY} are swapped")
    shown = redact(url if len(url) <= 200 else url[:200] + "...", api_key)
    if not url.isascii() or not url.isprintable() or any(ch.isspace() for ch in url):
        raise ConfigError(f"base_url {shown!r} contains spaces, control or non-ASCII characters: use the plain "
                          f"address ({example}); percent-encode anything else")
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily by urllib: out-of-range and non-numeric ports raise only here
    except ValueError as exc:
        fix = ("write an IPv6 address in brackets, with the port after them: http://[::1]:8000/v1"
               if "IPv6" in str(exc) else "the port must be a number from 1 to 65535, as in http://127.0.0.1:8000/v1")
        raise ConfigError(f"base_url {shown!r} is invalid ({exc}): {fix}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base_url {shown!r} is invalid: it must start with http:// or https:// and name a "
                          f"host ({example})")
    if port == 0:
        raise ConfigError(f"base_url {shown!r} has port 0: use a port between 1 and 65535")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("base_url must not carry a user name or password (user:pass@host): the key goes in "
                          f"{ENV_API_KEY} or api_key=")
    labels = parts.hostname.split(".")
    if len(parts.hostname) > 253 or any(len(label) > 63 for label in labels):
        raise ConfigError(f"base_url {shown!r} has a host name DNS cannot carry (at most 253 characters, "
                          f"63 per dot-separated label): {example}")
    return url.rstrip("/")


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
    url = check_base_url(config.base_url, key)
    if not isinstance(config.max_connections, int) or config.max_connections < 1:
        raise ConfigError(f"max_connections={config.max_connections!r} is invalid: use an integer >= 1")
    if not isinstance(config.timeouts, Timeouts):
        raise ConfigError(f"timeouts={config.timeouts!r} is invalid: use kimiflow.Timeouts(...) or timeout=seconds")
    remember_key(key)
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
