"""Prometheus metrics of one gateway, in its own registry (two gateways in one process do not mix).

Labels are key ids and model names, never a key or a key's name typed by a caller.
"""

from __future__ import annotations

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
