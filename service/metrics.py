"""Prometheus metrics, in a registry per app so that several apps (tests) never collide.

Exposed at `GET /metrics`: HTTP requests and latencies by route template and
status (`status="client_disconnected"` for clients that went away mid-request),
batch sizes and forward-pass durations per modality, queue depth per
modality, items embedded, index size per modality, and index database
connections (PostgreSQL backend).
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batching import BatchObserver
from service.errors import CLIENT_CLOSED_REQUEST

CLIENT_DISCONNECTED = "client_disconnected"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
POOL_GAUGES = {
    "open": "pool_size",
    "idle": "pool_available",
    "max": "pool_max",
    "waiting": "requests_waiting",
}


class Metrics(BatchObserver):
    """The service's metrics; also the batchers' observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mmembed_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mmembed_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mmembed_http_requests_in_flight", "HTTP requests being handled.", registry=r
        )
        self.batch_size = Histogram(
            "mmembed_batch_size",
            "Items per forward pass, by modality.",
            ["modality"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "mmembed_batch_duration_seconds",
            "Duration of one forward pass, by modality.",
            ["modality"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "mmembed_queue_depth",
            "Items waiting for a batch, by modality.",
            ["modality"],
            registry=r,
        )
        self.embedded = Counter(
            "mmembed_embedded_items", "Items embedded, by modality.", ["modality"], registry=r
        )
        self.index_items = Gauge(
            "mmembed_index_items", "Items in the index, by modality.", ["modality"], registry=r
        )
        self.index_pool = Gauge(
            "mmembed_index_pool_connections",
            "Index database connections of this process: open, idle, max, and requests "
            "waiting for one (PostgreSQL backend only).",
            ["state"],
            registry=r,
        )

    # BatchObserver
    def batch_done(self, name: str, size: int, seconds: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_duration.labels(name).observe(seconds)
        self.embedded.labels(name).inc(size)

    def queue_depth(self, name: str, depth: int) -> None:
        self.queue.labels(name).set(depth)

    def set_index_counts(self, counts: dict[str, int]) -> None:
        for modality, count in counts.items():
            self.index_items.labels(modality).set(count)

    def set_index_pool(self, stats: dict[str, int]) -> None:
        """psycopg_pool's get_stats() counters; nothing for a backend without a pool."""
        for state, key in POOL_GAUGES.items():
            if key in stats:
                self.index_pool.labels(state).set(stats[key])

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path_format", None) or "unmatched"
            method = scope["method"]
            label = CLIENT_DISCONNECTED if status == CLIENT_CLOSED_REQUEST else str(status)
            self.metrics.requests.labels(method, route, label).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
