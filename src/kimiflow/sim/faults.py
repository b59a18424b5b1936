"""Which fault, if any, a request gets: from its ``X-Kimiflow-Sim-Fault`` header or the server's rates.

Header grammar: ``NAME[;times=N][;key=K][;after=M][;retry_after=S][;interval=S][;keepalive=S][;clean=1]``.
``times=N`` fails only the first N requests that carry the same ``key`` (the whole header value
when no key is given), then lets them through, so a client test can check "fails twice, then
succeeds". Server-wide rates draw from one RNG seeded by the simulator's seed.

What each fault does is listed in the ``kimiflow.sim`` package docstring.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kimiflow.sim import errors
from kimiflow.sim.config import FAULT_NAMES
from kimiflow.sim.errors import SimError, invalid_request

FAULT_HEADER = "X-Kimiflow-Sim-Fault"
_MAX_TRACKED_KEYS = 10_000
ECHO_KEY_MESSAGE = "internal error while authorizing request with Authorization: "
"""The echo-key fault's message prefix; the request's whole Authorization value follows it."""


@dataclass(frozen=True)
class Fault:
    """One fault to inject and its parameters.

    >>> Fault.parse("cut;after=5")
    Fault(name='cut', times=None, key=None, after=5, retry_after=1, interval=0.05, keepalive=None, clean=False)
    """

    name: str
    times: int | None = None
    key: str | None = None
    after: int = 2
    retry_after: int = 1
    interval: float = 0.05
    keepalive: float | None = None
    clean: bool = False

    @classmethod
    def parse(cls, value: str) -> Fault:
        """Parse a fault header value; ``SimError`` 400 that names the problem if it is malformed."""
        name, *params = (part.strip() for part in value.split(";"))
        if name not in FAULT_NAMES:
            raise invalid_request(f"unknown fault {name!r} in {FAULT_HEADER}; known: {', '.join(FAULT_NAMES)}")
        fields: dict[str, object] = {}
        for param in filter(None, params):
            k, sep, v = param.partition("=")
            k = k.strip()
            try:
                if not sep:
                    raise ValueError
                if k in ("times", "after", "retry_after"):
                    number = int(v)
                    if number < 0:
                        raise ValueError
                    fields[k] = number
                elif k in ("interval", "keepalive"):
                    seconds = float(v)
                    if seconds <= 0:
                        raise ValueError
                    fields[k] = seconds
                elif k == "key":
                    fields[k] = v.strip()
                elif k == "clean":
                    fields[k] = v.strip() not in ("0", "false", "")
                else:
                    raise invalid_request(
                        f"unknown fault parameter {k!r} in {FAULT_HEADER}; known: times, key, after, "
                        "retry_after, interval, keepalive, clean"
                    )
            except ValueError:
                raise invalid_request(
                    f"fault parameter {param!r} in {FAULT_HEADER} needs a non-negative number value"
                ) from None
        return cls(name, **fields)  # type: ignore[arg-type]


class FaultPicker:
    """Decides per request which fault applies, remembering ``times`` counters per key (bounded)."""

    def __init__(self, rates: Mapping[str, float], seed: int) -> None:
        self._rates = [(name, rate) for name, rate in sorted(rates.items()) if rate > 0]
        self._rng = random.Random(f"kimiflow-sim-faults-{seed}")
        self._seen: OrderedDict[str, int] = OrderedDict()

    def pick(self, header_value: str | None) -> Fault | None:
        """The fault for a request with this header value (or ``None``): header first, then rates."""
        if header_value:
            fault = Fault.parse(header_value)
            if fault.times is None:
                return fault
            counter_key = fault.key if fault.key is not None else header_value
            count = self._seen.pop(counter_key, 0)
            self._seen[counter_key] = count + 1
            if len(self._seen) > _MAX_TRACKED_KEYS:
                self._seen.popitem(last=False)
            return fault if count < fault.times else None
        if not self._rates:
            return None
        draw = self._rng.random()
        for name, rate in self._rates:
            if draw < rate:
                return Fault(name)
            draw -= rate
        return None


# Faults answered with an error before the endpoint runs: (key, fault, the RPM to quote) -> the error.
_STATUS_FAULTS: dict[str, Callable[[str, Fault, int], SimError]] = {
    "429": lambda key, f, rpm: errors.rpm_reached(key, rpm, f.retry_after),
    "429-retry-after": lambda key, f, rpm: errors.rpm_reached(key, rpm, f.retry_after, retry_after_header=True),
    "overloaded": lambda key, f, rpm: errors.engine_overloaded(),
    "quota": lambda key, f, rpm: errors.quota_exceeded(0.0),
    "quota-403": lambda key, f, rpm: errors.account_inactive(key),
    "500": lambda key, f, rpm: SimError(500, "unexpected_output", "invalid state transition"),
    "502": lambda key, f, rpm: SimError(502, "server_error", "Bad gateway: the upstream engine did not answer"),
    "503": lambda key, f, rpm: SimError(503, "server_unavailable", "The service is temporarily unavailable"),
}


def status_fault_error(fault: Fault, key: str, quoted_rpm: int) -> SimError | None:
    """The error a status fault answers with, or ``None`` when ``fault`` is not a status fault."""
    make = _STATUS_FAULTS.get(fault.name)
    return make(key, fault, quoted_rpm) if make is not None else None


def echoed_key_error(authorization: str) -> SimError:
    """The echo-key fault's 500: a careless upstream that quotes the caller's credentials back.

    It exists so a client's (or gateway's) tests can prove the key never reaches a log or an error.
    """
    return SimError(500, "server_error", ECHO_KEY_MESSAGE + authorization)
