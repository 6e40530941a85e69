"""Server-Sent Events: ``/api/jobs/{jobId}/events`` and ``/api/jobs/events``.

Each connection is one :class:`EventStream`: a writer that sleeps on its
mailbox and writes everything pending as one chunk, and a watcher that
notices the client leaving at once (an idle stream writes nothing, so it
could not notice otherwise). Framing is sse-starlette's, done once per
change in :mod:`app.events`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.events import Change, Position
from app.hub import Hub, Mailbox, Subscription
from app.metrics import Metrics
from app.models import Problem, StreamQuery, parse
from app.openapi import Operation
from app.settings import Settings
from app.store import JobFilter, JobStore

logger = logging.getLogger("jobcast")

EVENT_STREAM = "text/event-stream"
PING = b": ping\n\n"
RESET = b"event: reset\ndata: {}\n\n"
_LAST_ID = "Last-Event-ID: resume after this event (also `lastEventId` in the query)."

JOB_EVENTS = Operation(
    "GET",
    "/api/jobs/{jobId}/events",
    "Stream one job's changes (SSE); ends after its terminal state",
    query=StreamQuery,
    headers={"Last-Event-ID": _LAST_ID},
    media_type=EVENT_STREAM,
    responses={
        200: "text/event-stream: `job` events, `id` = the job's version",
        204: "The client already has the job's terminal state: stop reconnecting",
        404: Problem,
        410: Problem,
    },
)
ALL_EVENTS = Operation(
    "GET",
    "/api/jobs/events",
    "Stream every job's changes (SSE), filtered by jobType and status",
    query=StreamQuery,
    headers={"Last-Event-ID": _LAST_ID},
    media_type=EVENT_STREAM,
    responses={
        200: "text/event-stream: `job`, `removed` and `reset` events, `id` = an opaque cursor",
        422: Problem,
    },
)


class EventStream:
    """An ASGI response that streams a mailbox until it closes (or, per-job, ends)."""

    def __init__(
        self,
        *,
        hub: Hub,
        subscription: Subscription,
        frame: Callable[[Change], bytes],
        prefix: bytes,
        ends_after_final: bool,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.hub = hub
        self.subscription = subscription
        self.frame = frame
        self.prefix = prefix
        self.ends_after_final = ends_after_final
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mailbox = self.subscription.mailbox
        watcher = asyncio.create_task(_watch_disconnect(receive, mailbox))
        self.hub.attach(mailbox, heartbeat=True)
        connections = self.metrics.connections.labels(transport="sse")
        connections.inc()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            await self._stream(send, mailbox)
        except TimeoutError:
            mailbox.close("slow")
        finally:
            watcher.cancel()
            self.hub.unsubscribe(self.subscription)
            self.hub.detach(mailbox)
            connections.dec()
            self.metrics.events_conflated.labels(transport="sse").inc(mailbox.conflated)
            if mailbox.closed in ("slow", "overflow"):
                self.metrics.slow_disconnects.labels(transport="sse").inc()
                logger.warning("disconnected an SSE subscriber that stopped reading")

    async def _stream(self, send: Send, mailbox: Mailbox) -> None:
        sent = self.metrics.events_sent.labels(transport="sse")
        chunk = self.prefix
        while True:
            if chunk:
                async with asyncio.timeout(self.settings.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await mailbox.wait()
            changes = mailbox.take()
            if mailbox.closed is not None and (mailbox.closed != "shutdown" or not changes):
                break
            sent.inc(len(changes))
            chunk = b"".join(self.frame(change) for change in changes) or PING
            if self.ends_after_final and any(change.is_final for change in changes):
                mailbox.close("done")
                async with asyncio.timeout(self.settings.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                break
        if mailbox.closed in ("done", "shutdown"):
            async with asyncio.timeout(self.settings.send_timeout):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _watch_disconnect(receive: Receive, mailbox: Mailbox) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    mailbox.close("gone")


def _last_event_id(request: Request, query: StreamQuery) -> str | None:
    return request.headers.get("last-event-id") or query.last_event_id


def _prefix(settings: Settings) -> bytes:
    return f"retry: {settings.sse_retry_ms}\n\n".encode()


async def job_events(request: Request) -> Response | EventStream:
    job_id: str = request.path_params["jobId"]
    query = parse(StreamQuery, dict(request.query_params))
    last_id = _last_event_id(request, query)
    known = int(last_id) if last_id is not None and last_id.strip().isdigit() else None
    hub: Hub = request.state.hub
    store: JobStore = request.state.service.store
    settings: Settings = request.state.settings
    subscription = hub.subscribe(Subscription(Mailbox(settings.subscriber_backlog), job_id=job_id))
    try:
        current = await store.get_change(job_id)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    if known == current.version and current.is_final:
        hub.unsubscribe(subscription)
        return Response(status_code=204)
    subscription.prime([] if known == current.version else [current], version=current.version)
    return EventStream(
        hub=hub,
        subscription=subscription,
        frame=Change.sse_for_job_stream,
        prefix=_prefix(settings),
        ends_after_final=True,
        settings=settings,
        metrics=request.state.metrics,
    )


async def all_events(request: Request) -> EventStream:
    query = parse(StreamQuery, dict(request.query_params))
    last_id = _last_event_id(request, query)
    after = Position.parse(last_id) if last_id is not None else None
    where = JobFilter(job_type=query.job_type, status=query.status)
    hub: Hub = request.state.hub
    store: JobStore = request.state.service.store
    settings: Settings = request.state.settings
    subscription = hub.subscribe(Subscription(Mailbox(settings.subscriber_backlog), where=where))
    try:
        replay = await store.replay(where, after)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    subscription.prime(replay.changes, head=replay.head)
    # A cursor we could not read (garbage, or from a restarted server) is a reset too.
    reset = replay.reset or (last_id is not None and after is None)
    return EventStream(
        hub=hub,
        subscription=subscription,
        frame=Change.sse_for_all_stream,
        prefix=_prefix(settings) + (RESET if reset else b""),
        ends_after_final=False,
        settings=settings,
        metrics=request.state.metrics,
    )
