"""Configuration: argument > environment > default, immutable clients, clear errors."""

from __future__ import annotations

import pytest

from kimiflow import AsyncKimi, ConfigError, InvalidArgumentError, Kimi, Timeouts
from kimiflow.core.config import DEFAULT_BASE_URL, mask_key, resolve_config


def test_argument_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-from-env-123456")
    monkeypatch.setenv("MOONSHOT_BASE_URL", "http://127.0.0.1:1/v1")
    assert Kimi().api_key == "sk-from-env-123456"
    assert Kimi().base_url == "http://127.0.0.1:1/v1"
    assert Kimi(api_key="sk-arg-1234567", base_url="http://127.0.0.1:2/v1/").base_url == "http://127.0.0.1:2/v1"
    monkeypatch.delenv("MOONSHOT_BASE_URL")
    assert Kimi().base_url == DEFAULT_BASE_URL == "https://api.moonshot.cn/v1"


@pytest.mark.parametrize("cls", [Kimi, AsyncKimi])
def test_missing_key_says_how_to_set_it(cls: type) -> None:
    with pytest.raises(ConfigError, match="export MOONSHOT_API_KEY"):
        cls()


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"base_url": "api.moonshot.cn/v1"}, "http://"),
    ({"max_retries": -1}, "max_retries"),
    ({"timeout": "10s"}, "timeout"),
    ({"timeout": -1}, "timeout"),
])
def test_bad_settings_are_rejected_with_the_fix(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Kimi(api_key="sk-1234567890", **kwargs)


def test_timeouts_reject_non_positive_values() -> None:
    with pytest.raises(ConfigError, match="connect"):
        Timeouts(connect=0)


def test_with_options_returns_a_modified_copy() -> None:
    client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1")
    quick = client.with_options(timeout=5, max_retries=0)
    assert (quick.timeouts.read, quick.timeouts.stream_idle, quick.max_retries) == (5, 5, 0)
    assert (client.timeouts.read, client.max_retries) == (600.0, 2)
    assert quick.base_url == client.base_url
    other = client.with_options(api_key="sk-other-key-000")
    assert other.api_key == "sk-other-key-000" and client.api_key == "sk-1234567890"


def test_mask_key_shows_only_the_end() -> None:
    assert mask_key("sk-1234567890abcdef") == "sk-...cdef"
    assert mask_key(None) == "<not set>"
    assert "1234567890" not in repr(resolve_config(api_key="sk-1234567890abcdef", environ={}))


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"api_key": None}, "no API key"),
    ({"api_key": "sk-密钥abc123"}, "non-ASCII"),
    ({"foo": 1}, "unknown setting"),
    ({"max_retries": "x"}, "max_retries"),
])
def test_with_options_rejects_bad_settings(changes: dict, fragment: str) -> None:
    client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1")
    with pytest.raises(ConfigError, match=fragment):
        client.with_options(**changes)


def test_with_options_normalises_the_base_url_like_the_constructor() -> None:
    client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1")
    assert client.with_options(base_url="http://127.0.0.1:4/v1/").base_url == "http://127.0.0.1:4/v1"


def test_non_ascii_key_is_a_config_error_that_does_not_echo_it() -> None:
    with pytest.raises(ConfigError) as info:
        Kimi(api_key="sk-密钥abc123")
    assert "密钥" not in str(info.value)


@pytest.mark.parametrize("bad", [-1, "x", 1.5])
def test_per_call_max_retries_is_validated(bad: object) -> None:
    client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1")
    with pytest.raises(ConfigError, match="max_retries"):
        client.chat.completions.create(model="moonshot-v1-8k", messages=[{"role": "user", "content": "hi"}],
                                       max_retries=bad)  # type: ignore[arg-type]


def test_ask_cannot_stream_and_says_what_to_use() -> None:
    client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1")
    with pytest.raises(InvalidArgumentError, match=r"chat\.completions\.stream"):
        client.ask("hi", stream=True)


@pytest.mark.parametrize("headers", [{"X-A": 1}, {"X-A": "ä"}, {"X-A": "ok\n"}, {"X-Ä": "ok"}])
def test_headers_that_http_cannot_carry_are_config_errors(headers: dict) -> None:
    with pytest.raises(ConfigError, match="printable ASCII"):
        Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1", default_headers=headers)
    client = Kimi(api_key="sk-1234567890", base_url="http://127.0.0.1:3/v1")
    with pytest.raises(ConfigError, match="printable ASCII"):
        client.chat.completions.create(model="moonshot-v1-8k", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers=headers)


@pytest.mark.parametrize("url", ["http://", "https:///v1", "ftp://host/v1"])
def test_a_base_url_without_a_host_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        Kimi(api_key="sk-1234567890", base_url=url)
