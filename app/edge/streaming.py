"""Streams written below ASGI, on uvicorn's own protocols.

A live change goes to every stream of its job in one loop. Through uvicorn's
send, each of those writes costs a coroutine and frames its own HTTP chunk
or WebSocket frame. Here the write goes to the socket itself when it takes
it at once, framed once per change and shared by every stream:
:func:`write_now` for an SSE response (httptools, chunked), :func:`send_now`
for a WebSocket (websockets-sansio, no compression: a compressed frame is
each connection's own), which writes all the frames of a turn's changes in
one write, a system call for them all. Both say False when they cannot (the socket is
paused for a slow reader, the client is gone, the socket is closing): the
caller then sends through uvicorn as always, which waits for the socket or
says why it cannot send.

An idle stream notices its client leaving through :func:`when_gone`, a
callback from the connection's protocol, rather than a task per stream
waiting on ``receive()``: that task and its frames are memory every open
stream would hold.

They need uvicorn's request cycle (:func:`cycle_of`) or WebSocket protocol
(:func:`socket_of`), which ``python -m app`` serves with; under another
server they are not used.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from app.edge.protocol import HttpProtocol
from app.streams.events import Latest, chunked
from app.streams.frames import text_frame


def cycle_of(send: Send | None) -> RequestResponseCycle | None:
    """The request cycle whose own send ``send`` is; None for any other send."""
    cycle = getattr(send, "__self__", None)
    return cycle if isinstance(cycle, RequestResponseCycle) else None


def socket_of(send: Send | None) -> WebSocketsSansIOProtocol | None:
    """The WebSocket whose own send ``send`` is, if its frames are not compressed;
    else None."""
    socket = getattr(send, "__self__", None)
    if isinstance(socket, WebSocketsSansIOProtocol) and not socket.conn.extensions:
        return socket
    return None


def when_gone(cycle: RequestResponseCycle, callback: Callable[[], object] | None) -> bool:
    """Have ``callback`` called once the client of ``cycle`` is gone (at once if it is
    already), or stop with None; False if the connection's protocol cannot tell."""
    protocol = cycle.transport.get_protocol()
    if not isinstance(protocol, HttpProtocol):
        return False
    protocol.on_lost = callback
    if callback is not None and cycle.disconnected:
        protocol.on_lost = None
        callback()
    return True


def write_now(cycle: RequestResponseCycle, body: bytes) -> bool:
    """Write ``body`` as one chunk of the cycle's response, which must be streaming
    chunked, if the socket takes it now; False if it must wait."""
    # Hub._write_idle and Hub.ping make the same test, inline.
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
        return False
    last = _last_chunk
    if body is not last.source:
        last.framed = chunked(body)
        last.source = body
    cycle.transport.write(last.framed)
    return True


def send_now(socket: WebSocketsSansIOProtocol, texts: list[str]) -> bool:
    """Send ``texts``, a text frame each, all in one write, if the socket takes them
    now; False if it must wait, or cannot send at all."""
    # Hub._write_idle makes the same test, inline.
    if (
        not socket.writable.is_set()
        or socket.disconnected
        or socket.close_sent
        or socket.conn.state is not State.OPEN
    ):
        return False
    last = _last_frames
    if not last.made_from(texts):
        last.keep(texts, b"".join(map(text_frame, texts)))
    socket.transport.write(last.made)
    return True


class _Last:
    """The last body framed, and its chunk: a change's streams all send the same."""

    __slots__ = ("framed", "source")

    def __init__(self) -> None:
        self.source: object = None
        self.framed = b""


_last_chunk = _Last()
_last_frames: Latest[bytes] = Latest(b"")
