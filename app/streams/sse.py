"""Server-Sent Events: ``/api/jobs/{jobId}/events`` and ``/api/jobs/events``.

Each connection is one :class:`EventStream`, run by its :class:`StreamRoute`:
the request's task sleeps on the stream's mailbox and writes everything
pending as one chunk, and the connection's protocol (or a task on
``receive()``) tells it the moment the client leaves: an idle stream writes
nothing, so it could not notice otherwise. A live change for an idle stream
is written through without waking its task (:meth:`Mailbox.live`). Framing is
sse-starlette's, done once per change in :mod:`app.streams.events`; every
``data`` line is one line of JSON, whose encoder escapes newlines, so no
value can start a field or an event.

Each stream holds one of the process's stream slots (JOBS_MAX_STREAMS;
503 when none is free) and, when opened with a read token, ends cleanly
when the token expires: the browser's reconnect with the same token then
gets 401, and ``EventSource`` stops. An all-jobs stream also spends one of
its client's snapshots (JOBS_SNAPSHOT_RATE; 429 past it).

What a stream sends: ``retry:``, the snapshot, ``event: synced`` (its ``id``
the cursor the client then holds), then every change live. A cursor that
cannot be resumed gets ``event: reset`` first, with an empty ``id:``: that
clears the client's cursor, so a reconnect before the snapshot is complete
starts afresh instead of resetting again. ``HEAD`` answers what ``GET``
would, without opening the stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from app.auth import Access, check_job, load_job, scope_filter
from app.edge import DIRECT_SEND, streaming
from app.errors import FieldError, InvalidJobData
from app.jobs import JobFilter
from app.logs import cut_short
from app.models import JobStreamQuery, Problem, StreamQuery
from app.openapi import Operation
from app.runtime import runtime_of
from app.settings import Settings
from app.streams import eager
from app.streams.eager import Suspended
from app.streams.events import (
    Event,
    Latest,
    all_stream_frame,
    chunked,
    encoded,
    grouped,
    job_stream_frame,
    output_stream_frame,
)
from app.streams.follow import Lease, follow_all, follow_job, holds_the_end
from app.streams.hub import Subscription
from app.streams.mailbox import DirectResponse, Mailbox
from app.validation import parse_query, whole_number

logger = logging.getLogger("jobcast")

EVENT_STREAM = "text/event-stream"
# Exactly the media type, no charset: strict clients compare it for equality
# (an event stream is always UTF-8).
HEADERS = [
    (b"content-type", EVENT_STREAM.encode()),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PING = b": ping\n\n"
RESET = b"id: \nevent: reset\ndata: {}\n\n"
CHUNK_BYTES = 64 * 1024
# What each kind of stream last joined (its frames differ: a job's, its output's, all jobs').
_last_joined: collections.defaultdict[Callable[[Event], bytes], Latest[bytes]] = (
    collections.defaultdict(lambda: Latest(b""))
)
_LAST_ID = "Last-Event-ID: resume after this event (also `lastEventId` in the query)."

JOB_EVENTS = Operation(
    "GET",
    "/api/jobs/{jobId}/events",
    "Stream one job's changes (SSE), and with output=1 its output; ends after its terminal state",
    query=JobStreamQuery,
    headers={"Last-Event-ID": _LAST_ID},
    media_type=EVENT_STREAM,
    responses={
        200: "text/event-stream: `job` events, `id` = the job's version; with output=1 also "
        "`output` events, every `id` = `<version>.<nextOffset>`",
        204: "The client already has the job's terminal state: stop reconnecting",
        404: Problem,
        410: Problem,
        422: Problem,
        503: Problem,
    },
    auth="read",
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
        503: Problem,
    },
    auth="read",
)


class EventStream:
    """An opened stream: what :class:`StreamRoute` writes, from its lease's mailbox,
    until the mailbox closes (or, per job, the job ends)."""

    # One per open stream, for the stream's whole life: no instance dict.
    __slots__ = (
        "access",
        "cycle",
        "ends_after_final",
        "frame",
        "lease",
        "ping",
        "prefix",
        "send",
        "subscription",
    )

    def __init__(
        self,
        *,
        lease: Lease,
        access: Access,
        subscription: Subscription,
        frame: Callable[[Event], bytes],
        prefix: bytes,
        ping: bytes,
        ends_after_final: bool,
    ) -> None:
        self.lease = lease
        self.access = access
        self.subscription = subscription
        self.frame = frame
        self.prefix = prefix
        self.ping = ping
        self.ends_after_final = ends_after_final
        self.send: Send | None = None  # the server's, once the stream has started
        self.cycle: RequestResponseCycle | None = None  # uvicorn's, when it is httptools'

    def write_through(self, events: list[Event]) -> Suspended | None:
        """Write live events now (see :meth:`Mailbox.flush`; none of them ends the
        stream): straight to the socket when it takes them, else through the server."""
        self._count(events)
        frame = self.frame
        if len(events) == 1:
            body = frame(events[0])
        else:
            last = _last_joined[frame]
            if not last.made_from(events):
                last.keep(events, b"".join(map(frame, events)))
            body = last.made
        if self.cycle is not None and streaming.write_now(self.cycle, body):
            return None
        assert self.send is not None
        message = {"type": "http.response.body", "body": body, "more_body": True}
        return eager.start(self.send(message))

    async def write_pending(self, send: Send, mailbox: Mailbox) -> bool:
        """Write what is pending (a ping if nothing); False once the stream is over."""
        pending = mailbox.take()
        if mailbox.closed is not None and (mailbox.closed != "shutdown" or not pending):
            return False
        final = self.ends_after_final and any(event.is_final for event in pending)
        if final:
            mailbox.close("done")
        async with contextlib.aclosing(self.lease.sendable(pending)) as batches:
            async for changes in batches:
                self._count(changes)
                if not await self.write(send, mailbox, self._chunks(changes)):
                    return False
        return not final

    def _count(self, events: list[Event]) -> None:
        self.lease.sent(events, output=self.frame is output_stream_frame)

    def _chunks(self, changes: list[Event]) -> Iterable[bytes]:
        """What to write for ``changes``: their frames in chunks, or a ping for none.

        The server's transport buffers whatever one send hands it: in chunks of
        about CHUNK_BYTES, a reader that stops reading makes it hold one chunk,
        not a whole backlog.
        """
        if len(changes) == 1:  # the usual live write: no generator, no copy
            return [self.frame(changes.pop())]
        return _joined(encoded(changes, self.frame)) if changes else [self.ping]

    @staticmethod
    async def write(send: Send, mailbox: Mailbox, chunks: Iterable[bytes]) -> bool:
        """Send ``chunks``, one body message each; False once the mailbox closed."""
        for chunk in chunks:
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            if not await mailbox.deliver(send(message)):
                return False
        return True


class StreamHead(Response):
    """The answer to ``HEAD`` on a stream: the stream's headers, and no stream."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b""})


def _joined(frames: Iterable[bytes]) -> Iterator[bytes]:
    """``frames`` joined into chunks of about CHUNK_BYTES."""
    return (b"".join(group) for group in grouped(frames, CHUNK_BYTES))


class StreamRoute:
    """An SSE endpoint as a plain ASGI app, for Starlette's router: it opens the
    stream (``open_stream``: a Response, or an :class:`EventStream`) and runs it.

    A stream lives as long as its client. Starlette wraps a function endpoint
    in a request/response layer of its own, whose frames and second Request
    would be held all that time, for every open stream. Errors raised before
    the stream starts reach the edge, which answers them as problem+json.
    """

    def __init__(self, open_stream: Callable[[Request], Awaitable[Response | EventStream]]):
        self.open_stream = open_stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opened = await self.open_stream(Request(scope, receive))
        if isinstance(opened, Response):
            await opened(scope, receive, send)
            return
        # The stream runs right here, not in a coroutine of its own: an idle
        # stream holds every frame it waits in, and frames are memory per connection.
        stream, lease = opened, opened.lease
        mailbox = lease.mailbox
        # Once the request (a GET: no body) is read, receive() returns only when the
        # client leaves. An idle stream writes nothing, so only that tells: from the
        # connection's protocol where it can (no task per stream), else a task waits.
        while (await receive()).get("more_body"):
            pass
        cycle = streaming.cycle_of(scope.get(DIRECT_SEND))
        watcher = None
        if cycle is None or not streaming.when_gone(cycle, mailbox.client_left):
            watcher = asyncio.ensure_future(receive())
            watcher.add_done_callback(mailbox.client_left)
        lease.start(stream.access, heartbeat=True)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            # The body skips the middleware, which only ever looks at the start.
            send = scope.get(DIRECT_SEND, send)
            going = await stream.write(send, mailbox, [stream.prefix])
            stream.send = send
            direct = None
            if cycle is not None and cycle.chunked_encoding:
                stream.cycle = cycle
                ping = _chunked_ping(stream.ping)
                direct = DirectResponse(cycle, stream.frame, ping, lease.metrics)
            lease.write_through(stream.write_through, direct)
            while going:
                await mailbox.wait()
                going = await mailbox.settle() and await stream.write_pending(send, mailbox)
            if mailbox.closed in ("done", "shutdown", "expired", "unavailable"):
                end = {"type": "http.response.body", "body": b"", "more_body": False}
                await mailbox.deliver(send(end))
        finally:
            if watcher is not None:
                watcher.cancel()
            elif cycle is not None:
                streaming.when_gone(cycle, None)
            if lease.end(stream.subscription):
                logger.warning("disconnected an SSE subscriber that stopped reading")
                cut_short()  # uvicorn's "returned without completing response": INFO


def _last_event_id(request: Request, query: StreamQuery) -> str | None:
    return request.headers.get("last-event-id") or query.last_event_id


def _version(last_id: str | None) -> int | None:
    """A job version from ``Last-Event-ID``; None for anything else (never an error)."""
    return whole_number((last_id or "").strip(), 18)


def _version_and_offset(last_id: str | None) -> tuple[int | None, int]:
    """``<version>.<nextOffset>`` from ``Last-Event-ID`` on an output stream; a plain
    version holds no output; anything else holds nothing (never an error)."""
    version_text, _, offset_text = (last_id or "").strip().partition(".")
    version, offset = _version(version_text), _version(offset_text)
    if version is None or (offset_text and offset is None):
        return None, 0
    return version, offset or 0


def _opening(settings: Settings, query: StreamQuery) -> tuple[bytes, bytes]:
    """What a stream begins with, and its heartbeat."""
    return _heartbeats(settings.sse_retry_ms, settings.heartbeat, query.ping)


@functools.cache
def _heartbeats(retry_ms: int, heartbeat: float, visible: bool) -> tuple[bytes, bytes]:
    """The reconnection delay and a heartbeat: a comment, or (``?ping=1``) an event a
    client can see, which says how often it comes, and which also opens the stream so the
    client knows that from the start. Made once for every stream alike: each holds its
    bytes for its whole life."""
    retry = f"retry: {retry_ms}\n\n".encode()
    if not visible:
        return retry, PING
    ping = b'event: ping\ndata: {"every":%s}\n\n' % format(heartbeat, "g").encode()
    return retry + ping, ping


# Every stream's heartbeat is one of two, so every stream shares its chunk too.
_chunked_ping = functools.cache(chunked)


async def job_events(request: Request) -> Response | EventStream:
    job_id: str = request.path_params["jobId"]
    runtime = runtime_of(request)
    access = runtime.guard.identify(request)
    check_job(access, job_id)
    query = parse_query(JobStreamQuery, request.query_params)
    last_id = _last_event_id(request, query)
    held: int | None = None
    if query.output:
        known, held = _version_and_offset(last_id)
    else:
        known = _version(last_id)
    if request.method == "HEAD":
        runtime.streams.check()  # as GET would: 503 when every slot is taken
        current = await load_job(access, job_id, runtime.store)
        ended = holds_the_end(known, current)
        if ended and held is not None:
            ended = held >= (await runtime.store.read_output(job_id, held, 0)).total
        return _NOTHING_MORE if ended else StreamHead()
    lease = Lease(runtime, runtime.metrics.sse)
    try:
        followed = await follow_job(runtime, access, lease.mailbox, job_id, known, held)
    except BaseException:
        lease.end()
        raise
    if followed.subscription is None:
        lease.end()
        return _NOTHING_MORE
    prefix, ping = _opening(runtime.settings, query)
    return EventStream(
        lease=lease,
        access=access,
        subscription=followed.subscription,
        frame=output_stream_frame if query.output else job_stream_frame,
        prefix=prefix,
        ping=ping,
        ends_after_final=True,
    )


# The client already holds the job's terminal state: stop reconnecting.
_NOTHING_MORE = Response(status_code=204)


async def all_events(request: Request) -> Response | EventStream:
    if "output" in request.query_params:
        raise InvalidJobData(
            "output is streamed on a job's own stream: /api/jobs/{jobId}/events?output=1",
            [FieldError("output", "not on the all-jobs stream")],
        )
    query = parse_query(StreamQuery, request.query_params)
    runtime = runtime_of(request)
    access = runtime.guard.identify(request)
    where = JobFilter(job_type=query.job_type, status=query.status, owner=query.owner)
    client = request.client.host if request.client else None
    if request.method == "HEAD":
        # Answers what GET would, in its order (503 when every slot is taken, 401, 403,
        # 429 past the snapshot budget), spending nothing: a client's way to ask.
        runtime.streams.check()
        scope_filter(access, where)
        runtime.streams.check_snapshot(client)
        return StreamHead()
    lease = Lease(runtime, runtime.metrics.sse)
    try:
        followed = await follow_all(
            runtime, access, lease.mailbox, where, _last_event_id(request, query), client
        )
    except BaseException:
        lease.end()
        raise
    prefix, ping = _opening(runtime.settings, query)
    return EventStream(
        lease=lease,
        access=access,
        subscription=followed.subscription,
        frame=all_stream_frame,
        prefix=prefix + (RESET if followed.reset else b""),
        ping=ping,
        ends_after_final=False,
    )
