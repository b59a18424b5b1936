"""The API key never appears in reprs, error strings, logs (any level) or tracebacks."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest

from kimiflow import APIError, Kimi
from tests.client.twins import Twin

SECRET = "sk-TOPSECRET0123456789abcdefXYZ"


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
                  repr(info.value.body)]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records, "debug logging produced nothing to check"
    leaked = [text for text in texts if SECRET in text or SECRET[3:] in text]
    assert leaked == []
    client.close()
