"""Prometheus metrics. Every label is bounded: route names come from config,
methods from a fixed list, statuses are classes, reasons are error codes.

The request path counts into plain dicts and lists (``Tally``, ``Timings``) and
the registry reads them when scraped (``Collector``). Each worker runs one event
loop and is asked for its ``snapshot`` from that loop, so nothing needs a lock;
prometheus_client's own Counter and Histogram take one per update, which the
profile of the request path showed as a tenth of its time. The node's admin
listener adds the workers' snapshots into one ``Metrics`` (``absorb``) and serves
that: one set of series per node.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Tally:
    """A counter family: one number per label set."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str) -> None:
        self.counts[values] = self.counts.get(values, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in self.counts.items():
            family.add_metric(values, count)
        return family


class Series:
    """One histogram series: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0


class Timings:
    """A histogram family: one ``Series`` per label value."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = LATENCY_BUCKETS
        self.series: dict[str, Series] = {}

    def observe(self, value: str, seconds: float) -> None:
        series = self.series.get(value)
        if series is None:
            series = self.series[value] = Series(len(self.bounds) + 1)
        # Buckets are "less than or equal": the first bound >= seconds takes it.
        series.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        series.total += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=(self.label,))
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for value, series in self.series.items():
            running, buckets = 0, []
            for edge, count in zip(edges, series.counts, strict=True):
                running += count
                buckets.append((edge, float(running)))
            family.add_metric((value,), buckets, series.total)
        return family


@dataclass(frozen=True, slots=True)
class Snapshot:
    tallies: list[dict[tuple[str, ...], int]]
    timings: list[dict[str, tuple[list[int], float]]]  # label -> (bucket counts, sum)
    active: int
    cache_entries: int
    websockets: int

    def without_gauges(self) -> Snapshot:
        """What a worker that is gone still adds to the node's counters."""
        return Snapshot(self.tallies, self.timings, 0, 0, 0)


class Scrape(Collector):
    """Hands the registry what ``Metrics`` counted, when it is scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        m = self.metrics
        for tally in m.tallies():
            yield tally.family()
        yield m.overhead.family()
        yield m.upstream_latency.family()
        yield GaugeMetricFamily(
            "gateway_requests_in_flight", "Requests being handled now.", value=m.active
        )
        yield GaugeMetricFamily(
            "gateway_websockets_open", "WebSockets open through the gateway.", value=m.websockets
        )
        yield GaugeMetricFamily(
            "gateway_credential_cache_entries", "Verified credentials cached.", value=m.cache_size()
        )
        if m.config_hash is not None:
            info = GaugeMetricFamily(
                "gateway_config_info", "The loaded configuration, by its hash.", labels=("hash",)
            )
            info.add_metric((m.config_hash,), 1)
            yield info


class Metrics:
    """One registry per app, so several apps (tests, workers) never collide."""

    def __init__(self) -> None:
        self.requests = Tally(
            "gateway_requests",
            "Requests decided by the gateway.",
            ("route", "method", "status_class", "auth_method"),
        )
        self.overhead = Timings(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself, upstream time excluded.",
            "route",
        )
        self.upstream_latency = Timings(
            "gateway_upstream_seconds",
            "Time from sending a request upstream until its response headers arrived.",
            "upstream",
        )
        self.auth_failures = Tally(
            "gateway_auth_failures", "InvalidInput credentials by reason.", ("reason",)
        )
        self.upstream_errors = Tally(
            "gateway_upstream_errors",
            "Upstream calls that failed, by upstream and kind.",
            ("upstream", "kind"),
        )
        self.limit_backend_failures = Tally(
            "gateway_limit_backend_failures",
            "Requests whose limits could not be counted (Redis down), by what happened.",
            ("outcome",),
        )
        self.config_reloads = Tally(
            "gateway_config_reloads", "Configuration reloads, by outcome.", ("outcome",)
        )
        self.config_hash: str | None = None  # the loaded configuration's (the node's)
        self.active = 0  # requests in flight
        self.websockets = 0  # open
        self.cache_size: Callable[[], int] = lambda: 0  # set by the credential cache's owner
        self.registry = CollectorRegistry()
        self.registry.register(Scrape(self))

    def tallies(self) -> tuple[Tally, ...]:
        return (self.requests, self.auth_failures, self.upstream_errors,
                self.limit_backend_failures, self.config_reloads)  # fmt: skip

    def snapshot(self) -> Snapshot:
        """Everything counted so far, as plain data (sent to the node's supervisor)."""
        return Snapshot(
            tallies=[dict(t.counts) for t in self.tallies()],
            timings=[{label: (list(series.counts), series.total)
                      for label, series in t.series.items()}
                     for t in (self.overhead, self.upstream_latency)],
            active=self.active,
            cache_entries=self.cache_size(),
            websockets=self.websockets,
        )  # fmt: skip

    def absorb(self, snapshot: Snapshot) -> None:
        """Add another process's snapshot to these metrics."""
        for tally, tallied in zip(self.tallies(), snapshot.tallies, strict=True):
            for values, count in tallied.items():
                tally.counts[values] = tally.counts.get(values, 0) + count
        for timings, timed in zip((self.overhead, self.upstream_latency), snapshot.timings,
                                  strict=True):  # fmt: skip
            for label, (buckets, total) in timed.items():
                mine = timings.series.get(label)
                if mine is None:
                    mine = timings.series[label] = Series(len(timings.bounds) + 1)
                mine.counts = [a + b for a, b in zip(mine.counts, buckets, strict=True)]
                mine.total += total
        self.active += snapshot.active
        self.websockets += snapshot.websockets
        entries = self.cache_size() + snapshot.cache_entries
        self.cache_size = lambda: entries

    def count_request(self, route: str, method: str, status: str, auth: str) -> None:
        self.requests.inc(route, method, status, auth)

    def observe_overhead(self, route: str, seconds: float) -> None:
        self.overhead.observe(route, seconds)

    def observe_upstream(self, upstream: str, seconds: float) -> None:
        self.upstream_latency.observe(upstream, seconds)
