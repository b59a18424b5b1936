"""The interactive chat in a real terminal (a pty via pexpect) against ``kimiflow sim`` in a subprocess:
type a prompt, watch the answer stream, Ctrl-C mid-answer, Ctrl-C before the first token then a
follow-up, /reset, Ctrl-D."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from kimiflow.cli.logstore import LogStore
from tests.cli.sim_process import KIMIFLOW, sim_process

ESCAPE = r"\x1b\[[0-9;?]*[A-Za-z]"
# prompt_toolkit draws the prompt at the start of a line, after a few terminal control sequences.
PROMPT = rf"\n(?:{ESCAPE})*> ?"
# ...and switches bracketed paste off once the line is submitted: from here on it is the answer.
SUBMITTED = r"\x1b\[\?2004l"


def _visible(text: str) -> str:
    return re.sub(ESCAPE, "", text).replace("\r", "")


@pytest.fixture
def realistic_sim(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``kimiflow sim --latency realistic`` on a free port: ~0.5 s to the first token, ~60 tokens/s."""
    with sim_process("--latency", "realistic") as found:
        yield found


def test_interactive_chat_in_a_terminal(realistic_sim, tmp_path: Path) -> None:
    base_url, key = realistic_sim
    home = tmp_path / "home"
    env = {**os.environ, "MOONSHOT_BASE_URL": base_url, "MOONSHOT_API_KEY": key, "KIMIFLOW_HOME": str(home),
           "TERM": "xterm", "PYTHONUNBUFFERED": "1", "PROMPT_TOOLKIT_NO_CPR": "1"}
    env.pop("KIMIFLOW_NO_LOG", None)
    # 120 tokens at ~60 tokens/s: about two seconds of streaming per answer, time enough to interrupt.
    child = pexpect.spawn(KIMIFLOW, ["chat", "--max-tokens", "120"], encoding="utf-8", env=env, timeout=20,
                          dimensions=(40, 200))
    try:
        child.expect("Chatting with moonshot-v1-8k")
        child.expect(PROMPT)

        # 1. A whole answer, streamed: part of it is on screen while the rest is still coming.
        child.sendline("hello there")
        child.expect(SUBMITTED)
        child.expect(pexpect.TIMEOUT, timeout=1.2)
        early = _visible(child.before).strip()  # a timeout leaves the text in the buffer for the next expect
        child.expect(PROMPT, timeout=15)
        whole = _visible(child.before).strip()

        # 2. Ctrl-C mid-answer stops it and returns to the prompt, still in the chat.
        child.sendline("tell me a long story")
        child.expect(SUBMITTED)
        child.expect(pexpect.TIMEOUT, timeout=0.9)
        child.sendintr()
        child.expect(r"\[interrupted\]", timeout=10)
        child.expect(PROMPT)

        # 3. Ctrl-C before the first token (~0.3-0.7 s away) cancels the turn; the chat stays usable.
        child.sendline("never mind this one")
        child.expect(SUBMITTED)
        child.expect(pexpect.TIMEOUT, timeout=0.1)
        child.sendintr()
        child.expect(r"\[cancelled\]", timeout=10)
        child.expect(PROMPT)
        child.sendline("and a follow-up")
        child.expect(SUBMITTED)
        child.expect(PROMPT, timeout=15)
        follow_up = _visible(child.before).strip()

        # 4. /reset, then Ctrl-D leaves cleanly.
        child.sendline("/reset")
        child.expect("Conversation reset.")
        child.expect(PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before

    first, second, third = reversed(LogStore(home / "logs.db").recent())
    assert first.prompt == "hello there" and not first.interrupted
    assert 0 < first.completion_tokens <= 120
    # The screen showed the logged answer: a first part early, all of it before the next prompt.
    assert early and first.answer.strip().startswith(early)
    assert len(early) < len(first.answer.strip())
    assert whole == first.answer.strip()
    assert second.prompt == "tell me a long story"
    assert second.interrupted
    assert 0 < len(second.answer) < len(first.answer)
    assert (home / "chat_history").read_text(encoding="utf-8").count("hello there") == 1
    # The cancelled turn left no trace, and the follow-up (with the history before it) was answered.
    assert third.prompt == "and a follow-up" and not third.interrupted
    assert third.conversation_id == first.conversation_id
    assert third.answer and follow_up == third.answer.strip()
    assert "Error" not in follow_up
