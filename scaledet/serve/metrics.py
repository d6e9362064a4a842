"""Prometheus metrics of one service instance (prometheus_client, in a registry of its own)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServiceMetrics:
    """Requests by path and status, request latency, images per model run, model time per run,
    time queued before the model, refusals by kind, predictions in flight and images waiting now."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("scaledet_http_requests", "HTTP requests handled, by path, method and status",
                                ["path", "method", "status"], registry=self.registry)
        self.latency = Histogram("scaledet_http_request_duration_seconds", "time from request to response, by path",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("scaledet_batch_size", "images per model run", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_seconds = Histogram("scaledet_batch_duration_seconds", "time of one model run (a whole batch)",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_seconds = Histogram("scaledet_queue_wait_seconds", "time an image waited for its model run",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("scaledet_errors", "requests refused or failed, by kind", ["kind"],
                              registry=self.registry)
        self.in_flight = Gauge("scaledet_predictions_in_flight", "prediction requests being handled now",
                               registry=self.registry)
        self.waiting = Gauge("scaledet_images_waiting", "images queued for the model now", registry=self.registry)

    def record_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
