"""The CLI's one error boundary: every kimiflow error becomes one clear line and a non-zero exit.

``--debug`` (or ``KIMIFLOW_DEBUG=1``) lets the exception through so its traceback is shown.
Messages name what went wrong and what to do about it; none of them contains the API key
(library errors are already scrubbed; ``redact`` runs again here as a second line of defence).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import click

from kimiflow.cli.settings import NO_KEY_HELP
from kimiflow.core.catalog import MODELS
from kimiflow.core.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    KimiflowError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    StreamError,
    redact,
)

DEBUG_ENV = "KIMIFLOW_DEBUG"
EXIT_ERROR = 1
BASE_URL_KEY = "kimiflow.base_url"
"""``ctx.meta`` key: the API base URL the running command talks to, for the error message."""


def remember_base_url(url: str) -> None:
    """Note the base URL the running command uses, so an error message names that one.

    Commands call it where they build their client (``--base-url`` or the settings' URL).
    """
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[BASE_URL_KEY] = url


def debug_enabled(flag: bool = False) -> bool:
    """True for ``--debug`` or a true ``KIMIFLOW_DEBUG``."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host in {"127.0.0.1", "localhost", "::1"}


def describe_error(exc: KimiflowError, *, base_url: str) -> str:
    """One line that says what went wrong and how to fix it.

    >>> describe_error(AuthenticationError("Invalid Authentication", status_code=401), base_url=url)
    'the API key was rejected (401) by https://api.moonshot.cn/v1 ...'
    """
    detail = str(exc)
    if isinstance(exc, ConfigError):
        line = detail or NO_KEY_HELP
    elif isinstance(exc, AuthenticationError):
        line = (
            f"the API key was rejected by {base_url} ({detail}). Keys from api.moonshot.cn and "
            "api.moonshot.ai are separate accounts: check that MOONSHOT_BASE_URL matches the platform "
            "that issued the key, and that the key was copied whole."
        )
    elif isinstance(exc, QuotaExceededError):
        line = (
            f"your balance or quota is exhausted ({detail}). Check it with `kimiflow balance` and top up at "
            "https://platform.moonshot.cn/console."
        )
    elif isinstance(exc, NotFoundError) and "model" in (exc.message or "").lower():
        line = f"unknown model ({detail}). Valid models: {', '.join(MODELS)} (`kimiflow models` lists yours)."
    elif isinstance(exc, RateLimitError):
        line = (
            f"rate limit reached ({detail}). Wait a moment and retry; for many requests use "
            "`kimiflow batch`, which paces itself to your tier."
        )
    elif isinstance(exc, APITimeoutError):
        line = f"the request to {base_url} timed out ({detail}). Retry, or check the network."
    elif isinstance(exc, APIConnectionError):
        if _is_loopback(base_url):
            port = urlsplit(base_url).port
            line = (
                f"nothing is answering at {base_url}: is the simulator running? Start it with "
                f"`kimiflow sim --port {port or 8000}`, or unset MOONSHOT_BASE_URL to use the real API."
            )
        else:
            line = (
                f"cannot reach {base_url} ({detail}). Check the network connection, proxy settings and "
                "MOONSHOT_BASE_URL."
            )
    elif isinstance(exc, StreamError):
        line = f"the answer stream broke off ({detail}). Retry the request."
    elif isinstance(exc, APIError):
        line = f"the API returned an error: {detail}"
    else:
        line = detail or type(exc).__name__
    return redact(line)


def report_error(exc: BaseException, *, debug: bool, ctx: click.Context | None = None) -> None:
    """Turn a kimiflow error into one line on stderr and exit 1; return for anything else.

    Called by the command group around every command, with the group's ``ctx`` so that the URL in
    the message is the one the failing command used (its ``--base-url``, else the settings'). With
    ``debug`` the error is left alone so the caller re-raises it and the traceback shows.
    """
    if not isinstance(exc, KimiflowError) or debug_enabled(debug):
        return
    base_url = ctx.meta.get(BASE_URL_KEY) if ctx is not None else None
    if base_url is None:
        try:
            from kimiflow.cli.settings import resolve

            base_url = resolve("base_url") or ""
        except KimiflowError:
            base_url = ""
    click.echo(f"Error: {describe_error(exc, base_url=base_url)}", err=True)
    raise click.exceptions.Exit(EXIT_ERROR)
