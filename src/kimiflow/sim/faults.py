"""Which fault, if any, a request gets: from its ``X-Kimiflow-Sim-Fault`` header or the server's rates.

Header grammar: ``NAME[;times=N][;key=K][;after=M][;retry_after=S][;interval=S][;keepalive=S][;clean=1]``.
``times=N`` fails only the first N requests that carry the same ``key`` (the whole header value
when no key is given), then lets them through, so a client test can check "fails twice, then
succeeds". Server-wide rates draw from one RNG seeded by the simulator's seed.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from kimiflow.sim.config import FAULT_NAMES
from kimiflow.sim.errors import invalid_request

FAULT_HEADER = "X-Kimiflow-Sim-Fault"
_MAX_TRACKED_KEYS = 10_000


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
