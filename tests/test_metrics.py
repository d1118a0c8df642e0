"""The lock-free metrics (gateway.metrics) scrape as prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import LATENCY_BUCKETS, Metrics

# Values on, between, below and above the bucket bounds.
OBSERVED = [0.0, 0.0001, 0.00011, 0.001, 0.0049, 0.005, 0.7, 10.0, 11.0, 250.0]


def samples(text: bytes, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    for metric in text_string_to_metric_families(text.decode()):
        if metric.name == family:
            return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in metric.samples}
    raise AssertionError(f"{family} is not in the scrape")


def test_histogram_matches_prometheus_client() -> None:
    ours = Metrics()
    reference = CollectorRegistry()
    theirs = Histogram("gateway_overhead_seconds", "x", ["route"], buckets=LATENCY_BUCKETS,
                       registry=reference)  # fmt: skip
    for seconds in OBSERVED:
        ours.observe_overhead("/a/**", seconds)
        theirs.labels("/a/**").observe(seconds)
    ours.observe_overhead("/b/**", 0.002)
    theirs.labels("/b/**").observe(0.002)
    got = samples(generate_latest(ours.registry), "gateway_overhead_seconds")
    want = samples(generate_latest(reference), "gateway_overhead_seconds")
    assert got == want
    # le is inclusive: 0.001 exactly is in the 0.001 bucket, 0.00011 is not in 0.0001's.
    assert got[("gateway_overhead_seconds_bucket", (("le", "0.001"), ("route", "/a/**")))] == 4
    assert got[("gateway_overhead_seconds_bucket", (("le", "0.0001"), ("route", "/a/**")))] == 2
    assert got[("gateway_overhead_seconds_count", (("route", "/a/**"),))] == len(OBSERVED)


def test_counters_and_gauges_scrape() -> None:
    ours = Metrics()
    reference = CollectorRegistry()
    theirs = Counter("gateway_requests", "x", ["route", "method", "status_class", "auth_method"],
                     registry=reference)  # fmt: skip
    for labels in [("/a", "GET", "2xx", "api_key")] * 3 + [("/a", "POST", "4xx", "none")]:
        ours.count_request(*labels)
        theirs.labels(*labels).inc()
    ours.auth_failures.inc("insufficient_scope")
    ours.active = 2
    ours.cache_size = lambda: 7
    text = generate_latest(ours.registry)
    assert samples(text, "gateway_requests") == samples(
        generate_latest(reference), "gateway_requests"
    )
    assert samples(text, "gateway_auth_failures") == {
        ("gateway_auth_failures_total", (("reason", "insufficient_scope"),)): 1.0
    }
    assert samples(text, "gateway_requests_in_flight") == {("gateway_requests_in_flight", ()): 2.0}
    assert samples(text, "gateway_credential_cache_entries") == {
        ("gateway_credential_cache_entries", ()): 7.0
    }
