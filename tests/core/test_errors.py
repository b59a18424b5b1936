"""The status + error.type → exception table, and error bodies turned into errors exactly once."""

from __future__ import annotations

import pytest

from kimiflow.core.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    EngineOverloadedError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    error_class_for,
    redact,
)
from kimiflow.core.requests import error_from_response


@pytest.mark.parametrize(("status", "etype", "cls"), [
    (400, "invalid_request_error", BadRequestError),
    (400, "content_filter", ContentFilterError),
    (401, "invalid_authentication_error", AuthenticationError),
    (401, "incorrect_api_key_error", AuthenticationError),
    (403, "permission_denied_error", PermissionDeniedError),
    (403, "exceeded_current_quota_error", QuotaExceededError),
    (429, "exceeded_current_quota_error", QuotaExceededError),
    (404, "resource_not_found_error", NotFoundError),
    (429, "rate_limit_reached_error", RateLimitError),
    (429, "engine_overloaded_error", EngineOverloadedError),
    (500, "server_error", InternalServerError),
    (500, "unexpected_output", InternalServerError),
    (502, None, InternalServerError),
    (429, None, RateLimitError),
    (418, None, APIStatusError),
    (400, "engine_overloaded_error", BadRequestError),  # the type never moves an error to another status family
])
def test_error_class_table(status: int, etype: str | None, cls: type) -> None:
    assert error_class_for(status, etype) is cls


def test_error_from_moonshot_body_keeps_everything() -> None:
    body = (b'{"error":{"message":"Your account o<ak> request reached organization max RPM: 3, '
            b'please try again after 20 seconds","type":"rate_limit_reached_error"}}')
    err = error_from_response(429, body, {"Msh-Request-Id": "req-1"})
    assert isinstance(err, RateLimitError)
    assert (err.status_code, err.type, err.request_id, err.retry_after) == (429, "rate_limit_reached_error",
                                                                           "req-1", 20.0)
    assert err.body == {"error": {"message": err.message, "type": "rate_limit_reached_error"}}


def test_error_from_non_json_body_is_still_typed() -> None:
    err = error_from_response(502, b"<html>Bad Gateway</html>", {})
    assert isinstance(err, InternalServerError) and "Bad Gateway" in err.message and err.type is None


def test_error_message_never_echoes_the_key() -> None:
    body = b'{"error":{"message":"Incorrect API key provided: sk-abcdef123456","type":"incorrect_api_key_error"}}'
    err = error_from_response(401, body, {}, api_key="sk-abcdef123456")
    assert "sk-abcdef123456" not in str(err) and "sk-***" in str(err)


def test_redact_scrubs_key_shapes_and_given_secrets() -> None:
    assert redact("key sk-AAAAAAAAAAAA and mysecret", "mysecret") == "key sk-*** and sk-***"


def test_a_server_echoing_the_key_does_not_put_it_in_the_error_body() -> None:
    body = b'{"error":{"message":"Incorrect API key provided: sk-abcdef123456","type":"incorrect_api_key_error"}}'
    err = error_from_response(401, body, {}, api_key="sk-abcdef123456")
    assert "sk-abcdef123456" not in repr(err.body) and err.body["error"]["type"] == "incorrect_api_key_error"


def test_odd_field_types_in_an_error_body_still_give_the_type() -> None:
    """OpenAI-compatible gateways send a numeric ``code``; a quota error must stay a (never retried) quota error."""
    body = b'{"error":{"message":"You exceeded your current token quota","type":"exceeded_current_quota_error","code":429}}'
    err = error_from_response(429, body, {})
    assert isinstance(err, QuotaExceededError) and err.message.startswith("You exceeded")


def test_a_key_in_use_of_any_shape_is_redacted_without_being_passed() -> None:
    from kimiflow.core.errors import remember_key

    key = "kf-unit-SECRET-9876543210"
    assert redact(f"x {key} y") == f"x {key} y"  # unknown: nothing to recognise it by
    remember_key(key)
    assert redact(f"x {key} y") == "x sk-*** y"
    remember_key("short")  # placeholders shorter than 8 characters would mangle ordinary words
    assert redact("a short word") == "a short word"


def test_the_keys_remembered_are_bounded() -> None:
    from kimiflow.core import errors

    saved = dict(errors.KEYS_IN_USE)
    try:
        for number in range(errors._MAX_KEYS_IN_USE + 10):
            errors.remember_key(f"kf-many-keys-{number:04d}")
        assert len(errors.KEYS_IN_USE) == errors._MAX_KEYS_IN_USE
        assert redact("kf-many-keys-0000") == "kf-many-keys-0000"  # the oldest was forgotten
        assert redact(f"kf-many-keys-{errors._MAX_KEYS_IN_USE + 9:04d}") == "sk-***"
    finally:  # the keys of other tests' clients stay remembered
        errors.KEYS_IN_USE.clear()
        errors.KEYS_IN_USE.update(saved)


def test_request_id_error_type_and_nested_body_strings_are_scrubbed() -> None:
    key = "kf-unit-ECHO-0123456789"
    body = (b'{"error":{"message":"bad ' + key.encode() + b'","type":"' + key.encode() + b'"},'
            b'"detail":{"escaped":"kf-unit-ECHO-\\u0030123456789","list":["Bearer ' + key.encode() + b'"]}}')
    err = error_from_response(500, body, {"Msh-Request-Id": f"req-{key}"}, api_key=key)
    assert err.request_id == "req-sk-***" and err.type == "sk-***"
    assert key not in repr(err.body) and err.body["detail"]["escaped"] == "sk-***"  # found after JSON unescaping
    assert key not in str(err)


def test_a_non_json_error_body_is_cut_after_scrubbing() -> None:
    """A key straddling the 500-character excerpt boundary must not leave its first characters behind."""
    key = "kf-unit-EDGE-0123456789"
    err = error_from_response(502, b"p" * 490 + key.encode() + b" tail", {}, api_key=key)
    assert "kf-unit" not in err.message


def test_a_deeply_nested_error_body_is_still_an_error_not_a_recursion_error() -> None:
    err = error_from_response(500, b"[" * 5000 + b"]" * 5000, {})
    assert isinstance(err, InternalServerError) and err.body is None
