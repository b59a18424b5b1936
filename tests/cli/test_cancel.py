"""Ctrl-C before the first token, and answers with no content: the conversation stays usable.

Kimi answers 400 ("messages[N] with role 'assistant' must not have empty content") to every
request whose history holds an empty assistant turn, so a cancelled turn must leave no trace
in the history or the log, and ``chat -c`` must skip such turns in logs written before the fix.
The Ctrl-C is a real SIGINT to the main thread, sent while a loopback simulator with a long time
to first token is still thinking.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kimiflow import Kimi
from kimiflow.cli.conversation import Conversation
from kimiflow.cli.home import logs_path
from kimiflow.cli.logstore import Exchange, LogStore
from kimiflow.cli.repl import Repl
from kimiflow.sim import LatencyModel, SimConfig, run_in_thread
from tests.cli.test_repl import Script

MODEL = "moonshot-v1-8k"


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[object]:
    """A simulator that sends the response headers at once but its first token only after 1.5 s."""
    with run_in_thread(SimConfig(latency=LatencyModel(ttft_s=1.5), seed=11)) as server:
        yield server


@pytest.fixture
def store() -> LogStore:
    return LogStore(logs_path())


@contextmanager
def ctrl_c_after(seconds: float) -> Iterator[None]:
    """SIGINT to the main thread after ``seconds``, as a terminal sends it on Ctrl-C."""
    timer = threading.Timer(seconds, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()


def test_ctrl_c_before_the_first_token_cancels_the_turn_and_the_chat_goes_on(slow_sim, sim, store, capsys):
    with Kimi(api_key=slow_sim.api_key, base_url=slow_sim.base_url) as slow, \
            Kimi(api_key=sim.api_key, base_url=sim.base_url) as fast:
        convo = Conversation(slow, model=MODEL, params={"max_tokens": 12}, store=store)
        with ctrl_c_after(0.2):
            Repl(convo, Script("讲个长故事")).run()
        out = capsys.readouterr().out
        assert "[cancelled]" in out and "[interrupted]" not in out
        assert convo.history == []
        assert store.recent() == []
        assert convo.totals.requests == 1 and convo.totals.unknown_usage == 1

        # The follow-up is answered (it used to fail with a 400 for the empty assistant turn).
        convo.client = fast
        Repl(convo, Script("那换个短的吧")).run()
        captured = capsys.readouterr()
        assert "Error" not in captured.err
        (row,) = store.recent()
        assert row.prompt == "那换个短的吧" and row.answer and not row.interrupted
        assert row.answer in captured.out
        assert convo.history == [{"role": "user", "content": "那换个短的吧"},
                                 {"role": "assistant", "content": row.answer}]


def test_one_shot_chat_cancelled_before_the_first_token(run, slow_sim, monkeypatch) -> None:
    monkeypatch.setenv("MOONSHOT_BASE_URL", slow_sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", slow_sim.api_key)
    with ctrl_c_after(0.2):
        result = run("chat", "讲个长故事", "--usage")
    assert result.exit_code == 130
    assert result.stdout == ""
    assert "[cancelled]" in result.stderr
    assert "tokens unknown, cost unknown" in result.stderr
    assert LogStore(logs_path()).recent() == []


@pytest.fixture(scope="module")
def failing_sim() -> Iterator[object]:
    """A simulator that answers every request 503: the client sits in its retry backoff."""
    with run_in_thread(SimConfig(seed=12, fault_rates={"503": 1.0})) as server:
        yield server


def test_one_shot_chat_cancelled_while_connecting_or_backing_off(run, failing_sim, monkeypatch) -> None:
    """Ctrl-C before any response headers (here: during the retry backoff) is a cancelled turn too."""
    monkeypatch.setenv("MOONSHOT_BASE_URL", failing_sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", failing_sim.api_key)
    with ctrl_c_after(0.3):  # the first 503 comes at once; the backoff before the retry is 0.375-0.5 s
        result = run("chat", "讲个长故事")
    assert result.exit_code == 130, result.stderr
    assert "[cancelled]" in result.stderr and "Aborted" not in result.stderr
    assert LogStore(logs_path()).recent() == []


def test_an_answer_without_content_is_logged_but_never_sent_back(sim, store) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        # Five tokens are all spent on reasoning: the answer's content is empty.
        convo = Conversation(client, model="kimi-k2-thinking", params={"max_tokens": 5}, store=store)
        first = convo.send("1+1=?")
        assert first.content == "" and first.reasoning and not first.interrupted
        assert convo.history == []
        convo.params = {"max_tokens": 200}
        second = convo.send("再想想")  # a 400 if the empty turn had been kept
    assert second.content
    older, newer = reversed(store.recent())
    assert older.answer == "" and older.reasoning == first.reasoning
    assert newer.conversation_id == older.conversation_id
    assert [m["role"] for m in convo.history] == ["user", "assistant"]


def test_continue_skips_empty_answers_left_in_older_logs(run, sim_env, store) -> None:
    cid = store.new_conversation(MODEL)
    # What earlier versions logged for a Ctrl-C before the first token.
    store.record(Exchange(conversation_id=cid, model=MODEL, prompt="讲个长故事", answer="", interrupted=True))
    store.record(Exchange(conversation_id=cid, model=MODEL, prompt="你好", answer="你好！有什么可以帮你？"))
    result = run("chat", "我刚才说了什么？", "-c", "--max-tokens", "10")
    assert result.exit_code == 0, result.stderr
    newest = store.recent(limit=1)[0]
    assert newest.conversation_id == cid and newest.answer
    # Exactly the answered exchange was sent as history: same prompt size as asking it by hand.
    with Kimi(api_key=sim_env.api_key, base_url=sim_env.base_url) as client:
        by_hand = client.chat.completions.create(model=MODEL, max_tokens=10, messages=[
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！有什么可以帮你？"},
            {"role": "user", "content": "我刚才说了什么？"},
        ])
    assert by_hand.usage is not None
    assert newest.prompt_tokens == by_hand.usage.prompt_tokens
