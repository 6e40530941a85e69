"""Prometheus metrics: one registry per app, so several apps in one process never collide."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models import JobStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_created = Counter("jobcast_jobs_created", "Jobs created.", registry=r)
        self.jobs_updated = Counter("jobcast_jobs_updated", "Accepted job updates.", registry=r)
        self.jobs_completed = Counter("jobcast_jobs_completed", "Jobs completed.", registry=r)
        self.jobs_failed = Counter("jobcast_jobs_failed", "Jobs failed.", registry=r)
        self.jobs_by_status = Gauge(
            "jobcast_jobs", "Stored jobs by status.", ["status"], registry=r
        )
        self.request_seconds = Histogram(
            "jobcast_request_duration_seconds",
            "HTTP request latency (streams: until the response starts).",
            ["method", "route", "status"],
            registry=r,
        )
        self.connections = Gauge(
            "jobcast_connections", "Open streaming connections.", ["transport"], registry=r
        )
        self.events_sent = Counter(
            "jobcast_events_sent", "Events written to subscribers.", ["transport"], registry=r
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

    def render(self, counts: dict[JobStatus, int]) -> bytes:
        for status, count in counts.items():
            self.jobs_by_status.labels(status=status).set(count)
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware timing each HTTP request by its route template, not its raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route: BaseRoute | None = scope.get("route")
                self.metrics.request_seconds.labels(
                    method=scope["method"],
                    route=getattr(route, "path", "unmatched"),
                    status=str(message["status"]),
                ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)
