"""The API key never appears in reprs, error strings, logs (any level) or tracebacks."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

import pytest

from kimiflow import APIError, Kimi
from tests.client.twins import Twin

SECRET = "sk-TOPSECRET0123456789abcdefXYZ"


def library_locals(exc: BaseException) -> str:
    captured = traceback.TracebackException.from_exception(exc, capture_locals=True)
    frames = [frame for frame in captured.stack if f"{os.sep}src{os.sep}kimiflow{os.sep}" in frame.filename]
    assert frames, "the traceback holds no kimiflow frame to check"
    return "".join(f"{frame.filename}:{frame.lineno} {frame.locals}\n" for frame in frames)


def test_key_absent_from_repr_errors_logs_and_tracebacks(sim: Any, caplog: pytest.LogCaptureFixture,
                                                         twin: Twin) -> None:
    caplog.set_level(logging.DEBUG)
    client = Kimi(api_key=SECRET, base_url=sim.base_url, max_retries=1, sleep=lambda s: None)
    assert SECRET not in repr(client) and SECRET not in repr(client._config)
    texts = [repr(client), repr(client._config)]
    for fault in (None, "500", "reset"):
        headers = {"X-Kimiflow-Sim-Fault": fault} if fault else None
        with pytest.raises(APIError) as info:
            twin.run(lambda c, headers=headers: c.chat.completions.create(
                model="moonshot-v1-8k", messages=[{"role": "user", "content": "hi"}], extra_headers=headers),
                     api_key=SECRET, max_retries=1)
        texts += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value)),
                  repr(info.value.body),
                  # what `pytest --showlocals`, rich's show_locals and error trackers print, for kimiflow's frames
                  # (the test's own frames hold the key as an argument, of course)
                  library_locals(info.value)]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records, "debug logging produced nothing to check"
    leaked = [text for text in texts if SECRET in text or SECRET[3:] in text]
    assert leaked == []
    client.close()


def test_the_outgoing_request_never_shows_its_headers() -> None:
    """The one object that carries ``Authorization`` keeps it out of its repr (and so out of captured locals)."""
    from kimiflow.transport.base import Outgoing

    outgoing = Outgoing("POST", "http://127.0.0.1:1/v1/chat/completions", {"Authorization": f"Bearer {SECRET}"})
    assert SECRET not in repr(outgoing) and SECRET not in str(outgoing)


# -- a key of any shape, echoed by a hostile upstream, reaches no file and no terminal ---------------

ODD_KEY = "kf-test-SECRET-0123456789"  # not shaped like sk-...: only knowing the key in use can scrub it


def files_text(folder: Path) -> str:
    """Every byte kimiflow wrote under ``folder`` (the SQLite journal included), as text."""
    return "".join(path.read_bytes().decode("utf-8", "replace") for path in folder.rglob("*") if path.is_file())


def test_an_echoed_key_stays_out_of_batch_files_journal_and_cli_output(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kimiflow.cli.main import cli
    from tests.client.hostile import run_hostile

    with run_hostile() as hostile:
        monkeypatch.setenv("MOONSHOT_API_KEY", ODD_KEY)
        monkeypatch.setenv("MOONSHOT_BASE_URL", hostile.url("echo-status"))
        src = tmp_path / "in.jsonl"
        src.write_text('{"custom_id": "a", "prompt": "hi"}\n{"custom_id": "b", "prompt": "ho"}\n')
        runner = CliRunner()
        batch = runner.invoke(cli, ["batch", str(src), "-o", str(tmp_path / "out.jsonl"), "--tier", "3",
                                    "-m", "moonshot-v1-8k", "--max-attempts", "2"])
        chat = runner.invoke(cli, ["chat", "hi", "-m", "moonshot-v1-8k"])
    assert batch.exit_code != 0 and chat.exit_code != 0
    written = files_text(tmp_path)
    assert "echo" in written or "server_error" in written, "the batch recorded no failure to check"
    leaks = [name for name, text in (("batch output", batch.output), ("chat output", chat.output),
                                     ("files", written)) if ODD_KEY in text or ODD_KEY[6:] in text]
    assert leaks == []


def test_a_key_given_as_the_base_url_is_not_shown_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swapped variables: MOONSHOT_BASE_URL holds the key. The error says so without printing it."""
    from click.testing import CliRunner

    from kimiflow.cli.main import cli

    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-placeholder-00000000")
    monkeypatch.setenv("MOONSHOT_BASE_URL", ODD_KEY)
    result = CliRunner().invoke(cli, ["chat", "hi"])
    assert result.exit_code != 0
    assert "swapped" in result.output and "Traceback" not in result.output
    assert ODD_KEY not in result.output and ODD_KEY[6:] not in result.output
