"""``kimiflow chat --tool MODULE:FUNCTION --max-steps N``: the real CLI in a subprocess against ``kimiflow
sim`` in another, with a tool module written in the test's directory. The simulator calls the declared
tool that matches the question (sim/tool_match.py), then answers from its result."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from kimiflow.cli.logstore import LogStore
from tests.cli.sim_process import KIMIFLOW, sim_process

TOOLS = '''
CALLS = []

def get_weather(city: str) -> str:
    """The weather forecast for a city."""
    with open("calls.txt", "a", encoding="utf-8") as f:
        f.write(city + "\\n")
    return f"Sunny in {city}, 23C"

def get_stock_price(symbol: str) -> float:
    """The stock price of a company's ticker symbol."""
    raise RuntimeError("market closed")

NOT_A_FUNCTION = 3
'''


@pytest.fixture(scope="module")
def sim_url() -> Iterator[tuple[str, str]]:
    with sim_process() as found:
        yield found


@pytest.fixture
def workdir(tmp_path: Path, sim_url: tuple[str, str]) -> tuple[Path, dict[str, str]]:
    (tmp_path / "mytools.py").write_text(TOOLS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMIFLOW_"))}
    env.update(MOONSHOT_BASE_URL=sim_url[0], MOONSHOT_API_KEY=sim_url[1], KIMIFLOW_HOME=str(tmp_path / "home"))
    return tmp_path, env


def _kimiflow(workdir: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    cwd, env = workdir
    return subprocess.run([KIMIFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_tool_is_called_shown_and_logged(workdir) -> None:
    cwd, _ = workdir
    result = _kimiflow(workdir, "chat", "What's the weather in Beijing?", "--tool", "mytools:get_weather")
    assert result.returncode == 0, result.stderr
    assert (cwd / "calls.txt").read_text(encoding="utf-8") == "Beijing\n"  # the function really ran
    shown = [line for line in result.stderr.splitlines() if line.startswith("[tool]")]
    assert len(shown) == 1
    assert shown[0].startswith('[tool] get_weather({"city":"Beijing"}) -> Sunny in Beijing, 23C (')
    assert shown[0].endswith(" ms)")
    assert result.stdout.strip() and "[tool]" not in result.stdout  # the answer alone on stdout

    (exchange,) = LogStore(cwd / "home" / "logs.db").recent()
    assert exchange.answer.strip() == result.stdout.strip()
    (call,) = exchange.tool_calls
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Beijing"}
    assert call["result"] == "Sunny in Beijing, 23C" and call["ok"] is True and call["duration_ms"] >= 0
    # Usage covers both steps: the tool-call completion and the answer.
    assert exchange.prompt_tokens is not None and exchange.total_tokens is not None
    listed = _kimiflow(workdir, "logs")
    assert '[tool] get_weather({"city":"Beijing"}) -> Sunny in Beijing, 23C' in listed.stdout
    as_json = json.loads(_kimiflow(workdir, "logs", "--json").stdout)
    assert as_json[0]["tool_calls"][0]["result"] == "Sunny in Beijing, 23C"


def test_failing_tool_goes_back_to_the_model_and_is_marked(workdir) -> None:
    result = _kimiflow(workdir, "chat", "What is the stock price of symbol MOON?",
                       "--tool", "mytools:get_weather", "--tool", "mytools:get_stock_price")
    assert result.returncode == 0, result.stderr
    assert "[tool] get_stock_price(" in result.stderr
    assert "-> failed: error: RuntimeError: market closed" in result.stderr
    (exchange,) = LogStore(workdir[0] / "home" / "logs.db").recent()
    assert [c["ok"] for c in exchange.tool_calls if c["name"] == "get_stock_price"] == [False]


def test_max_steps_fails_loudly(workdir) -> None:
    result = _kimiflow(workdir, "chat", "What's the weather in Beijing?", "--tool", "mytools:get_weather",
                       "--max-steps", "1")
    assert result.returncode == 3
    assert "still asked for tools after --max-steps 1" in result.stderr
    assert "Raise --max-steps" in result.stderr
    assert result.stdout == ""


def test_json_output_with_tools(workdir) -> None:
    result = _kimiflow(workdir, "chat", "What's the weather in Paris?", "--tool", "mytools:get_weather", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout is only the JSON: tool lines went to stderr
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["choices"][0]["message"]["content"]
    assert "[tool] get_weather" in result.stderr


@pytest.mark.parametrize(("spec", "message"), [
    ("mytools", "is not MODULE:FUNCTION"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("mytools:nope", "module 'mytools' has no 'nope'"),
    ("mytools:NOT_A_FUNCTION", "is a int, not a function"),
])
def test_bad_tool_spec_is_a_clear_error_before_any_request(workdir, spec: str, message: str) -> None:
    result = _kimiflow(workdir, "chat", "hi", "--tool", spec)
    assert result.returncode == 2
    assert message in result.stderr and "--tool" in result.stderr
    assert not (workdir[0] / "home" / "logs.db").exists() or not LogStore(workdir[0] / "home" / "logs.db").recent()


def test_tools_in_the_interactive_chat(workdir) -> None:
    cwd, env = workdir
    child = pexpect.spawn(KIMIFLOW, ["chat", "--tool", "mytools:get_weather"], cwd=str(cwd), encoding="utf-8",
                          env={**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONUNBUFFERED": "1"},
                          timeout=20, dimensions=(40, 200))
    try:
        child.expect("Chatting with")
        child.sendline("What's the weather in Shanghai?")
        child.expect(r"\[tool\] get_weather\(\{\"city\":\"Shanghai\"\}\) -> Sunny in Shanghai, 23C")
        child.sendline("What's the weather in Beijing?")
        child.expect(r"\[tool\] get_weather\(\{\"city\":\"Beijing\"\}\)")
        child.expect(r"\n(?:\x1b\[[0-9;?]*[A-Za-z])*> ?")
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    assert child.exitstatus == 0
    first, second = reversed(LogStore(cwd / "home" / "logs.db").recent())
    assert first.conversation_id == second.conversation_id
    assert [c["result"] for c in first.tool_calls] == ["Sunny in Shanghai, 23C"]
    assert [json.loads(c["arguments"]) for c in second.tool_calls] == [{"city": "Beijing"}]
