"""The API key never appears in reprs, error strings, logs (any level) or tracebacks."""

from __future__ import annotations

import logging
import os
import traceback
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
