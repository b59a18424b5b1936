"""The interactive chat's loop, driven by a scripted line reader against the simulator.

The real-terminal behaviour (prompt_toolkit, Ctrl-C from the keyboard) is covered by
test_repl_terminal.py; these pin the loop's logic: history, slash commands, multi-line input,
interrupts, thinking models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kimiflow import Kimi
from kimiflow.cli.conversation import Conversation
from kimiflow.cli.home import logs_path
from kimiflow.cli.logstore import LogStore
from kimiflow.cli.repl import Repl


class Script:
    """A line reader that plays back inputs; ``KeyboardInterrupt`` entries raise it; the end is Ctrl-D."""

    def __init__(self, *lines: object) -> None:
        self._lines: Iterator[object] = iter(lines)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        item = next(self._lines, EOFError)
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item()
        assert isinstance(item, str)
        return item


@pytest.fixture
def client(sim) -> Iterator[Kimi]:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as c:
        yield c


@pytest.fixture
def store() -> LogStore:
    return LogStore(logs_path())


def _convo(client: Kimi, store: LogStore | None = None, **kwargs) -> Conversation:
    kwargs.setdefault("params", {"max_tokens": 12})
    return Conversation(client, model="moonshot-v1-8k", store=store, **kwargs)


def test_turns_build_history_and_are_logged_in_one_conversation(client, store, capsys) -> None:
    convo = _convo(client, store)
    Repl(convo, Script("你好", "再说一句")).run()
    rows = list(reversed(store.recent()))
    assert [r.prompt for r in rows] == ["你好", "再说一句"]
    assert rows[0].conversation_id == rows[1].conversation_id
    assert rows[1].prompt_tokens > rows[0].prompt_tokens  # the first exchange was sent again
    assert [m["role"] for m in convo.history] == ["user", "assistant", "user", "assistant"]
    out = capsys.readouterr().out
    assert out.startswith("Chatting with moonshot-v1-8k.")
    assert rows[0].answer in out and rows[1].answer in out


def test_slash_commands(client, store, tmp_path: Path, capsys) -> None:
    saved = tmp_path / "chat.md"
    convo = _convo(client, store)
    Repl(convo, Script(
        "/help", "你好", "/usage", "/model kimi-k2-turbo-preview", "/system 你是律师", "第二个问题",
        "/save " + str(saved), "/reset", "第三个问题", "/bogus", "/exit", "never read",
    )).run()
    out = capsys.readouterr().out
    assert "/reset          forget the conversation" in out
    first, second, third = reversed(store.recent())
    assert f"1 requests: {first.prompt_tokens} prompt + {first.completion_tokens} completion tokens" in out
    assert "Model: kimi-k2-turbo-preview" in out and second.model == "kimi-k2-turbo-preview"
    assert "System prompt: 你是律师" in out and second.system == "你是律师"
    assert second.conversation_id == first.conversation_id
    assert "Conversation reset." in out
    assert third.conversation_id != first.conversation_id
    assert third.system == "你是律师"  # /reset keeps the system prompt
    assert third.prompt_tokens < second.prompt_tokens  # and drops the history
    transcript = saved.read_text(encoding="utf-8")
    assert "**system:** 你是律师" in transcript
    assert "**user:** 你好" in transcript and f"**assistant:** {second.answer}" in transcript
    assert "Unknown command /bogus" in out
    assert "never read" not in [r.prompt for r in store.recent()]


def test_multiline_block_and_ctrl_c_at_the_prompt(client, store) -> None:
    script = Script(KeyboardInterrupt, '"""', "第一行", "第二行", '"""', "")
    Repl(_convo(client, store), script).run()
    (row,) = store.recent()
    assert row.prompt == "第一行\n第二行"
    assert script.prompts == ["> ", "> ", "… ", "… ", "… ", "> ", "> "]


def test_an_api_error_does_not_end_the_chat(client, store, capsys) -> None:
    Repl(_convo(client, store), Script("/model no-such-model", "你好", "/model moonshot-v1-8k", "你好")).run()
    captured = capsys.readouterr()
    assert "Error: unknown model" in captured.err
    assert [r.model for r in store.recent()] == ["moonshot-v1-8k"]


def test_interrupted_answer_keeps_what_was_shown(client, store) -> None:
    full = _convo(client, params={"max_tokens": 40}).send("讲个长故事").content
    shown: list[str] = []

    def impatient(text: str) -> None:
        shown.append(text)
        if len(shown) == 3:
            raise KeyboardInterrupt

    convo = _convo(client, store, params={"max_tokens": 40})
    reply = convo.send("讲个长故事", on_text=impatient)
    assert reply.interrupted
    assert reply.content == "".join(shown)
    assert full.startswith(reply.content) and len(reply.content) < len(full)
    assert convo.history[-1] == {"role": "assistant", "content": reply.content}
    (row,) = store.recent()
    assert row.interrupted and row.answer == reply.content


def test_interrupted_answer_usage_is_unknown_not_zero(client, store, run) -> None:
    def impatient(text: str) -> None:
        raise KeyboardInterrupt

    convo = _convo(client, store, params={"max_tokens": 40})
    answered = convo.send("你好")
    reply = convo.send("讲个长故事", on_text=impatient)
    assert reply.interrupted and reply.content and not reply.cancelled
    # The usage trailer never arrived: unknown, which is not the same as free.
    assert reply.usage is None and reply.cost_cny is None
    row = store.recent(limit=1)[0]
    assert row.prompt_tokens is None and row.completion_tokens is None and row.total_tokens is None
    assert row.cost_cny is None
    assert answered.usage is not None
    assert convo.totals.describe() == (
        f"2 requests: {answered.usage.prompt_tokens} prompt + {answered.usage.completion_tokens} completion "
        f"tokens, cost ¥{answered.cost_cny:.6f} (usage unknown for 1 interrupted, not included)"
    )
    shown = run("logs", "-n", "1").stdout
    assert "tokens unknown" in shown and "cost unknown" in shown and "interrupted" in shown
    assert "0 prompt" not in shown and "¥0.000000" not in shown


def test_an_api_error_names_the_url_the_chat_is_using(store, capsys, monkeypatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MOONSHOT_BASE_URL", "https://api.moonshot.cn/v1")  # not what the client uses
    url = f"http://127.0.0.1:{port}/v1"
    with Kimi(api_key="sk-sim-kimiflow-local-0000000000000000", base_url=url, max_retries=0) as down:
        Repl(_convo(down, store), Script("你好")).run()
    err = capsys.readouterr().err
    assert f"nothing is answering at {url}: is the simulator running?" in err
    assert "api.moonshot.cn" not in err


def test_thinking_model_shows_reasoning_and_sends_it_back(client, store, capsys) -> None:
    convo = Conversation(client, model="kimi-k2-thinking", params={"max_tokens": 60}, store=store)
    Repl(convo, Script("1+1=?", "再想想")).run()
    first, second = reversed(store.recent())
    assert first.reasoning
    assert convo.history[1]["reasoning_content"] == first.reasoning
    out = capsys.readouterr().out
    assert out.index(first.reasoning) < out.index(first.answer)
    # Reasoning was part of the second request: more prompt tokens than history without it would need.
    without = Conversation(client, model="kimi-k2-thinking", params={"max_tokens": 60})
    without.history = [{"role": "user", "content": "1+1=?"}, {"role": "assistant", "content": first.answer}]
    assert second.prompt_tokens > without.send("再想想").usage.prompt_tokens


def test_continued_conversation_says_so_and_keeps_logging_into_it(client, store, capsys) -> None:
    first = _convo(client, store, system="你是律师")
    first.send("你好")
    convo = _convo(client, store)
    convo.load(store.conversation(store.last_conversation_id()))
    Repl(convo, Script("继续")).run()
    assert "Continuing a conversation of 1 exchanges." in capsys.readouterr().out
    older, newer = reversed(store.recent())
    assert newer.conversation_id == older.conversation_id
    assert newer.system == "你是律师"
