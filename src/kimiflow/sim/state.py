"""What one simulator knows between requests: its config, counters, limits, files, corpus and balance.

The endpoints take this object, not the ``Simulator`` server, so they depend on the account they
serve and never on the HTTP server that routes to them.
"""

from __future__ import annotations

import random

from kimiflow.core.tiers import tier_limits
from kimiflow.sim.batch_book import BatchBook
from kimiflow.sim.cache import PrefixCache
from kimiflow.sim.config import SimConfig
from kimiflow.sim.files import FileStore
from kimiflow.sim.limits import TierLimiter
from kimiflow.sim.stats import SimStats
from kimiflow.sim.textgen import Corpus


class SimState:
    """The account a simulator serves.

    >>> state = SimState(SimConfig(seed=1))
    >>> state.charge(0.5); state.balance
    999.5
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self.corpus = Corpus.build(config.seed)
        self.limiter = TierLimiter(tier_limits(config.tier) if config.tier is not None else None, config.clock)
        self.files = FileStore(config.max_files, config.max_file_bytes)
        self.group_id = f"enterprise-tier-{config.tier if config.tier is not None else 5}"
        self._latency = config.latency_model
        self._latency_rng = random.Random(f"kimiflow-sim-latency-{config.seed}")
        self._balance = float(config.balance)
        self.prefix_cache = PrefixCache()
        self.batches = BatchBook(config)
        self.answer_uses: dict[int, int] = {}
        """How many requests each scripted-answers line (by index) has answered: its turn in ``replies``."""

    @property
    def balance(self) -> float:
        """The account balance in CNY, after every completed request's cost."""
        return self._balance

    def charge(self, cost: float) -> None:
        """Deduct ``cost`` CNY from the balance."""
        self._balance -= cost

    def reset_answers(self) -> int:
        """Start every scripted-answers line from its first reply again; how many lines had answered."""
        lines = len(self.answer_uses)
        self.answer_uses.clear()
        return lines

    def quoted_rpm(self) -> int:
        """The RPM a rate-limit message quotes: the tier's, or tier 5's when no tier is set."""
        limits = self.limiter.limits
        return limits.rpm if limits is not None else tier_limits(5).rpm

    def sample_latency(self) -> tuple[float, float]:
        """(time to first token, seconds per token) for the next request."""
        if self._latency.is_instant:
            return 0.0, 0.0
        return self._latency.sample(self._latency_rng)
