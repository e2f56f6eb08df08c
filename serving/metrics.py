"""Prometheus metrics of one server process, in a registry of its own (so servers in one process,
as in tests, never share series): requests and latency by method and status code, online-store
hits, misses, errors, malformed values and fallbacks, breaker state, loaded versions and the
measured index recall. Exposed by prometheus_client's own HTTP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from plexrec.serving.stores.base import StoreStats
from plexrec.serving.versions import VersionRegistry

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)


class _StateCollector(Collector):
    """Reads the store's counters and the registry's versions at scrape time (no hot-path cost)."""

    def __init__(self, stats: Callable[[], StoreStats], versions: VersionRegistry) -> None:
        self.stats, self.versions = stats, versions

    def collect(self) -> Iterator[Any]:
        s = self.stats()
        reads = CounterMetricFamily("plexrec_store_reads", "Vectors read, by source",
                                    labels=["source"])
        reads.add_metric(["redis"], s.redis_hits)
        reads.add_metric(["redis_cache"], s.cache_hits)
        reads.add_metric(["snapshot"], s.snapshot_reads)
        yield reads
        yield CounterMetricFamily("plexrec_redis_errors", "Failed online-store calls",
                                  value=s.redis_errors)
        yield CounterMetricFamily("plexrec_redis_malformed", "Malformed values found in Redis",
                                  value=s.redis_malformed)
        yield GaugeMetricFamily("plexrec_breaker_open",
                                "1 while look-ups bypass Redis after a failure",
                                value=float(s.breaker_open))
        loaded = GaugeMetricFamily("plexrec_version_loaded",
                                   "Loaded versions (current=1 for the served one)",
                                   labels=["version", "current"])
        recall = GaugeMetricFamily("plexrec_index_recall",
                                   "Index recall@k against exact search, measured at load",
                                   labels=["version", "k"])
        current = self.versions.current
        for lv in self.versions.loaded():
            is_current = current is not None and lv.version == current.version
            loaded.add_metric([lv.version, str(int(is_current))], 1.0)
            for key, value in lv.metrics.items():
                if key.startswith("index_recall_at_"):
                    recall.add_metric([lv.version, key.removeprefix("index_recall_at_")], value)
        yield loaded
        yield recall


class ServerMetrics:
    def __init__(self, stats: Callable[[], StoreStats], versions: VersionRegistry) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("plexrec_requests", "RPCs answered, by method and status code",
                                ["method", "code"], registry=self.registry)
        self.latency = Histogram("plexrec_request_seconds", "RPC latency, by method and status",
                                 ["method", "code"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.registry.register(_StateCollector(stats, versions))
        self._http: Any = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)

    def serve_http(self, host: str, port: int) -> int:
        """Starts the scrape endpoint (`/metrics`) in a daemon thread; returns its port."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
