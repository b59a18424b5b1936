"""Prometheus metrics of one gateway, in its own registry (two gateways in one process do not mix).

Labels are key ids and model names, never a key or a key's name typed by a caller.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    """The gateway's counters and histograms.

    >>> metrics = GatewayMetrics(); metrics.render()
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("kimiflow_gateway_requests", "Requests answered", ["key_id", "model", "status", "ended"], registry=r)
        self.tokens = Counter("kimiflow_gateway_tokens", "Tokens billed", ["key_id", "model", "kind"], registry=r)
        self.cost = Counter("kimiflow_gateway_cost_cny", "Cost billed in CNY", ["key_id", "model"], registry=r)
        self.rejections = Counter("kimiflow_gateway_rejections", "Requests refused by the gateway", ["reason"], registry=r)
        self.upstream_errors = Counter("kimiflow_gateway_upstream_errors", "Errors from the upstream", ["type"], registry=r)
        self.upstream_retries = Counter("kimiflow_gateway_upstream_retries", "Upstream attempts retried", registry=r)
        self.latency = Histogram("kimiflow_gateway_latency_seconds", "Request latency", ["model"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("kimiflow_gateway_ttft_seconds", "Time to first upstream byte", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("kimiflow_gateway_overhead_seconds", "Time spent in the gateway before the upstream call",
                                  buckets=_OVERHEAD_BUCKETS, registry=r)

        self._per_model: dict[str, tuple[Any, Any]] = {}
        self._per_key: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._per_outcome: dict[tuple[str, str, str, str], Any] = {}

    # Label lookups take a lock and a dict probe each; the children are kept here per label set.

    def observe_request(self, model: str, latency: float, ttft: float | None) -> None:
        children = self._per_model.get(model)
        if children is None:
            children = self._per_model[model] = (self.latency.labels(model), self.ttft.labels(model))
        children[0].observe(latency)
        if ttft is not None:
            children[1].observe(ttft)

    def count_row(self, key_id: str, model: str, status: int, ended: str, prompt: int, completion: int,
                  cached: int, cost: float) -> None:
        outcome = (key_id, model, str(status), ended)
        counter = self._per_outcome.get(outcome)
        if counter is None:
            counter = self._per_outcome[outcome] = self.requests.labels(*outcome)
        counter.inc()
        if prompt or completion or cost:
            children = self._per_key.get((key_id, model))
            if children is None:
                children = self._per_key[(key_id, model)] = (
                    self.tokens.labels(key_id, model, "prompt"), self.tokens.labels(key_id, model, "completion"),
                    self.tokens.labels(key_id, model, "cached"), self.cost.labels(key_id, model))
            children[0].inc(prompt)
            children[1].inc(completion)
            children[2].inc(cached)
            children[3].inc(cost)

    def render(self) -> bytes:
        return generate_latest(self.registry)
