"""Writing a streamed response's body chunks straight to its socket.

A live change goes to every stream of its job in one loop. Through uvicorn's
send, each of those writes costs a coroutine and frames its own HTTP chunk;
here, for a response uvicorn (httptools) is streaming with chunked transfer
encoding, :func:`write_now` writes the chunk itself when the socket takes it
at once, framed once per change and shared by every stream. It says False
when it cannot (the socket is paused for a slow reader, the client is gone,
another server runs the app): the caller then sends through uvicorn as
always, which waits for the socket.
"""

from __future__ import annotations

from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


def streaming(send: Send) -> RequestResponseCycle | None:
    """The request cycle whose own send ``send`` is, if it is streaming a chunked
    response; else None."""
    cycle = getattr(send, "__self__", None)
    if (
        isinstance(cycle, RequestResponseCycle)
        and cycle.response_started
        and cycle.chunked_encoding
        and not cycle.response_complete
    ):
        return cycle
    return None


def write_now(cycle: RequestResponseCycle, body: bytes) -> bool:
    """Write ``body`` as one chunk if the socket takes it now; False if it must wait."""
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
