"""Prometheus metrics. Every label is bounded: route names come from config,
methods from a fixed list, statuses are classes, reasons are error codes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Metrics:
    """One registry per app, so several apps (tests, workers) never collide."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only add noise to every scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests decided by the gateway.",
            ["route", "method", "status_class", "auth_method"],
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself, upstream time excluded.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_seconds",
            "Time from sending a request upstream until its response headers arrived.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Refused credentials by reason.",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream calls that failed, by upstream and kind.",
            ["upstream", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being handled now.", registry=r
        )
        # A plain count read at scrape time: no lock taken twice per request.
        self.active = 0
        self.in_flight.set_function(lambda: self.active)
        self.limit_backend_failures = Counter(
            "gateway_limit_backend_failures",
            "Requests whose limits could not be counted (Redis down), by what happened.",
            ["outcome"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, str, str], Any] = {}
        self._overhead_children: dict[str, Any] = {}
        self._upstream_children: dict[str, Any] = {}
        self.credential_cache = Gauge(
            "gateway_credential_cache_entries", "Verified credentials cached.", registry=r
        )

    def count_request(self, route: str, method: str, status: str, auth: str) -> None:
        """requests_total{...}.inc() with the labelled child looked up once per label set."""
        key = (route, method, status, auth)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()

    def observe_overhead(self, route: str, seconds: float) -> None:
        child = self._overhead_children.get(route)
        if child is None:
            child = self._overhead_children[route] = self.overhead.labels(route)
        child.observe(seconds)

    def observe_upstream(self, upstream: str, seconds: float) -> None:
        child = self._upstream_children.get(upstream)
        if child is None:
            child = self._upstream_children[upstream] = self.upstream_latency.labels(upstream)
        child.observe(seconds)
