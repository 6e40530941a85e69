"""The connection edge: what a client can make the server hold before it has a request.

uvicorn's httptools protocol with bounds on the bytes, the time and the
connections a client can take before the app sees its request. ``python -m
app`` serves with it; serving with plain uvicorn, pass ``--http
app.edge.protocol:HttpProtocol`` to get the same bounds (without it there are none).

- **Head size.** The request line and headers together may be at most
  ``JOBS_MAX_HEADER_BYTES``, counted per read as they arrive: the parser is
  never handed more, so a 50 MB header costs what 16 KiB does, and its
  sender gets ``431``. At most ``JOBS_MAX_HEADERS`` headers, or ``431``.
- **Deadlines.** A request head must arrive within ``JOBS_HEADER_TIMEOUT``
  (of the connection opening, or of the previous answer), its body within
  ``JOBS_BODY_TIMEOUT`` of its head, or the client gets ``408`` (and the
  app, if it was reading the body, sees the client leave). A connection that
  sent nothing is closed without an answer; idle keep-alive connections are
  closed sooner by uvicorn's own timer. A request being answered, a long-poll
  or a stream, has no deadline here.
- **Connections.** At most ``JOBS_MAX_CONNECTIONS`` that are not streams
  (streams, SSE and WebSocket, are bounded by ``JOBS_MAX_STREAMS``). One
  more closes one that is waiting for a request's head or body (idle ones and
  heads first, then bodies, nearest their deadline first), so sockets that
  only hold a place, idle or trickling bytes, cannot lock others out; when
  every one is busy with a request being answered, the newcomer gets ``503``
  once its head is read.

Every answer is ``application/problem+json`` naming the setting, with
``Connection: close``; the connection closes after it. A refused request
pipelined behind others is answered after them, so answers stay in order.

Nothing here costs a request a timer or a call per header. Each connection
keeps one deadline, and one sweep per server (at least once a second, only
while it has connections) ends those past theirs; over the connection limit,
and only then, the connections are scanned for the one to close. Head bytes
are counted per read: a head that begins inside a read (pipelining) is
charged everything after the read's last blank line, an upper bound, exact
after a pipelined ``GET``. So the bound always holds; only a pipelined head
near the limit, behind a request with a body, can be refused early.

Settings come from the app's runtime in the lifespan state, read when the
first connection arrives; served without one, the defaults. When uvicorn
shuts the connections down, the runtime's streams end at once: uvicorn
waits for open responses before the lifespan's shutdown, and a stream would
otherwise hold it until the graceful timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Literal

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.edge.headers import EVERY_RESPONSE
from app.models import Problem, encode
from app.problems import MEDIA_TYPE, TYPE_PREFIX
from app.runtime import Runtime, found_in
from app.settings import Settings

# File descriptors a process holds besides its client connections and Redis pools:
# stdio, the listening socket, the event loop's (epoll, its wake-up pipe and signal
# handling), log files, static files being served. A serving process holds about a
# dozen; the rest is margin, also for connections accepted in one burst (an event loop
# accepts every waiting connection before the limit can close any).
RESERVED_DESCRIPTORS = 32

NEVER = math.inf
Phase = Literal["idle", "head", "body"]


def descriptors_needed(settings: Settings) -> int:
    """File descriptors one serving process may need at its limits."""
    needed = settings.max_streams + settings.max_connections + RESERVED_DESCRIPTORS
    if settings.backend == "redis":
        from app.store.redis_client import POOL_SIZE

        needed += 2 * POOL_SIZE  # two clients (commands, and the feed listener), a pool each
    return needed


def open_files_warning(settings: Settings, limit: int) -> str | None:
    """What to tell the operator when ``limit`` open files cannot hold the settings' limits."""
    needed = descriptors_needed(settings)
    if needed <= limit:
        return None
    return (
        f"this process may open {limit} files (RLIMIT_NOFILE, ulimit -n), but its limits "
        f"need {needed}: JOBS_MAX_STREAMS={settings.max_streams} + JOBS_MAX_CONNECTIONS="
        f"{settings.max_connections} + {needed - settings.max_streams - settings.max_connections}"
        " for the server itself. At full load new connections would fail, /healthz too. "
        "Lower JOBS_MAX_STREAMS or JOBS_MAX_CONNECTIONS, or raise the hard limit "
        "(ulimit -Hn; LimitNOFILE= in systemd; --ulimit nofile= in Docker)."
    )


class Answer:
    """A problem+json answer ready to write: encoded once, sent as is (plus the Date)."""

    __slots__ = ("_rest", "_status_line", "body")

    def __init__(self, status: int, slug: str, detail: str, *, retry_after: int = 0) -> None:
        problem = Problem(
            type=TYPE_PREFIX + slug, title=HTTPStatus(status).phrase, status=status, detail=detail
        )
        self.body = encode(problem)
        headers = [
            b"content-type: " + MEDIA_TYPE.encode(),
            b"content-length: %d" % len(self.body),
            b"connection: close",
            *(name + b": " + value for name, value in EVERY_RESPONSE),
        ]
        if retry_after:
            headers.append(b"retry-after: %d" % retry_after)
        self._status_line = STATUS_LINE[status]
        self._rest = b"".join(line + b"\r\n" for line in headers) + b"\r\n" + self.body

    def encode(self, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        """The whole response, with the server's default headers (Server, Date)."""
        defaults = (name + b": " + value + b"\r\n" for name, value in default_headers)
        return b"".join([self._status_line, *defaults, self._rest])


class Watch:
    """One per server: its bounds, its answers, and the one sweep of its connections."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime | None,
        connections: set[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.runtime = runtime
        self.max_header_bytes = settings.max_header_bytes
        self.max_headers = settings.max_headers
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.max_connections = settings.max_connections
        self.streams = runtime.streams if runtime is not None else None
        self.connections = connections
        self.loop = loop
        # A deadline is kept at most a quarter of the shorter timeout late.
        self.interval = min(1.0, max(0.01, min(self.header_timeout, self.body_timeout) / 4))
        self._timer: asyncio.TimerHandle | None = None
        self.arrivals = itertools.count()  # numbers connections in the order they came

        header_timeout, body_timeout = f"{self.header_timeout:g}", f"{self.body_timeout:g}"
        self.head_too_large = Answer(
            431,
            "request-head-too-large",
            "the request line and headers are larger than this server accepts "
            f"(JOBS_MAX_HEADER_BYTES = {self.max_header_bytes} bytes): send fewer or "
            "shorter headers (large cookies are the usual cause)",
        )
        self.too_many_headers = Answer(
            431,
            "too-many-headers",
            "the request has more headers than this server accepts "
            f"(JOBS_MAX_HEADERS = {self.max_headers}): send fewer",
        )
        self.late_head = Answer(
            408,
            "request-head-timeout",
            f"the request line and headers did not arrive within {header_timeout} s "
            f"(JOBS_HEADER_TIMEOUT = {header_timeout}): send the request head at once",
        )
        self.late_body = Answer(
            408,
            "request-body-timeout",
            f"the request body did not arrive within {body_timeout} s of its headers "
            f"(JOBS_BODY_TIMEOUT = {body_timeout}): send the whole body at once",
        )
        self.too_many_connections = Answer(
            503,
            "too-many-connections",
            f"this server holds its limit of {self.max_connections} connections "
            f"(JOBS_MAX_CONNECTIONS = {self.max_connections}) and each is busy with a "
            "request; retry shortly",
            retry_after=1,
        )
        self.body_pushed_out = Answer(
            503,
            "too-many-connections",
            f"this server holds its limit of {self.max_connections} connections "
            f"(JOBS_MAX_CONNECTIONS = {self.max_connections}), and this request's body was "
            "still coming, slowly: send the whole body at once, and retry",
            retry_after=1,
        )
        self.bad_request = Answer(
            400,
            "malformed-request",
            "the request is not valid HTTP/1.1: check the request line, the header "
            "syntax and the body framing (Content-Length or Transfer-Encoding)",
        )

    @classmethod
    def of(
        cls,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> Watch:
        """The server's watch, made by its first connection (after the lifespan ran)."""
        watch = _WATCHES.get(server_state)
        if watch is None:
            runtime = found_in(app_state)
            settings = runtime.settings if runtime is not None else Settings()
            watch = _WATCHES[server_state] = cls(settings, runtime, server_state.connections, loop)
        return watch

    def shutting_down(self) -> None:
        """The server stops: end every stream now, so none holds the shutdown (their
        clients reconnect and resume). Once: uvicorn tells every connection."""
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.hub.close()

    def start(self) -> None:
        """Keep sweeping while there are connections (a connection calls this on arrival)."""
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.sweep(self.loop.time())
        if self.connections:
            self.start()

    def sweep(self, now: float) -> None:
        """End every connection whose deadline is ``now`` or before."""
        late = [
            connection
            for connection in self.connections
            if isinstance(connection, HttpProtocol) and connection.deadline <= now
        ]
        for connection in late:
            connection.expire()

    def over_capacity(self) -> bool:
        """Whether more connections are open than streams and the connection limit allow."""
        streams = self.streams.in_use if self.streams is not None else 0
        return len(self.connections) - streams > self.max_connections

    def make_room(self, newcomer: HttpProtocol) -> bool:
        """Close the waiting connection to go first (see _waited); False if none is waiting."""
        waiting = [
            connection
            for connection in self.connections
            if isinstance(connection, HttpProtocol)
            and connection is not newcomer
            and connection.waiting
        ]
        if not waiting:
            return False
        min(waiting, key=_waited).evict()
        return True


def _waited(connection: HttpProtocol) -> tuple[bool, float, int]:
    # Idle connections and heads first (a body's deadline is further off, and it may be
    # an honest upload); nearest the deadline first within each. Deadlines set in one
    # turn of the loop are equal (its clock is read once a turn).
    return connection.phase == "body", connection.deadline, connection.arrival


_WATCHES: weakref.WeakKeyDictionary[ServerState, Watch] = weakref.WeakKeyDictionary()


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the answer is in ``_refusal``."""


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests (``appendleft``, ``pop``) as a list: an
    empty deque holds a block of 64 slots, about 700 bytes every connection would
    hold, and pipelining is rare."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded: see the module docstring.

    ``phase`` is where the parser is: ``idle`` between requests, ``head`` in a
    request head, ``body`` in a request body. ``deadline`` (loop time) is when
    the sweep ends the connection; ``NEVER`` while the server owes an answer.
    """

    # Slots, not the instance dict: uvicorn's own attributes fill the dict's shared
    # keys (30 at most), and ten more would make every connection's dict a full one,
    # over a kilobyte more per connection.
    __slots__ = (
        "_last_word",
        "_over_capacity",
        "_refusal",
        "_room",
        "_used",
        "arrival",
        "deadline",
        "on_lost",
        "phase",
        "watch",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.pipeline = _Pipeline()  # type: ignore[assignment]  # the same two methods
        self.watch = Watch.of(server_state, app_state, self.loop)
        self.phase: Phase = "idle"
        self.deadline = NEVER
        self.arrival = next(self.watch.arrivals)
        # Bytes the parser may take before the head in progress must be complete, and
        # the bytes that head has taken (-1: it began inside the read being parsed).
        self._room = self.watch.max_header_bytes
        self._used = 0
        self._refusal: Answer | None = None  # why a parser callback stopped the parser
        self._last_word: Answer | None = None  # to say once the requests before are answered
        self._over_capacity = False
        # Called once when the connection is lost: a stream's way to notice its client
        # leaving without a task waiting on receive() (see app.edge.streaming).
        self.on_lost: Callable[[], object] | None = None

    # -- the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        watch = self.watch
        self.deadline = self.loop.time() + watch.header_timeout
        watch.start()
        if watch.over_capacity() and not watch.make_room(self):
            self._over_capacity = True  # answered 503 once its head is read

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def data_received(self, data: bytes) -> None:
        if len(data) <= self._room:
            self._feed(data)
            return
        # More than the head in progress may still take: a piece at a time, each
        # checked, so the parser never holds more of a head than the limit.
        start = 0
        while start < len(data) and self._room > 0 and self._reading():
            stop = start + self._room
            self._feed(data[start:stop])
            start = stop

    def _reading(self) -> bool:
        """Not answered, lost or upgraded to a WebSocket."""
        return not self.transport.is_closing() and self in self.connections

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, plus the head count and our refusals."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self.refuse(self._refusal)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.phase == "head":
            self._count_head(data)

    def _count_head(self, data: bytes) -> None:
        """Charge ``data`` to the head still incomplete after it; 431 past the limit."""
        used = self._used
        if used < 0:
            # It began inside this read: it is at most what follows the read's last
            # blank line (a head containing one would be complete).
            end = data.rfind(b"\r\n\r\n")
            used = len(data) - (end + 4 if end >= 0 else 0)
        else:
            used += len(data)
        self._used = used
        self._room = self.watch.max_header_bytes - used
        if self._room <= 0:
            self.refuse(self.watch.head_too_large)

    @property
    def waiting(self) -> bool:
        """Waiting for what the client owes under a deadline: a request head with no request
        being answered before it, or a body (one the app reads, or the rest of one it
        answered without reading). A body trickled in a byte at a time holds a place as
        an idle socket does. A head pipelined behind a request being answered is not:
        its refusal would wait for that answer, and close nothing meanwhile."""
        cycle = self.cycle
        return (
            self.deadline != NEVER
            and (self.phase == "body" or cycle is None or cycle.response_complete)
            and not self.transport.is_closing()
        )

    def expire(self) -> None:
        """Its deadline passed: 408 for a late head or body, a bare close if nothing came."""
        self.deadline = NEVER
        if self.transport.is_closing():
            return
        if self.phase == "head":
            self.refuse(self.watch.late_head)
        else:
            self._give_up_body(self.watch.late_body)

    def shutdown(self) -> None:
        """The server is shutting down (uvicorn calls this on every connection)."""
        self.watch.shutting_down()
        super().shutdown()

    def evict(self) -> None:
        """Make room for a newer connection: 503 for a request not answered yet, else a
        bare close."""
        self.deadline = NEVER
        if self.phase == "head":
            self.refuse(self.watch.too_many_connections)
        else:
            self._give_up_body(self.watch.body_pushed_out)

    def _give_up_body(self, answer: Answer) -> None:
        """Close, answering ``answer`` if the app reading a body had not answered yet (it
        hears the client left: its receive() says so); a bare close otherwise."""
        cycle = self.cycle
        if self.phase == "body" and cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
            if not cycle.response_started:
                self._close_with(answer)
                return
        self.transport.close()

    def refuse(self, answer: Answer) -> None:
        """Parse no more; answer ``answer`` and close, once the requests before are answered."""
        self.deadline = NEVER
        self._room = 0
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._close_with(answer)
        else:
            self._last_word = answer  # said in on_response_complete

    def _close_with(self, answer: Answer) -> None:
        self.transport.write(answer.encode(self.server_state.default_headers))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self.refuse(self.watch.bad_request)

    # -- parser callbacks, and the end of a response

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = "head"
        self._used = -1
        if self.deadline == NEVER:  # pipelined behind a request still being answered
            self.deadline = self.loop.time() + self.watch.header_timeout

    def on_headers_complete(self) -> None:
        watch = self.watch
        if self._over_capacity:
            self._refusal = watch.too_many_connections
            raise _Refused
        if len(self.headers) > watch.max_headers:
            self._refusal = watch.too_many_headers
            raise _Refused
        self.phase = "body"
        self._used = 0
        self._room = watch.max_header_bytes
        super().on_headers_complete()
        # A request queued behind another is not read until that one is answered:
        # its body deadline starts then (on_response_complete).
        self.deadline = NEVER if self.pipeline else self.loop.time() + watch.body_timeout

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = "idle"
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # answered already (early, or upgraded)
            self.deadline = self.loop.time() + self.watch.header_timeout
        else:
            self.deadline = NEVER

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self.pipeline:
            return
        if self._last_word is not None and self.cycle.response_complete:
            self._close_with(self._last_word)
            return
        if not self.cycle.response_complete:
            # A queued request just started: if its body is still coming, its deadline runs.
            if self.phase == "body":
                self.deadline = self.loop.time() + self.watch.body_timeout
        elif self.phase == "idle":
            self.deadline = self.loop.time() + self.watch.header_timeout
