"""SimConfig validation, the latency model (with injected sleep), the fault header grammar, run_in_thread."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

import kimiflow.sim
from kimiflow.sim import LatencyModel, SimConfig, run_in_thread
from kimiflow.sim.errors import SimError
from kimiflow.sim.faults import Fault
from tests.sim.conftest import RecordingSleep, SimFactory


def test_public_names() -> None:
    assert sorted(kimiflow.sim.__all__) == [
        "DEFAULT_KEY",
        "FAULT_HEADER",
        "FAULT_NAMES",
        "LatencyModel",
        "SimConfig",
        "SimStats",
        "Simulator",
        "parse_fault_rates",
        "run_in_thread",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tier": 6}, "tier must be None or one of 0..5"),
        ({"latency": "slow"}, "unknown latency preset 'slow'"),
        ({"keys": "sk-one"}, "keys must be a tuple of strings"),
        ({"keys": ("sk a",)}, "non-empty string without whitespace"),
        ({"fault_rates": {"boom": 0.1}}, "unknown fault 'boom'"),
        ({"fault_rates": {"500": 1.5}}, "must be in [0, 1]"),
        ({"fault_rates": {"500": 0.6, "503": 0.6}}, "their sum must be at most 1"),
        ({"max_files": 0}, "must be positive"),
    ],
)
def test_bad_config_is_a_clear_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        SimConfig(**kwargs)
    assert message in str(excinfo.value)


def test_latency_model_validates_and_jitters_within_bounds() -> None:
    with pytest.raises(ValueError, match="jitter"):
        LatencyModel(jitter=1.5)
    model = LatencyModel(ttft_s=0.5, tokens_per_second=60, jitter=0.4)
    rng = random.Random(0)
    for _ in range(200):
        ttft, per_token = model.sample(rng)
        assert 0.3 <= ttft <= 0.7
        assert 1 / 84 <= per_token <= 1 / 36
    assert SimConfig(latency="realistic").latency_model.ttft_s == 0.5
    assert SimConfig().latency_model.is_instant


async def test_non_stream_sleeps_ttft_plus_tokens_over_rate(make_api: SimFactory) -> None:
    sleep = RecordingSleep()
    api = await make_api(latency=LatencyModel(ttft_s=0.4, tokens_per_second=50), sleep=sleep)
    reply = await api.chat({}, headers={"X-Kimiflow-Sim-Tokens": "100"})
    assert reply.status == 200
    assert sleep.calls == [pytest.approx(0.4 + 100 / 50)]


async def test_stream_sleeps_ttft_then_per_token(make_api: SimFactory) -> None:
    sleep = RecordingSleep()
    api = await make_api(latency=LatencyModel(ttft_s=0.3, tokens_per_second=20), sleep=sleep)
    reply = await api.chat({"stream": True}, headers={"X-Kimiflow-Sim-Tokens": "10"})
    assert reply.events()[-1] == "[DONE]"
    assert sleep.calls[0] == pytest.approx(0.3)
    assert sleep.calls[1:] == [pytest.approx(0.05)] * 11


async def test_fast_mode_never_sleeps(make_api: SimFactory) -> None:
    sleep = RecordingSleep()
    api = await make_api(sleep=sleep)
    await api.chat({"stream": True})
    await api.chat({})
    assert sleep.calls == []


def test_fault_header_grammar() -> None:
    fault = Fault.parse("stall;after=3;keepalive=0.5;times=2;key=k1")
    assert (fault.name, fault.after, fault.keepalive, fault.times, fault.key) == ("stall", 3, 0.5, 2, "k1")
    assert Fault.parse("trickle").interval == 0.05
    with pytest.raises(SimError, match="unknown fault parameter 'colour'"):
        Fault.parse("500;colour=red")
    with pytest.raises(SimError, match="needs a non-negative number"):
        Fault.parse("cut;after=-1")


def test_run_in_thread_serves_sync_code() -> None:
    with run_in_thread(SimConfig(seed=2)) as sim:
        reply = httpx.get(sim.base_url + "/models", headers={"Authorization": f"Bearer {sim.api_key}"})
        assert reply.status_code == 200
        assert sim.stats.requests == 1
        assert repr(sim) == f"Simulator(base_url={sim.base_url!r}, tier=None)"
        base_url = sim.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/models", timeout=2)


def test_run_in_thread_reports_a_busy_port() -> None:
    with run_in_thread() as first, pytest.raises(OSError), run_in_thread(port=first.port):
        pass


async def test_prompt_over_one_megabyte_is_accepted(make_api: SimFactory) -> None:
    api = await make_api()
    text = "数据" * 200_000  # 1.2 MB of UTF-8, 400k tokens: too long for the model, but parsed
    reply = await api.chat({"model": "kimi-k2.5", "messages": [{"role": "user", "content": text}]})
    assert reply.status == 400
    assert reply.error["message"] == "Input token length too long"
