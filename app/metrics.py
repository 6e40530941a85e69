"""Prometheus metrics: one registry per app, so several apps in one process never collide."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from app.models import JobStatus
from app.streams.events import Event, Output

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric; ``sse`` and ``ws`` hold each transport's own, looked up once."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_created = Counter("jobcast_jobs_created", "Jobs created.", registry=r)
        self.jobs_updated = Counter("jobcast_jobs_updated", "Accepted job updates.", registry=r)
        self.jobs_completed = Counter("jobcast_jobs_completed", "Jobs completed.", registry=r)
        self.jobs_failed = Counter("jobcast_jobs_failed", "Jobs failed.", registry=r)
        self.jobs_canceled = Counter(
            "jobcast_jobs_canceled", "Cancels asked for (repeats included).", registry=r
        )
        self.jobs_deleted = Counter("jobcast_jobs_deleted", "Jobs deleted.", registry=r)
        self.output_chunks_appended = Counter(
            "jobcast_output_chunks_appended", "Output chunks appended to jobs.", registry=r
        )
        self.output_bytes_appended = Counter(
            "jobcast_output_bytes_appended",
            "Output appended to jobs, bytes of chunk JSON.",
            registry=r,
        )
        self.jobs_by_status = Gauge(
            "jobcast_jobs", "Stored jobs by status.", ["status"], registry=r
        )
        self.request_seconds = Histogram(
            "jobcast_request_duration_seconds",
            "HTTP request latency (streams: until the response starts).",
            ["method", "route", "status"],
            registry=r,
        )
        # labels() costs more than an observation: each child is looked up once.
        self._request_timers: dict[tuple[str, str, int], Histogram] = {}
        self.connections = Gauge(
            "jobcast_connections", "Open streaming connections.", ["transport"], registry=r
        )
        self.long_polls = Gauge(
            "jobcast_long_polls", "Long-polls (GET with waitForVersion) waiting now.", registry=r
        )
        self.events_conflated = Counter(
            "jobcast_events_conflated",
            "Intermediate states skipped for subscribers that read slower than jobs change.",
            ["transport"],
            registry=r,
        )
        self.slow_disconnects = Counter(
            "jobcast_slow_disconnects",
            "Subscribers disconnected for not reading (send timeout or full buffer).",
            ["transport"],
            registry=r,
        )

        self.webhooks_sent = Counter(
            "jobcast_webhooks_sent", "Webhook deliveries a receiver accepted (2xx).", registry=r
        )
        self.webhooks_failed = Counter(
            "jobcast_webhooks_failed",
            "Webhook deliveries given up (JOBS_WEBHOOK_RETRY_FOR passed, or refused).",
            registry=r,
        )
        self.webhooks_retried = Counter(
            "jobcast_webhooks_retried", "Webhook attempts failed and retried.", registry=r
        )
        self.webhooks_pending = Gauge(
            "jobcast_webhooks_pending", "Webhook events held for delivery.", registry=r
        )
        self.webhooks_oldest = Gauge(
            "jobcast_webhooks_oldest_pending_seconds",
            "Age of the oldest webhook event held for delivery.",
            registry=r,
        )
        self.webhooks_delivering = Gauge(
            "jobcast_webhooks_delivering",
            "1 in the one process that delivers webhooks (on Redis, the lease holder).",
            registry=r,
        )

        self.sse = TransportMetrics.of(self, "sse")
        self.ws = TransportMetrics.of(self, "ws")
        r.register(EventsSent(self.sse, self.ws))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        timer = self._request_timers.get(key)
        if timer is None:
            timer = self.request_seconds.labels(method=method, route=route, status=str(status))
            self._request_timers[key] = timer
        timer.observe(seconds)

    def render(self, counts: dict[JobStatus, int]) -> bytes:
        for status, count in counts.items():
            self.jobs_by_status.labels(status=status).set(count)
        return generate_latest(self.registry)


@dataclass(slots=True)
class TransportMetrics:
    """One transport's series, looked up once: ``labels()`` takes a lock and a lookup.

    ``sent`` is a plain count, added to on every write to every subscriber: a
    library Counter would take a lock each time, and the event loop that does
    all the writing is a single thread. :class:`EventsSent` exports it.
    """

    transport: str
    connections: Gauge
    conflated: Counter
    slow_disconnects: Counter
    sent: int = 0
    chunks_sent: int = 0  # output chunks, within the events of ``sent``
    chunk_bytes_sent: int = 0

    def count_output(self, events: Iterable[Event]) -> None:
        """Count the output chunks among ``events`` being written (output streams only)."""
        for event in events:
            if isinstance(event, Output):
                self.chunks_sent += len(event.bodies)
                self.chunk_bytes_sent += sum(map(len, event.bodies))

    @classmethod
    def of(cls, metrics: Metrics, transport: str) -> TransportMetrics:
        return cls(
            transport,
            metrics.connections.labels(transport=transport),
            metrics.events_conflated.labels(transport=transport),
            metrics.slow_disconnects.labels(transport=transport),
        )


class EventsSent(Collector):
    """``jobcast_events_sent_total`` and ``jobcast_output_{chunks,bytes}_sent_total``,
    read from each transport's counts when scraped."""

    def __init__(self, *transports: TransportMetrics) -> None:
        self.transports = transports

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "jobcast_events_sent", "Events written to subscribers.", labels=["transport"]
        )
        chunks = CounterMetricFamily(
            "jobcast_output_chunks_sent",
            "Output chunks written to subscribers.",
            labels=["transport"],
        )
        chunk_bytes = CounterMetricFamily(
            "jobcast_output_bytes_sent",
            "Output written to subscribers, bytes of chunk JSON.",
            labels=["transport"],
        )
        for transport in self.transports:
            family.add_metric([transport.transport], transport.sent)
            chunks.add_metric([transport.transport], transport.chunks_sent)
            chunk_bytes.add_metric([transport.transport], transport.chunk_bytes_sent)
        yield family
        yield chunks
        yield chunk_bytes
