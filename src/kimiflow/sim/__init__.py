"""An offline, faithful simulator of the Kimi (Moonshot AI) API, for tests, demos and benchmarks.

>>> from kimiflow.sim import SimConfig, Simulator, run_in_thread
>>> async with Simulator(SimConfig(seed=0)) as sim:
...     sim.base_url, sim.api_key
>>> with run_in_thread(SimConfig(tier=0)) as sim:
...     ...

Behaviour follows kimi-api.md §1–8: wire shapes, status codes, error types and messages, Kimi's
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
- Stalls wait in real time (they exist to trip a client's real idle timeout), at most 300 s.
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
