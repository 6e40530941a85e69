"""A streamed response on uvicorn's httptools protocol, below ASGI.

A live change goes to every stream of its job in one loop. Through uvicorn's
send, each of those writes costs a coroutine and frames its own HTTP chunk;
:func:`write_now` writes the chunk itself when the socket takes it at once,
framed once per change and shared by every stream. It says False when it
cannot (the socket is paused for a slow reader, the client is gone): the
caller then sends through uvicorn as always, which waits for the socket.

An idle stream notices its client leaving through :func:`when_gone`, a
callback from the connection's protocol, rather than a task per stream
waiting on ``receive()``: that task and its frames are memory every open
stream would hold.

Both need the request cycle of uvicorn's httptools protocol (:func:`cycle_of`),
which ``python -m app`` serves with; under another server they are not used.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from app.edge.protocol import HttpProtocol


def cycle_of(send: Send | None) -> RequestResponseCycle | None:
    """The request cycle whose own send ``send`` is; None for any other send."""
    cycle = getattr(send, "__self__", None)
    return cycle if isinstance(cycle, RequestResponseCycle) else None


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
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
        return False
    if body is not _last.body:
        _last.chunk = b"%x\r\n%b\r\n" % (len(body), body)
        _last.body = body
    cycle.transport.write(_last.chunk)
    return True


class _LastChunk:
    """The last body framed, and its chunk: a change's streams all write the same body."""

    __slots__ = ("body", "chunk")

    def __init__(self) -> None:
        self.body = b""
        self.chunk = b""


_last = _LastChunk()
