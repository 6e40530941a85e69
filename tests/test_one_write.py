"""A turn's live changes reach each connection in one write, framed once for all of them.

When several changes arrive in one turn of the loop, an idle connection is written
once at the turn's end (tests/test_write_through.py). What that one write holds is
tested here: every WebSocket frame joined (one system call, not one per frame), the
SSE frames joined, each made once and taken by every connection with the same
changes, and never taken by a connection whose changes differ. The end-to-end suite
reads the same bytes off real sockets (tests/e2e/test_ws.py, tests/e2e/test_sse.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from types import SimpleNamespace
from typing import Any, cast

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from app import jobs
from app.edge import streaming
from app.models import NewJob
from app.streams.events import (
    Change,
    Event,
    Latest,
    Position,
    all_stream_frame,
    job_stream_frame,
)
from app.streams.sse import EventStream
from app.streams.ws import Connection
from tests.sockets import Response, WebSocketProtocol

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def changes(count: int) -> list[Change]:
    return [
        Change.of(jobs.create(NewJob(job_type="generic"), jobs.now()), Position(1, n))
        for n in range(count)
    ]


# --- Latest ------------------------------------------------------------------------------


def test_latest_is_made_from_the_very_same_items_only() -> None:
    a, b = "a" * 40, "b" * 40
    latest: Latest[str] = Latest("")
    latest.keep([a, b], "made")
    assert latest.made_from([a, b])
    assert not latest.made_from([a])
    assert not latest.made_from([b, a])
    assert not latest.made_from([a, "".join(["b"] * 40)])  # equal is not the same


def test_latest_keeps_a_copy_of_the_items_it_was_made_from() -> None:
    """A caller may reuse its list (encoded() empties the one it is given)."""
    a, b, c = object(), object(), object()
    items = [a, b]
    latest: Latest[str] = Latest("")
    latest.keep(items, "made")
    items[1] = c
    assert not latest.made_from(items)
    assert latest.made_from([a, b])


# --- WebSocket: streaming.send_now --------------------------------------------------------


def send_now(socket: WebSocketProtocol, texts: list[str]) -> bool:
    return streaming.send_now(cast(WebSocketsSansIOProtocol, socket), texts)


async def test_several_frames_go_to_the_socket_in_one_write() -> None:
    socket = WebSocketProtocol()
    assert send_now(socket, ["one", "two", "three"])
    assert len(socket.writes) == 1
    assert socket.frames == ["one", "two", "three"]


async def test_every_socket_sent_the_same_texts_gets_the_same_bytes() -> None:
    texts = [change.ws_frame() for change in changes(3)]
    first, second = WebSocketProtocol(), WebSocketProtocol()
    assert send_now(first, list(texts))
    assert send_now(second, list(texts))
    assert second.writes[0] is first.writes[0]  # framed once
    assert second.frames == texts


async def test_a_socket_sent_other_texts_gets_its_own_frames() -> None:
    one, two, three = (change.ws_frame() for change in changes(3))
    first, second, third = WebSocketProtocol(), WebSocketProtocol(), WebSocketProtocol()
    send_now(first, [one, two])
    send_now(second, [one, three])  # as long, and starting alike
    send_now(third, [one])
    assert second.frames == [one, three]
    assert third.frames == [one]


@pytest.mark.parametrize("state", ["paused", "disconnected", "closing", "close sent"])
async def test_a_socket_that_cannot_take_frames_now_is_written_nothing(state: str) -> None:
    socket = WebSocketProtocol()
    if state == "paused":
        socket.writable.clear()
    elif state == "disconnected":
        socket.disconnected = True
    elif state == "closing":
        socket.conn.state = State.CLOSING
    else:
        socket.close_sent = True
    assert not send_now(socket, ["one", "two"])
    assert socket.writes == []


# --- WebSocket: a connection's write-through ---------------------------------------------


def connection(socket: WebSocketProtocol | None, *, batch: bool) -> tuple[Connection, list[str]]:
    """A WebSocket connection as its mailbox writes through it; and what went out through
    the server's send instead of straight to the socket."""
    sent: list[str] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["text"])

    counted: list[Event] = []
    stream = Connection.__new__(Connection)
    stream.lease = cast(Any, SimpleNamespace(sent=lambda events, output: counted.extend(events)))
    stream.follows_output = False
    stream.batch = batch
    stream.socket = cast(WebSocketsSansIOProtocol, socket)
    stream.send = send
    return stream, sent


async def test_a_turns_changes_go_to_a_websocket_in_one_write_a_frame_each() -> None:
    socket = WebSocketProtocol()
    stream, sent = connection(socket, batch=False)
    pending = changes(3)
    assert stream._write_through(list(pending)) is None
    assert len(socket.writes) == 1
    assert socket.frames == [change.ws_frame() for change in pending]
    assert sent == []


async def test_in_batch_mode_a_turns_changes_are_one_batch_frame_made_once() -> None:
    pending = changes(3)
    first, second = WebSocketProtocol(), WebSocketProtocol()
    for socket in (first, second):
        stream, _ = connection(socket, batch=True)
        stream._write_through(list(pending))
    [batch] = second.frames
    expected = [json.loads(change.ws_frame()) for change in pending]
    assert json.loads(batch) == {"type": "batch", "messages": expected}
    assert second.writes[0] is first.writes[0]


@pytest.mark.parametrize("socket", [None, "paused"])
async def test_frames_the_socket_cannot_take_now_go_through_the_server_in_order(
    socket: str | None,
) -> None:
    """No socket of uvicorn's (another server), or one paused for a slow reader."""
    paused = None
    if socket == "paused":
        paused = WebSocketProtocol()
        paused.writable.clear()
    stream, sent = connection(paused, batch=False)
    pending = changes(3)
    assert stream._write_through(list(pending)) is None  # the server's send did not wait
    assert sent == [change.ws_frame() for change in pending]
    assert paused is None or paused.writes == []


# --- SSE: a stream's write-through ----------------------------------------------------------


def sse_stream(frame: Callable[[Event], bytes]) -> EventStream:
    stream = EventStream(
        lease=cast(Any, SimpleNamespace(sent=lambda events, output: None)),
        access=cast(Any, None),
        subscription=cast(Any, None),
        frame=frame,
        prefix=b"",
        ping=b"",
        ends_after_final=True,
    )
    stream.cycle = cast(Any, Response())
    return stream


def written(stream: EventStream) -> Response:
    return cast(Response, stream.cycle)


async def test_a_turns_changes_go_to_an_sse_stream_in_one_chunk() -> None:
    stream = sse_stream(job_stream_frame)
    pending = changes(3)
    assert stream.write_through(list(pending)) is None
    assert len(written(stream).chunks) == 1
    assert written(stream).body() == b"".join(map(job_stream_frame, pending))


async def test_sse_streams_with_the_same_changes_share_one_chunk_each_kind_its_own() -> None:
    pending = changes(3)
    jobs_streams = [sse_stream(job_stream_frame) for _ in range(2)]
    all_stream = sse_stream(all_stream_frame)
    for stream in [*jobs_streams, all_stream]:
        stream.write_through(list(pending))
    first, second = (written(stream).chunks[0] for stream in jobs_streams)
    assert second is first
    assert written(all_stream).body() == b"".join(map(all_stream_frame, pending))
    other = sse_stream(job_stream_frame)
    other.write_through([pending[0], *changes(1)])  # as long, starting alike
    assert written(other).body() != written(jobs_streams[0]).body()
    assert written(other).body().startswith(job_stream_frame(pending[0]))
