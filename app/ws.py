"""The WebSocket protocol of ``/api/jobs/ws``: JSON text frames, many subscriptions per socket.

A connection runs a reader (client frames: subscribe, unsubscribe, ping)
and a writer (its mailbox: control replies first, then job changes); the
first to finish cancels the other. All of a connection's subscriptions
share one conflating mailbox, so a job is sent once however many
subscriptions match it. Protocol-level ping/pong and the 1012 close on
shutdown are uvicorn's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.errors import JobsError
from app.events import Position
from app.hub import Hub, Mailbox, Subscription
from app.metrics import Metrics
from app.models import Ping, SubscribeAll, SubscribeJob, Unsubscribe
from app.settings import Settings
from app.store import JobFilter, JobStore

ClientFrame = SubscribeAll | SubscribeJob | Unsubscribe | Ping
ALL = "*"
# 1012: the server is restarting, reconnect; 1008: dropped for not reading (policy).
_CLOSE_CODES = {"shutdown": 1012, "slow": 1008, "overflow": 1008}


class Connection:
    def __init__(self, websocket: WebSocket) -> None:
        state = websocket.state
        self.websocket = websocket
        self.hub: Hub = state.hub
        self.store: JobStore = state.service.store
        self.settings: Settings = state.settings
        self.metrics: Metrics = state.metrics
        self.mailbox = Mailbox(self.settings.subscriber_backlog)
        self.subscriptions: dict[str, Subscription] = {}  # job id, or ALL

    async def run(self) -> None:
        await self.websocket.accept()
        self.hub.attach(self.mailbox, heartbeat=False)
        connections = self.metrics.connections.labels(transport="ws")
        connections.inc()
        tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                # A reader that saw the client leave, or a writer that gave up on it,
                # ends the connection; anything else is a bug worth its traceback.
                with contextlib.suppress(WebSocketDisconnect, TimeoutError, OSError):
                    task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for subscription in self.subscriptions.values():
                self.hub.unsubscribe(subscription)
            self.hub.detach(self.mailbox)
            connections.dec()
            self.metrics.events_conflated.labels(transport="ws").inc(self.mailbox.conflated)
            if self.mailbox.closed in ("slow", "overflow"):
                self.metrics.slow_disconnects.labels(transport="ws").inc()
            code = _CLOSE_CODES.get(self.mailbox.closed or "gone")
            if code is not None:
                # A socket that accepts nothing would hold the close frame forever.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await self.websocket.close(code)

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.mailbox.close("gone")
                return
            text = message.get("text")
            if text is None:
                self._say({"type": "error", "error": "send JSON text frames, not binary"})
                continue
            await self._handle(text)

    async def _handle(self, text: str) -> None:
        try:
            frame = decode_frame(text)
        except FrameError as exc:
            self._say({"type": "error", "error": str(exc)})
            return
        if isinstance(frame, Ping):
            self._say({"type": "pong"})
        elif isinstance(frame, Unsubscribe):
            key = ALL if frame.all or frame.job_id is None else frame.job_id
            self._drop(key)
            self._say({"type": "unsubscribed", **({"all": True} if key == ALL else {"jobId": key})})
        else:
            try:
                await (
                    self._subscribe_all(frame)
                    if isinstance(frame, SubscribeAll)
                    else self._subscribe_job(frame)
                )
            except JobsError as exc:
                self._drop(frame.job_id if isinstance(frame, SubscribeJob) else ALL)
                reply: dict[str, Any] = {"type": "error", "error": str(exc)}
                if isinstance(frame, SubscribeJob):
                    reply["jobId"] = frame.job_id
                self._say(reply)

    async def _subscribe_job(self, frame: SubscribeJob) -> None:
        subscription = self._add(frame.job_id, Subscription(self.mailbox, job_id=frame.job_id))
        current = await self.store.get_change(frame.job_id)
        has_it = frame.since == current.version
        self._say({"type": "subscribed", "jobId": frame.job_id, "version": current.version})
        if has_it and current.is_final:
            self._drop(frame.job_id)
            return
        subscription.prime([] if has_it else [current], version=current.version)

    async def _subscribe_all(self, frame: SubscribeAll) -> None:
        where = JobFilter(job_type=frame.job_type, status=frame.status)
        subscription = self._add(ALL, Subscription(self.mailbox, where=where))
        after = Position.parse(frame.since) if frame.since is not None else None
        replay = await self.store.replay(where, after)
        reset = replay.reset or (frame.since is not None and after is None)
        self._say(
            {
                "type": "subscribed",
                "all": True,
                "cursor": str(replay.head),
                "reset": reset,
                **frame.model_dump(include={"job_type", "status"}, exclude_none=True),
            }
        )
        subscription.prime(replay.changes, head=replay.head)

    async def _write(self) -> None:
        sent = self.metrics.events_sent.labels(transport="ws")
        mailbox = self.mailbox
        while True:
            await mailbox.wait()
            if mailbox.closed is not None:
                return
            for text in mailbox.take_control():
                await self._send(text)
            for change in mailbox.take():
                await self._send(change.ws_frame())
                sent.inc()
                if change.is_final and change.job_id in self.subscriptions:
                    self._drop(change.job_id)

    async def _send(self, text: str) -> None:
        try:
            async with asyncio.timeout(self.settings.send_timeout):
                await self.websocket.send_text(text)
        except TimeoutError:
            self.mailbox.close("slow")
            raise

    def _add(self, key: str, subscription: Subscription) -> Subscription:
        self._drop(key)
        self.subscriptions[key] = self.hub.subscribe(subscription)
        return subscription

    def _drop(self, key: str) -> None:
        subscription = self.subscriptions.pop(key, None)
        if subscription is not None:
            self.hub.unsubscribe(subscription)

    def _say(self, frame: dict[str, Any]) -> None:
        self.mailbox.say(orjson.dumps(frame).decode())


class FrameError(ValueError):
    """A client frame that is not one of the protocol's; the message says why."""


def decode_frame(text: str) -> ClientFrame:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("the frame is not JSON") from None
    if not isinstance(data, dict):
        raise FrameError("a frame is a JSON object with a `type`")
    kind = data.get("type")
    model: type[ClientFrame] | None
    if kind == "subscribe":
        model = SubscribeAll if "all" in data else SubscribeJob
    else:
        model = Unsubscribe if kind == "unsubscribe" else Ping if kind == "ping" else None
    if model is None:
        raise FrameError(f"unknown frame type {kind!r}: use subscribe, unsubscribe or ping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise FrameError(f"{kind}: {where + ': ' if where else ''}{first['msg']}") from None


async def jobs_socket(websocket: WebSocket) -> None:
    await Connection(websocket).run()
