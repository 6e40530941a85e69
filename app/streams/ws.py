"""The WebSocket protocol of ``/api/jobs/ws``: JSON text frames, many subscriptions per socket.

A connection's own task writes (its mailbox: control replies first, then
job changes) while one more task reads client frames (subscribe,
unsubscribe, ping). A reader that ends closes the mailbox, which ends the
writer; a writer that ends cancels the reader. All of a connection's subscriptions
share one conflating mailbox, so a job is sent once however many
subscriptions match it. Protocol-level ping/pong and the 1012 close on
shutdown are uvicorn's.

Each subscription answers ``subscribed``, then its snapshot, then
``synced`` (with the cursor the client then holds), then live changes.
Every ``error`` frame has a ``code`` (:func:`app.problems.frame_code`) and,
when it concerns one subscription, its ``jobId`` (or ``all``); a
subscription that fails is not kept, so ``unavailable`` means "subscribe
again later" and nothing is left silently dead.

Security and limits, in the order a connection meets them:

- The handshake carries the credential (``?token=`` or ``Authorization``),
  checked before accepting: a bad one, or none while API keys are
  configured, is refused with 401 problem+json (the Origin check, before
  that, lives in :mod:`app.edge.origins`). What the credential may read is then
  checked per subscription: an ``error`` frame, not a closed socket, for
  a job or an ``all`` subscription outside its scope.
- A connection past JOBS_MAX_STREAMS is accepted and closed at once with
  1013 (try again later), so the client sees why.
- A connection opened with a read token is closed with 1008 ("token
  expired") when the token expires, whatever it subscribed to.
- At most JOBS_WS_MAX_SUBSCRIPTIONS subscriptions; one more gets an error.
- A token bucket of JOBS_WS_RATE frames per second (bursts of five
  seconds' worth): a frame over it gets an error frame and is ignored; a
  client that keeps going (as many refused frames again) is closed with 1008.
- An ``all`` subscription spends one of the client's snapshots
  (JOBS_SNAPSHOT_RATE, as the all-jobs SSE stream does).
- A frame over JOBS_WS_MAX_FRAME_BYTES closes the socket with 1009 (uvicorn
  already refuses such frames; this holds under any server).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.auth import Access
from app.edge import DIRECT_SEND, streaming
from app.errors import InvalidJobData, JobsError, TooManyStreams, Unauthenticated
from app.jobs import JobFilter
from app.models import Ping, SubscribeAll, SubscribeJob, Unsubscribe
from app.problems import frame_code, problem, refuse_websocket
from app.runtime import Runtime, runtime_of
from app.streams import eager
from app.streams.eager import Suspended
from app.streams.events import Event
from app.streams.follow import Lease, follow_all, follow_job
from app.streams.frames import FrameError, batch_mode, decode_frame, frames
from app.streams.hub import Subscription
from app.streams.limits import TokenBucket
from app.streams.mailbox import DirectWebSocket

# 1012: the server is restarting, reconnect; 1008: policy (not reading, an expired
# token, flooding); 1009: a frame too large; 1013: try later (too many connections, or
# the job store could not be read).
_CLOSE_CODES = {
    "shutdown": 1012,
    "slow": 1008,
    "overflow": 1008,
    "expired": 1008,
    "flood": 1008,
    "too_big": 1009,
    "bug": 1011,
    "unavailable": 1013,
}
_CLOSE_REASONS = {
    "slow": "not reading",
    "overflow": "too far behind",
    "expired": "token expired",
    "flood": "too many messages",
    "too_big": "frame too large",
    "bug": "internal error",
    "unavailable": "job store unavailable, try again",
}
BURST_SECONDS = 5  # a client may send this many seconds' worth of frames at once


class Connection:
    def __init__(
        self, websocket: WebSocket, runtime: Runtime, lease: Lease, access: Access, *, batch: bool
    ) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.lease = lease
        self.access = access
        self.hub = runtime.hub
        self.settings = runtime.settings
        self.mailbox = lease.mailbox
        self.jobs: dict[str, Subscription] = {}  # by job id
        self.everything: Subscription | None = None  # the all-jobs subscription
        burst = max(1.0, self.settings.ws_rate * BURST_SECONDS)
        self.budget = TokenBucket(self.settings.ws_rate, burst)
        self.strikes = TokenBucket(self.settings.ws_rate, burst)
        self.batch = batch
        self.follows_output = False  # whether output was ever asked for (for the metrics)
        self.send: Send = websocket.send  # the server's own once writing (DIRECT_SEND)
        self.socket: WebSocketsSansIOProtocol | None = None  # uvicorn's, to write below ASGI

    async def run(self) -> None:
        await self.websocket.accept()
        self.lease.start(self.access, heartbeat=False)
        reader = asyncio.ensure_future(self._read())
        # However the reader ends (the client left, or broke a limit), the writer stops.
        reader.add_done_callback(self.mailbox.client_left)
        failure: BaseException | None = None
        try:
            await self._write()
        except (WebSocketDisconnect, OSError):
            pass  # a writer that loses the client ends the connection too
        except Exception as exc:
            failure = exc
        finally:
            reader.cancel()
            await asyncio.wait([reader])
            if failure is None and not reader.cancelled():
                failure = reader.exception()
            if isinstance(failure, WebSocketDisconnect | OSError):
                failure = None
            # Whatever ended it, a bug included, the connection lets go of what it held.
            self.lease.end(*self._subscriptions())
            reason = "bug" if failure is not None else self.mailbox.closed or "gone"
            code = _CLOSE_CODES.get(reason)
            if code is not None:
                # A socket that accepts nothing would hold the close frame forever.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await self.websocket.close(code, _CLOSE_REASONS.get(reason))
            if failure is not None:
                raise failure  # worth its traceback

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.mailbox.close("gone")
                return
            text = message.get("text")
            size = len(text) if text is not None else len(message.get("bytes") or b"")
            if size > self.settings.ws_max_frame_bytes or (
                text is not None and len(text.encode()) > self.settings.ws_max_frame_bytes
            ):
                self.mailbox.close("too_big")
                return
            if not self.budget.take():
                if not self.strikes.take():
                    self.mailbox.close("flood")
                    return
                rate = f"{self.settings.ws_rate:g}"
                self._error("rate_limited", f"too many messages: {rate} per second")
                continue
            if text is None:
                self._error("bad_request", "send JSON text frames, not binary")
                continue
            await self._handle(text)

    async def _handle(self, text: str) -> None:
        try:
            frame = decode_frame(text)
        except FrameError as exc:
            self._error("bad_request", str(exc), exc.about)
            return
        if isinstance(frame, Ping):
            self._say({"type": "pong"})
        elif isinstance(frame, Unsubscribe):
            if frame.all:
                self._drop_all()
                self._say({"type": "unsubscribed", "all": True})
            elif frame.job_id is not None:
                self._drop_job(frame.job_id)
                self._say({"type": "unsubscribed", "jobId": frame.job_id})
            else:
                self._error("bad_request", "unsubscribe: give jobId, or all: true")
        else:
            await self._subscribe(frame)

    async def _subscribe(self, frame: SubscribeAll | SubscribeJob) -> None:
        about = _about(frame)
        limit = self.settings.ws_max_subscriptions
        known = (
            self.everything is not None
            if isinstance(frame, SubscribeAll)
            else (frame.job_id in self.jobs)
        )
        if not known and len(self.jobs) + (self.everything is not None) >= limit:
            self._error("too_many", f"at most {limit} subscriptions per connection", about)
            return
        try:
            if isinstance(frame, SubscribeAll):
                await self._subscribe_all(frame)
            else:
                await self._subscribe_job(frame)
        except JobsError as exc:
            if isinstance(frame, SubscribeAll):
                self._drop_all()
            else:
                self._drop_job(frame.job_id)
            self._error(frame_code(exc), str(exc), about)

    def _error(self, code: str, error: str, about: dict[str, Any] | None = None) -> None:
        self._say({"type": "error", "code": code, "error": error, **(about or {})})

    async def _subscribe_job(self, frame: SubscribeJob) -> None:
        if frame.since_offset is not None and not frame.output:
            raise InvalidJobData("subscribe: sinceOffset goes with output: true")
        self._drop_job(frame.job_id)
        held = (frame.since_offset or 0) if frame.output else None
        followed = await follow_job(
            self.runtime, self.access, self.mailbox, frame.job_id, frame.since, held
        )
        if frame.output:
            self.follows_output = True
        reply: dict[str, Any] = {"type": "subscribed", "jobId": frame.job_id}
        reply["version"] = followed.current.version
        if frame.output:
            reply["output"] = True
        if followed.subscription is None:
            # The client has the terminal state: nothing will follow (SSE answers 204).
            reply["final"] = True
        else:
            self.jobs[frame.job_id] = followed.subscription
        self._say(reply)

    async def _subscribe_all(self, frame: SubscribeAll) -> None:
        self._drop_all()
        client = self.websocket.client
        followed = await follow_all(
            self.runtime,
            self.access,
            self.mailbox,
            JobFilter(job_type=frame.job_type, status=frame.status, owner=frame.owner),
            frame.since,
            client.host if client else None,
        )
        self.everything = followed.subscription
        where = followed.where
        self._say(
            {
                "type": "subscribed",
                "all": True,
                "cursor": str(followed.head),
                "reset": followed.reset,
                # The filter in force, which for an owner token names its owner.
                **{
                    name: value
                    for name, value in (
                        ("jobType", where.job_type),
                        ("status", where.status),
                        ("owner", where.owner),
                    )
                    if value is not None
                },
            }
        )

    async def _write(self) -> None:
        mailbox = self.mailbox
        # Frames skip the middleware, which only ever looks at the handshake.
        send = self.send = self.websocket.scope.get(DIRECT_SEND, self.websocket.send)
        socket = self.socket = streaming.socket_of(send)
        direct = None if socket is None else DirectWebSocket(socket, self.lease.metrics)
        self.lease.write_through(self._write_through, direct)
        while True:
            await mailbox.wait()
            if not await mailbox.settle():
                return
            # On shutdown what is pending still goes out; any other close ends at once.
            if mailbox.closed is not None and mailbox.closed != "shutdown":
                return
            replies = mailbox.take_control()
            pending = mailbox.take()
            for event in pending:
                if event.is_final and event.job_id in self.jobs:
                    self._drop_job(event.job_id)
            async with contextlib.aclosing(self.lease.sendable(pending)) as batches:
                async for changes in batches:
                    self.lease.sent(changes, output=self.follows_output)
                    for text in frames(replies, changes, batch=self.batch):
                        message = {"type": "websocket.send", "text": text}
                        if not await mailbox.deliver(send(message)):
                            return
                    replies = []
            if mailbox.closed is not None:
                return

    def _write_through(self, events: list[Event]) -> Suspended | None:
        """Send live events now (see :meth:`Mailbox.flush`; none is a job's last):
        straight to the socket, all in one write, when it takes them; else through
        the server, as far as that goes without waiting."""
        self.lease.sent(events, output=self.follows_output)
        if len(events) == 1:  # the usual live write: one frame
            texts = [events[0].ws_frame()]
        else:
            texts = list(frames([], events, batch=self.batch))
        if self.socket is not None and streaming.send_now(self.socket, texts):
            return None
        return eager.start(self._send(texts))

    async def _send(self, texts: list[str]) -> None:
        """Send ``texts`` through the server, a frame each (it waits for a paused socket)."""
        for text in texts:
            await self.send({"type": "websocket.send", "text": text})

    def _subscriptions(self) -> list[Subscription]:
        everything = [] if self.everything is None else [self.everything]
        return [*self.jobs.values(), *everything]

    def _drop_job(self, job_id: str) -> None:
        self._drop(self.jobs.pop(job_id, None))

    def _drop_all(self) -> None:
        subscription, self.everything = self.everything, None
        self._drop(subscription)

    def _drop(self, subscription: Subscription | None) -> None:
        if subscription is not None:
            self.hub.unsubscribe(subscription)
            # Nothing arrives after `unsubscribed` that only this subscription wanted.
            remaining = self._subscriptions()
            self.mailbox.retain(lambda event: any(sub.covers(event) for sub in remaining))

    def _say(self, frame: dict[str, Any]) -> None:
        self.mailbox.say(orjson.dumps(frame).decode())


def _about(frame: SubscribeAll | SubscribeJob) -> dict[str, Any]:
    """What an error frame says it concerns: the subscription's job, or all jobs."""
    return {"jobId": frame.job_id} if isinstance(frame, SubscribeJob) else {"all": True}


class SocketRoute:
    """``/api/jobs/ws`` as a plain ASGI app, for Starlette's router.

    A socket lives as long as its client: Starlette's session wrapper around a
    function endpoint would be held, with its frames, for every open socket.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await jobs_socket(WebSocket(scope, receive, send))


async def not_a_socket(request: Request) -> Response:
    """``GET /api/jobs/ws`` without a WebSocket handshake (a browser's address bar, curl):
    say what it is, rather than look for a job called ``ws``."""
    return problem(
        426,
        "this is the live protocol's WebSocket endpoint: connect to it with a WebSocket "
        "client (ws:// or wss://), or stream Server-Sent Events from /api/jobs/events",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},  # RFC 9110 7.8
    )


async def jobs_socket(websocket: WebSocket) -> None:
    runtime = runtime_of(websocket)
    try:
        access = runtime.guard.identify(websocket)
        if access.kind == "nobody":
            raise Unauthenticated(
                "this needs an API key or a read token (?token= or Authorization: Bearer)",
                presented=False,
            )
        batch = batch_mode(websocket.query_params.get("batch"))
    except (Unauthenticated, InvalidJobData) as exc:
        await refuse_websocket(websocket, exc)
        return
    try:
        lease = Lease(runtime, runtime.metrics.ws)
    except TooManyStreams:
        # Accepted first, so the client gets the code and the reason, not a bare failure.
        await websocket.accept()
        await websocket.close(1013, "too many connections; try again later")
        return
    try:
        await Connection(websocket, runtime, lease, access, batch=batch).run()
    finally:
        lease.slot.release()  # once: whatever run() released already
