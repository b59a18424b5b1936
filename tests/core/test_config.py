"""Configuration problems are one clear ``ConfigError`` line, found when the client is built: never a
traceback from inside httpx or aiohttp at the first request, never the key echoed back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kimiflow import AsyncKimi, ConfigError, Kimi, Timeouts
from kimiflow.core.config import resolve_config

KEY = "kf-test-SECRET-0123456789"

BAD_BASE_URLS = [
    ("http://127.0.0.1:99999/v1", "port must be a number from 1 to 65535"),
    ("http://127.0.0.1:abc/v1", "port must be a number from 1 to 65535"),
    ("http://127.0.0.1:0/v1", "port 0"),
    ("http://[::1:8080/v1", r"IPv6 address in brackets, with the port after them: http://\[::1\]:8000/v1"),
    ("http://127.0.0.1:9/" + "a" * 70_000, "70,019 characters long"),
    ("http://" + "a" * 70 + ".example/v1", "host name DNS cannot carry"),
    ("http://api.moonshot.cn /v1", "spaces, control or non-ASCII"),
    ("http://user:pw@api.moonshot.cn/v1", "user name or password"),
]


@pytest.mark.parametrize("cls", [Kimi, AsyncKimi])
@pytest.mark.parametrize(("url", "fragment"), BAD_BASE_URLS)
def test_a_base_url_no_transport_can_use_is_one_config_error_line(cls: type, url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        cls(api_key=KEY, base_url=url)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize("url", ["http://[::1]:8000/v1", "https://api.moonshot.ai/v1/", "http://localhost:1/v1"])
def test_good_base_urls_still_pass(url: str) -> None:
    assert Kimi(api_key=KEY, base_url=url).base_url == url.rstrip("/")


def test_a_key_given_as_the_base_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match="swapped") as info:
        Kimi(api_key="sk-another-key-000000", base_url=KEY)
    assert KEY not in str(info.value) and KEY[3:] not in str(info.value)


def test_swapped_environment_variables_are_named_and_neither_value_echoed() -> None:
    env = {"MOONSHOT_API_KEY": "https://api.moonshot.cn/v1", "MOONSHOT_BASE_URL": KEY}
    with pytest.raises(ConfigError, match="MOONSHOT_API_KEY and MOONSHOT_BASE_URL swapped") as info:
        resolve_config(environ=env)
    assert KEY not in str(info.value) and "api.moonshot.cn" not in str(info.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_timeouts_are_refused(value: float) -> None:
    for field in ("connect", "read", "stream_idle", "total"):
        with pytest.raises(ConfigError, match=f"timeout {field}=.* positive, finite number"):
            Timeouts(**{field: value})
    with pytest.raises(ConfigError, match="positive, finite"):
        Kimi(api_key=KEY, timeout=value)
    client = Kimi(api_key=KEY, base_url="http://127.0.0.1:3/v1")
    with pytest.raises(ConfigError, match="positive, finite"):
        client.with_options(timeout=value)
    with pytest.raises(ConfigError, match="positive, finite"):
        client.balance(timeout=value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_batch_timeout_nan_or_inf_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    value: str) -> None:
    """``--timeout nan`` passes click's FloatRange(min=0.1) (NaN compares false); the client refuses it."""
    from click.testing import CliRunner

    from kimiflow.cli.main import cli

    monkeypatch.setenv("MOONSHOT_API_KEY", KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", "http://127.0.0.1:9/v1")  # never reached
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "hi"}\n')
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "out.jsonl"), "-m", "moonshot-v1-8k",
                                      "--timeout", value])
    assert result.exit_code == 1
    assert f"timeout read={value} is invalid: use a positive, finite number of seconds" in result.output
    assert "Traceback" not in result.output
