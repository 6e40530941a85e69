"""A real Server-Sent Events client over a raw, non-blocking TCP socket.

It speaks just enough HTTP/1.1 (status line, headers, chunked or sized
body) and parses ``text/event-stream`` by the WHATWG rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html): UTF-8,
CRLF/LF/CR line endings, comments, the ``event``/``data``/``id``/``retry``
fields, multi-line data, dispatch on a blank line.

Nothing reads the socket in the background: bytes are pulled only while a
test awaits :meth:`SSEStream.next_event` (or another read). A test that
stops calling it stalls the connection for real (the kernel buffers fill
and the server's writes block); calling it again resumes. A small
``rcvbuf`` makes the stall bite sooner. :meth:`SSEStream.abort` drops the
connection with a TCP reset, like a vanished browser tab.

A stream's snapshot ends with ``event: synced`` (SPEC 3):
:meth:`SSEStream.until_synced` reads a snapshot through it, and
:meth:`SSEStream.expect_synced` checks that the next event is it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import seconds

READ_SIZE = 65536
# Default bounds on opening a stream and on each read. A ``within`` passed in is in
# seconds already scaled: pass ``seconds(n)``.
OPEN_WITHIN = seconds(10)
WITHIN = seconds(5)
_LINE_END = re.compile(r"\r\n|\r|\n")


class EndOfStream(Exception):
    """The server ended the response body (or closed the connection)."""


@dataclass(frozen=True)
class Event:
    """A dispatched event: ``id`` is the stream's last event ID at dispatch time."""

    event: str
    data: str
    id: str
    has_id: bool

    def json(self) -> Any:
        return json.loads(self.data)


class _Chunked:
    """Incremental decoder of an HTTP/1.1 chunked body."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0  # bytes left in the current chunk
        self._state = "size"  # size | data | data-end | trailer
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while not self.done:
            if self._state == "size":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                size_text = bytes(self._buffer[:end]).split(b";")[0].strip()
                del self._buffer[: end + 2]
                self._remaining = int(size_text, 16)
                self._state = "data" if self._remaining else "trailer"
            elif self._state == "data":
                if not self._buffer:
                    break
                piece = self._buffer[: self._remaining]
                del self._buffer[: len(piece)]
                out += piece
                self._remaining -= len(piece)
                if self._remaining == 0:
                    self._state = "data-end"
            elif self._state == "data-end":
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise ValueError("malformed chunked encoding")
                del self._buffer[:2]
                self._state = "size"
            else:  # trailer: header lines until an empty one
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                if not line:
                    self.done = True
        return bytes(out)


class EventStreamParser:
    """The WHATWG event-stream interpretation, fed with decoded text as it arrives."""

    def __init__(self) -> None:
        self._line = ""
        self._after_cr = False
        self._data: list[str] = []
        self._event_type = ""
        self._saw_id = False
        self.last_event_id = ""
        self.retry: int | None = None
        self.events: deque[Event] = deque()
        self.comments: deque[str] = deque()
        self.all_comments: list[str] = []
        self.order: list[str] = []  # "retry" | "comment" | "event", as they came

    def feed(self, text: str) -> None:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two reads
        self._after_cr = False
        buffer, start = self._line + text, 0
        for match in _LINE_END.finditer(buffer):
            self._after_cr = match.group() == "\r" and match.end() == len(buffer)
            self._process(buffer[start : match.start()])
            start = match.end()
        self._line = buffer[start:]

    def _process(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            comment = line[1:].removeprefix(" ")
            self.comments.append(comment)
            self.all_comments.append(comment)
            self.order.append("comment")
            return
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
                self._saw_id = True
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
            self.order.append("retry")
        # Any other field is ignored.

    def _dispatch(self) -> None:
        data, event_type, saw_id = self._data, self._event_type, self._saw_id
        self._data, self._event_type, self._saw_id = [], "", False
        if not data:
            return
        self.events.append(
            Event(event_type or "message", "\n".join(data), self.last_event_id, saw_id)
        )
        self.order.append("event")


class SSEStream:
    """One ``GET`` of an event stream, read only when asked to."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._head = bytearray()
        self._body_raw = bytearray()  # the body of a response that is not a stream
        self._received = 0  # body bytes so far, for Content-Length
        self._chunked: _Chunked | None = None
        self._length: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._first_text = True
        self.parser = EventStreamParser()
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.ended = False  # the body ended as HTTP says it should
        self.eof = False  # the connection closed
        self.closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        within: float = OPEN_WITHIN,
        last_event_id: str = "",
    ) -> SSEStream:
        """Connect, send the request and read the response head.

        ``last_event_id`` is the id the client holds, as a browser's
        ``EventSource`` reconnects: sent as ``Last-Event-ID`` unless empty, and
        kept until an ``id:`` field replaces it (an empty one clears it).
        """
        if last_event_id:
            headers = {"Last-Event-ID": last_event_id, **(headers or {})}
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the advertised TCP window is small too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        stream = cls(sock)
        stream.parser.last_event_id = last_event_id
        try:
            async with asyncio.timeout(within):
                await stream._loop.sock_connect(sock, (host, port))
                lines = [
                    f"GET {path} HTTP/1.1",
                    f"Host: {host}:{port}",
                    "Accept: text/event-stream",
                    "Cache-Control: no-cache",
                    *(f"{name}: {value}" for name, value in (headers or {}).items()),
                ]
                # Header bytes are Latin-1 on the wire (RFC 9110 obs-text).
                request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                await stream._loop.sock_sendall(sock, request)
                await stream._read_head()
        except BaseException:
            stream.abort()
            raise
        return stream

    @property
    def retry(self) -> int | None:
        return self.parser.retry

    @property
    def comments(self) -> list[str]:
        """Every comment seen so far (``ping`` for ``: ping``)."""
        return self.parser.all_comments

    @property
    def order(self) -> list[str]:
        return self.parser.order

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id

    async def next_event(self, within: float = WITHIN) -> Event:
        """The next event; TimeoutError if none ``within`` seconds, EndOfStream at the end."""
        async with asyncio.timeout(within):
            while not self.parser.events:
                await self._pull()
        return self.parser.events.popleft()

    async def until_synced(self, within: float = WITHIN) -> tuple[list[Event], Event]:
        """The events up to the next ``synced``, and that ``synced`` event.

        ``synced`` ends a snapshot: the events before it are the state as of
        connecting (or what changed since the cursor resumed from), the
        events after it are live. It must carry ``data: {}`` and an ``id:``.
        """
        events: list[Event] = []
        async with asyncio.timeout(within):
            while (event := await self.next_event(within)).event != "synced":
                events.append(event)
        assert (event.data, event.has_id) == ("{}", True), event
        return events, event

    async def expect_synced(self, event_id: str | None = None, within: float = WITHIN) -> Event:
        """The next event, which must be ``synced`` (with ``id`` = ``event_id`` if given)."""
        event = await self.next_event(within)
        assert (event.event, event.data, event.has_id) == ("synced", "{}", True), event
        if event_id is not None:
            assert event.id == event_id, event
        return event

    async def next_comment(self, within: float = WITHIN) -> str:
        """The next comment line's text (events meanwhile stay queued for next_event)."""
        async with asyncio.timeout(within):
            while not self.parser.comments:
                await self._pull()
        return self.parser.comments.popleft()

    async def events_until_end(self, within: float = WITHIN) -> list[Event]:
        """Every event left, once the body ends; TimeoutError if it does not end in time."""
        events: list[Event] = []
        async with asyncio.timeout(within):
            while True:
                while self.parser.events:
                    events.append(self.parser.events.popleft())
                try:
                    await self._pull()
                except EndOfStream:
                    events.extend(self.parser.events)
                    self.parser.events.clear()
                    return events

    async def body(self, within: float = WITHIN) -> bytes:
        """The whole body of a response that is not an event stream (an error, a 204)."""
        async with asyncio.timeout(within):
            while not self.ended:
                try:
                    await self._pull()
                except EndOfStream:
                    break
        return bytes(self._body_raw)

    def abort(self) -> None:
        """Drop the connection at once with a TCP reset, as a crashed client would."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._sock.close()

    def close(self) -> None:
        """Close the connection normally (FIN)."""
        if not self.closed:
            self.closed = True
            self._sock.close()

    async def __aenter__(self) -> SSEStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def _recv(self) -> bytes:
        if self.closed:
            raise EndOfStream("the stream was closed by this client")
        try:
            data = await self._loop.sock_recv(self._sock, READ_SIZE)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        return data

    async def _read_head(self) -> None:
        while b"\r\n\r\n" not in self._head:
            data = await self._recv()
            if not data:
                raise EndOfStream("connection closed before the response head")
            self._head += data
        head, _, rest = bytes(self._head).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        _, status, *reason = status_line.split(" ", 2)
        self.status = int(status)
        self.reason = reason[0] if reason else ""
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            self._chunked = _Chunked()
        elif "content-length" in self.headers:
            self._length = int(self.headers["content-length"])
        if self.status in (204, 304) or self._length == 0:
            self.ended = True
        self._body(rest)

    async def _pull(self) -> None:
        """Read once from the socket and parse what came; EndOfStream when the body ended."""
        if self.ended:
            raise EndOfStream("the response body ended")
        data = await self._recv()
        if not data:
            self.ended = self._chunked is None and self._length is None
            raise EndOfStream("the connection closed" + ("" if self.ended else " mid-body"))
        self._body(data)

    def _body(self, data: bytes) -> None:
        if self._chunked is not None:
            payload = self._chunked.feed(data)
            self.ended = self._chunked.done
        elif self._length is not None:
            payload = data[: self._length - self._received]
            self.ended = self._received + len(payload) >= self._length
        else:
            payload = data
        self._received += len(payload)
        if self._is_event_stream():
            self._text(payload, final=self.ended)
        else:
            self._body_raw += payload

    def _is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def _text(self, payload: bytes, *, final: bool) -> None:
        text = self._decoder.decode(payload, final=final)
        if self._first_text and text:
            self._first_text = False
            text = text.removeprefix("\ufeff")
        self.parser.feed(text)
