"""An offline, faithful simulator of the Kimi (Moonshot AI) API, for tests, demos and benchmarks.

>>> from kimiflow.sim import SimConfig, Simulator, run_in_thread
>>> async with Simulator(SimConfig(seed=0)) as sim:
...     sim.base_url, sim.api_key
>>> with run_in_thread(SimConfig(tier=0)) as sim:
...     ...

Behaviour follows docs/kimi-api.md §1–8: wire shapes, status codes, error types and messages, Kimi's
streaming quirks, tier limits, pricing. ``kimiflow sim`` serves it from the command line.

Choices where the reference leaves room (all deliberate, all tested):

- A missing key is 401 ``incorrect_api_key_error`` "Incorrect API key provided" (2026 table); a
  wrong key is 401 ``invalid_authentication_error`` "Invalid Authentication".
- 429 messages use the 2026 templates verbatim: concurrency and RPM say "please try again after N
  seconds" (N = seconds until the oldest request leaves the 60 s window); TPM and TPD do not, as
  in Kimi's table. No ``Retry-After`` header unless the ``429-retry-after`` fault asks for one.
- ``Msh-Gid`` is ``enterprise-tier-N``; with no tier configured it reads ``enterprise-tier-5``.
- Upload purposes ``file-extract``, ``image``, ``video``, ``batch`` (2026 OpenAPI); the bad-purpose
  message keeps Kimi's "Invalid purpose: only ... accepted" wording with that list.
- Answers depend on (model, messages, tool names, seed), not on ``max_tokens``/``stop``, so a
  capped answer is a prefix of the uncapped one. Header ``X-Kimiflow-Sim-Tokens: N`` forces N
  completion tokens. Tool-call rule: see ``kimiflow.sim.completion``; faults: ``kimiflow.sim.faults``.
- Scripted answers (``SimConfig(answers=...)``, ``kimiflow sim --answers FILE``) pin replies per
  request in JSONL; grammar in ``kimiflow.sim.answers``. A fault header on the request overrides a scripted fault.
- Stalls wait in real time (they exist to trip a client's real idle timeout), at most 300 s.
- Batch API (``/v1/batches``, ``kimiflow.sim.batches``): a compressed clock (``batch_hour_s`` real
  seconds per simulated hour, ``kimiflow sim --batch-hour``); lines answered by the chat engine at
  the 40 % discount; failed validation, expiry, cancellation and partial error files on purpose.

Faults (``SimConfig(fault_rates=...)``, ``kimiflow sim --fault-rate``, or per request the header
``X-Kimiflow-Sim-Fault: NAME[;times=N;key=K;after=M;...]``, grammar in ``kimiflow.sim.faults``):

- ``429``, ``429-retry-after``, ``overloaded``, ``quota``, ``quota-403``, ``500``, ``502``, ``503``:
  that error answer, with Kimi's body, instead of the endpoint's.
- ``reset``: the TCP connection is reset before any response byte.
- ``cut``: JSON: 200 headers, half the body, close. Stream: close after ``after`` events, no
  ``[DONE]`` (``clean=1`` ends the HTTP response properly instead).
- ``truncated-200``: a well-framed 200 whose JSON body is cut mid-way; Content-Length is that of
  the cut body, so only a client that parses the body notices. Every JSON endpoint.
- ``malformed``: chat JSON cut in half; a stream gets one broken ``data:`` event after ``after``.
- ``error-event``: a stream sends ``after`` events, then ``data: {"error": ...}`` and ends.
- ``echo-key``: a careless upstream that quotes the credentials: ``Msh-Request-Id`` is the
  request's ``Authorization`` value, and so is the end of the error message, in a 500 body (JSON
  requests, every endpoint) or in a mid-stream error event after ``after`` events (streams).
  For proving a client or gateway never logs or re-raises the key.
- ``stall``: headers (and ``after`` events), then silence (``keepalive=S``: only comments) until
  the client leaves, at most 300 s.
- ``unterminated``: stream headers, then one byte every 0.2 s of a ``data:`` line that never ends
  (no newline, ever), until the client leaves, at most 300 s: trips an idle timeout that counts
  bytes instead of events as progress. JSON requests are answered normally.
- ``trickle``: ``interval=S`` between stream events (added once to a JSON answer).
- ``keepalive``: a ``: keep-alive`` comment before every stream event.
- ``invalid-json``, ``schema-violation``, ``truncated-json``, ``empty-after-reasoning``: chat answers
  a 200 whose answer is spoiled (fenced, wrong-typed, cut at "length", or all reasoning and no
  content), JSON and stream alike, for re-ask and truncation tests; details in
  ``kimiflow.sim.structured.ANSWER_FAULTS``.
"""

from kimiflow.sim.app import Simulator, run_in_thread
from kimiflow.sim.config import DEFAULT_KEY, FAULT_NAMES, LatencyModel, SimConfig, parse_fault_rates
from kimiflow.sim.faults import FAULT_HEADER
from kimiflow.sim.stats import SimStats

__all__ = [
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
