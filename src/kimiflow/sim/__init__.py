"""An offline, faithful simulator of the Kimi (Moonshot AI) API, for tests, demos and benchmarks.

>>> from kimiflow.sim import SimConfig, Simulator, run_in_thread
>>> async with Simulator(SimConfig(seed=0)) as sim:
...     sim.base_url, sim.api_key
>>> with run_in_thread(SimConfig(tier=0)) as sim:
...     ...

Behaviour follows kimi-api.md §1–8: wire shapes, status codes, error types and messages, Kimi's
streaming quirks, tier limits, pricing. ``kimiflow sim`` serves it from the command line.
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
