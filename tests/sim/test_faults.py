"""Every injectable fault, per request (header) and per server (seeded rates)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import pytest

from tests.sim.conftest import Api, RecordingSleep, SimFactory

FAULT = "X-Kimiflow-Sim-Fault"


@pytest.mark.parametrize(
    ("name", "status", "error_type", "message_part"),
    [
        ("429", 429, "rate_limit_reached_error", "please try again after 1 seconds"),
        ("429;retry_after=7", 429, "rate_limit_reached_error", "please try again after 7 seconds"),
        ("overloaded", 429, "engine_overloaded_error", "The engine is currently overloaded, please try again later"),
        ("quota", 429, "exceeded_current_quota_error", "You exceeded your current token quota"),
        ("quota-403", 403, "exceeded_current_quota_error", "is not active, current state: suspended"),
        ("500", 500, "unexpected_output", "invalid state transition"),
        ("502", 502, "server_error", "Bad gateway"),
        ("503", 503, "server_unavailable", "temporarily unavailable"),
    ],
)
async def test_status_faults(api: Api, name: str, status: int, error_type: str, message_part: str) -> None:
    for stream in (False, True):
        reply = await api.chat({"stream": stream}, headers={FAULT: name})
        assert reply.status == status
        assert reply.error["type"] == error_type
        assert message_part in reply.error["message"]
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        assert reply.headers["Msh-Request-Id"]
        assert "Retry-After" not in reply.headers
    assert api.sim.stats.faults[name.split(";")[0]] == 2


async def test_429_with_retry_after_header(api: Api) -> None:
    reply = await api.chat({}, headers={FAULT: "429-retry-after;retry_after=3"})
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "3"
    assert "please try again after 3 seconds" in reply.error["message"]


async def test_status_faults_apply_to_other_endpoints(api: Api) -> None:
    assert (await api.request("GET", "/models", headers={FAULT: "503"})).status == 503


async def test_times_and_key_fail_first_n_then_succeed(api: Api) -> None:
    header = {FAULT: "500;times=2;key=job-1"}
    statuses = [(await api.chat({}, headers=header)).status for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    other = await api.chat({}, headers={FAULT: "500;times=2;key=job-2"})
    assert other.status == 500


async def test_reset_aborts_before_any_response_byte(api: Api) -> None:
    with pytest.raises(aiohttp.ClientOSError):
        await api.chat({}, headers={FAULT: "reset"})
    assert api.sim.stats.resets == 1
    assert (await api.chat({})).status == 200


async def test_cut_stream_closes_without_done(api: Api) -> None:
    url = api.sim.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api.sim.api_key}", FAULT: "cut;after=3"}
    body = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    received = b""
    async with api.session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
    assert received.count(b"data: ") == 3
    assert b"[DONE]" not in received


async def test_cut_clean_ends_http_response_without_done(api: Api) -> None:
    reply = await api.chat({"stream": True}, headers={FAULT: "cut;after=2;clean=1"})
    events = reply.events()
    assert len(events) == 2
    assert "[DONE]" not in events


async def test_cut_non_stream_closes_mid_body(api: Api) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.chat({}, headers={FAULT: "cut"})


async def test_malformed_stream_chunk(api: Api) -> None:
    reply = await api.chat({"stream": True}, headers={FAULT: "malformed;after=2"})
    lines = [line for line in reply.body.split(b"\n") if line.startswith(b"data: ")]
    msgspec.json.decode(lines[0][6:])
    msgspec.json.decode(lines[1][6:])
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(lines[2][6:])
    assert lines[-1] == b"data: [DONE]"


async def test_malformed_non_stream_body(api: Api) -> None:
    reply = await api.chat({}, headers={FAULT: "malformed"})
    assert reply.status == 200
    with pytest.raises(msgspec.DecodeError):
        reply.json()


async def test_error_event_mid_stream(api: Api) -> None:
    reply = await api.chat({"stream": True}, headers={FAULT: "error-event;after=4"})
    events = reply.events()
    assert len(events) == 5
    assert events[-1] == {"error": {"message": events[-1]["error"]["message"], "type": "server_error"}}
    assert "[DONE]" not in events


async def test_stall_sends_headers_then_silence_with_keepalives(api: Api) -> None:
    url = api.sim.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api.sim.api_key}", FAULT: "stall;after=2;keepalive=0.05"}
    body = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    received = b""
    started = time.monotonic()
    async with api.session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200
        while time.monotonic() - started < 0.4:
            try:
                received += await asyncio.wait_for(resp.content.readany(), 0.5)
            except asyncio.TimeoutError:
                break
    assert received.count(b"data: ") == 2
    assert received.count(b": keep-alive\n\n") >= 3
    for _ in range(100):  # the server notices the disconnect and frees the slot
        if api.sim.stats.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert api.sim.stats.in_flight == 0


async def test_stall_without_keepalive_is_silent(api: Api) -> None:
    url = api.sim.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api.sim.api_key}", FAULT: "stall;after=1"}
    body = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with api.session.post(url, json=body, headers=headers) as resp:
        first = await asyncio.wait_for(resp.content.readany(), 2)
        assert first.count(b"data: ") == 1
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readany(), 0.2)


async def test_trickle_delays_every_chunk(make_api: SimFactory) -> None:
    sleep = RecordingSleep()
    api = await make_api(sleep=sleep)
    reply = await api.chat({"stream": True}, headers={FAULT: "trickle;interval=0.2", "X-Kimiflow-Sim-Tokens": "10"})
    assert reply.events()[-1] == "[DONE]"
    assert sleep.calls == [0.2] * 11  # between role, 10 tokens and the final chunk


async def test_keepalive_comments_between_chunks(api: Api) -> None:
    reply = await api.chat({"stream": True}, headers={FAULT: "keepalive", "X-Kimiflow-Sim-Tokens": "5"})
    assert reply.body.count(b": keep-alive\n\n") == 6
    assert len(reply.events()) == 1 + 5 + 1 + 1


async def test_unknown_fault_name_is_a_clear_400(api: Api) -> None:
    reply = await api.chat({}, headers={FAULT: "explode"})
    assert reply.status == 400
    assert "unknown fault 'explode'" in reply.error["message"]
    bad_param = await api.chat({}, headers={FAULT: "500;times=x"})
    assert bad_param.status == 400
    assert "times=x" in bad_param.error["message"]


async def test_server_fault_rates_are_seeded(make_api: SimFactory) -> None:
    async def statuses(seed: int) -> list[int]:
        api = await make_api(seed=seed, fault_rates={"500": 0.3, "503": 0.2})
        return [(await api.chat({})).status for _ in range(40)]

    first, again = await statuses(3), await statuses(3)
    assert first == again
    assert {500, 503, 200} == set(first)
    assert 8 <= first.count(500) <= 20


async def test_injected_429_quotes_the_tier_rpm(make_api: SimFactory) -> None:
    api = await make_api(tier=2)
    reply = await api.chat({}, headers={FAULT: "429;retry_after=4"})
    assert "request reached organization max RPM: 500, please try again after 4 seconds" in reply.error["message"]
    assert api.sim.limiter.in_flight(api.sim.api_key) == 0


async def test_stall_non_stream_sends_headers_then_nothing(api: Api) -> None:
    url = api.sim.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api.sim.api_key}", FAULT: "stall"}
    body = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
    async with api.session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Msh-Request-Id"]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readany(), 0.2)


async def test_cut_applies_to_other_json_endpoints(api: Api) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.request("GET", "/models", headers={FAULT: "cut"})


def test_every_fault_is_documented_in_the_package_docstring() -> None:
    import kimiflow.sim

    doc = kimiflow.sim.__doc__ or ""
    missing = [name for name in kimiflow.sim.FAULT_NAMES if f"``{name}``" not in doc]
    assert missing == []


@pytest.mark.parametrize("path", ["/models", "/users/me/balance", "/files"])
async def test_truncated_200_is_a_well_framed_answer_with_half_the_json(api: Api, path: str) -> None:
    whole = await api.request("GET", path)
    reply = await api.request("GET", path, headers={FAULT: "truncated-200"})  # no ClientPayloadError
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert reply.body == whole.body[: len(whole.body) // 2]
    with pytest.raises(msgspec.DecodeError):
        reply.json()
    assert api.sim.stats.faults["truncated-200"] == 1


async def test_truncated_200_on_chat_is_not_billed(api: Api) -> None:
    balance = api.sim.balance
    reply = await api.chat({}, headers={FAULT: "truncated-200"})
    assert reply.status == 200
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert reply.body.startswith(b'{"id":"chatcmpl-')
    with pytest.raises(msgspec.DecodeError):
        reply.json()
    assert api.sim.balance == balance


async def test_echo_key_puts_the_authorization_value_in_the_id_and_the_500(api: Api) -> None:
    authorization = f"Bearer {api.sim.api_key}"
    for path, method in (("/chat/completions", "POST"), ("/models", "GET")):
        body = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
        reply = await api.request(method, path, json=body if method == "POST" else None, headers={FAULT: "echo-key"})
        assert reply.status == 500, path
        assert reply.headers["Msh-Request-Id"] == authorization
        assert reply.error["type"] == "server_error"
        assert reply.error["message"].endswith(": " + authorization)


async def test_echo_key_in_a_stream_is_a_mid_stream_error_event(api: Api) -> None:
    authorization = f"Bearer {api.sim.api_key}"
    reply = await api.chat({"stream": True}, headers={FAULT: "echo-key;after=3"})
    assert reply.status == 200
    assert reply.headers["Msh-Request-Id"] == authorization
    events = reply.events()
    assert len(events) == 4 and "[DONE]" not in events
    assert all("choices" in event for event in events[:3])
    assert events[3]["error"]["type"] == "server_error"
    assert events[3]["error"]["message"].endswith(": " + authorization)


async def _read_unterminated(api: Api, seconds: float) -> tuple[list[tuple[float, bytes]], bool]:
    """(arrival time, bytes) of every read for ``seconds``, and whether the server ended the body."""
    url = api.sim.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api.sim.api_key}", FAULT: "unterminated"}
    body = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    reads: list[tuple[float, bytes]] = []
    ended = False
    started = time.monotonic()
    async with api.session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        while (left := seconds - (time.monotonic() - started)) > 0:
            try:
                data = await asyncio.wait_for(resp.content.readany(), left)
            except asyncio.TimeoutError:
                break
            except aiohttp.ClientPayloadError:
                ended = True
                break
            if not data:
                ended = True
                break
            reads.append((time.monotonic(), data))
    return reads, ended


async def test_unterminated_sends_one_byte_of_a_data_line_every_200_ms(api: Api) -> None:
    reads, ended = await _read_unterminated(api, 1.3)
    received = b"".join(data for _, data in reads)
    assert not ended
    assert 3 <= len(received) <= 8
    assert all(len(data) == 1 for _, data in reads)
    assert b"data: "[: len(received)] == received[:6]
    assert b"\n" not in received and b"\r" not in received
    times = [at for at, _ in reads]
    gaps = [times[i + 1] - times[i] for i in range(len(times) - 1)]
    assert min(gaps) >= 0.1
    for _ in range(100):  # the client left: the server stops writing and frees the slot
        if api.sim.stats.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert api.sim.stats.in_flight == 0
    assert api.sim.stats.stream_chunks == 0


async def test_unterminated_gives_up_at_its_time_limit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import kimiflow.sim.chat

    monkeypatch.setattr(kimiflow.sim.chat, "UNTERMINATED_LIMIT_S", 0.5)
    reads, ended = await _read_unterminated(api, 5.0)
    assert ended
    assert b"\n" not in b"".join(data for _, data in reads)
    assert 1 <= len(reads) <= 4


async def test_unterminated_leaves_json_answers_alone(api: Api) -> None:
    reply = await api.chat({}, headers={FAULT: "unterminated"})
    assert reply.status == 200
    assert reply.json()["choices"][0]["message"]["content"]
