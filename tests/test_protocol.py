"""The connection edge (app.edge.protocol), driven byte by byte through a fake transport."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from app import serve as entry
from app.auth import Guard
from app.edge.protocol import (
    NEVER,
    RESERVED_DESCRIPTORS,
    HttpProtocol,
    Watch,
    descriptors_needed,
    open_files_warning,
)
from app.runtime import Runtime
from app.service import JobService
from app.settings import Settings
from app.store.memory import MemoryStore
from app.streams.hub import Hub
from app.streams.limits import StreamSlots
from app.tokens import Tokens

pytestmark = pytest.mark.anyio

LIMIT = 1024  # JOBS_MAX_HEADER_BYTES in these tests (its lowest allowed value)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Transport:
    """Just enough of an asyncio transport: what was written, and whether it is closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.written)]

    def problem(self) -> dict[str, Any]:
        """The problem+json body of the one answer written."""
        head, _, body = bytes(self.written).partition(b"\r\n\r\n")
        assert b"content-type: application/problem+json" in head
        assert b"connection: close" in head
        problem: dict[str, Any] = json.loads(body)
        return problem


class App:
    """Echoes the request body's size; ``/wait`` answers only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.heard: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            self.heard.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            size += len(message["body"])
            if not message["more_body"]:
                break
        if scope["path"] == "/wait":
            await self.release.wait()
        body = b"%d" % size
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Server:
    """One uvicorn server's shared state, and connections to it."""

    def __init__(self, streams: int = 10, **settings: Any) -> None:
        self.app = App()
        self.config = Config(app=self.app, log_config=None, lifespan="off")
        self.state = ServerState()
        self.settings = Settings(**{"max_header_bytes": LIMIT, **settings})
        self.streams = StreamSlots(streams)
        self.hub = Hub()
        store = MemoryStore(self.settings, self.hub.publish)
        service = JobService(store, settings=self.settings)
        guard = Guard(self.settings, Tokens(self.settings))
        runtime = Runtime(self.settings, service, self.hub, guard, self.streams)
        self.app_state: dict[str, Any] = runtime.state()

    def connect(self) -> tuple[HttpProtocol, Transport]:
        protocol = HttpProtocol(
            self.config, self.state, self.app_state, _loop=asyncio.get_running_loop()
        )
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport

    @property
    def watch(self) -> Watch:
        return Watch.of(self.state, self.app_state, asyncio.get_running_loop())


def head(size: int, path: str = "/", method: str = "GET", extra: str = "") -> bytes:
    """A request head of exactly ``size`` bytes (padded with one header)."""
    start = f"{method} {path} HTTP/1.1\r\nHost: example\r\n{extra}X-Pad: "
    padding = size - len(start) - 4
    assert padding >= 0
    return (start + "p" * padding + "\r\n\r\n").encode()


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def settle() -> None:
    """Let the request tasks the protocol started run as far as they can."""
    for _ in range(20):
        await asyncio.sleep(0)


class Recorder:
    """Stands in for the parser and counts what it is handed."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


# -- head size ------------------------------------------------------------------------------


@pytest.mark.parametrize("read", [1, 100, 1000, 64 * 1024, 1024 * 1024])
async def test_the_parser_is_never_handed_more_of_a_head_than_the_limit(read: int) -> None:
    """A 1 MB header, in reads of any size: the parser gets at most the limit, the client 431."""
    protocol, transport = Server().connect()
    recorder = Recorder(protocol.parser)
    protocol.parser = recorder  # type: ignore[assignment]
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1024 * 1024
    for piece in pieces(data, read):
        if transport.closed:
            break
        protocol.data_received(piece)
    assert recorder.fed <= LIMIT
    assert transport.closed
    assert transport.statuses() == [431]
    problem = transport.problem()
    assert problem["type"] == "tag:jobcast,2026:request-head-too-large"
    assert "JOBS_MAX_HEADER_BYTES = 1024 bytes" in problem["detail"]


@pytest.mark.parametrize("read", [1, 7, 500, LIMIT, 4 * LIMIT])
async def test_a_head_of_exactly_the_limit_is_served_one_byte_more_is_431(read: int) -> None:
    """The bound is exact however the head is split into reads."""
    server = Server()
    fits, fits_transport = server.connect()
    for piece in pieces(head(LIMIT), read):
        fits.data_received(piece)
    await settle()
    assert fits_transport.statuses() == [200]
    assert not fits_transport.closed

    over, over_transport = server.connect()
    for piece in pieces(head(LIMIT + 1), read):
        over.data_received(piece)
    assert over_transport.statuses() == [431]
    assert over_transport.closed


async def test_pipelined_heads_each_get_the_whole_limit() -> None:
    """Three heads just under the limit, in one read: each is served."""
    protocol, transport = Server().connect()
    protocol.data_received(head(LIMIT - 1) * 3)
    await settle()
    assert transport.statuses() == [200, 200, 200]
    assert not transport.closed


async def test_a_head_pipelined_after_a_body_is_bounded_too() -> None:
    """A body, then a head too large for the limit, in one read: the body's request is
    answered, the head gets 431, and the parser never held more of it than the limit."""
    protocol, transport = Server().connect()
    recorder = Recorder(protocol.parser)
    protocol.parser = recorder  # type: ignore[assignment]
    post = head(200, method="POST", extra="Content-Length: 10\r\n") + b"0123456789"
    protocol.data_received(post + head(LIMIT * 8))
    await settle()
    assert recorder.fed <= len(post) + LIMIT
    assert transport.statuses() == [200, 431]
    assert transport.closed


async def test_more_headers_than_the_limit_get_431() -> None:
    """At most JOBS_MAX_HEADERS headers, Host included; one more is 431, naming the setting."""
    server = Server(max_headers=8)
    at_limit, at_limit_transport = server.connect()
    at_limit.data_received(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 8 + b"\r\n")
    await settle()
    assert at_limit_transport.statuses() == [200]

    over, over_transport = server.connect()
    over.data_received(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 9 + b"\r\n")
    assert over_transport.statuses() == [431]
    assert over_transport.closed
    problem = over_transport.problem()
    assert problem["type"] == "tag:jobcast,2026:too-many-headers"
    assert "JOBS_MAX_HEADERS = 8" in problem["detail"]


async def test_a_refusal_waits_for_the_answers_before_it() -> None:
    """A pipelined head refused while the request before it is answered: that answer
    goes first, then the refusal, so each answer matches its request."""
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(head(100, path="/wait") + head(LIMIT * 2))
    await settle()
    assert transport.written == b""
    assert not transport.closed
    server.app.release.set()
    await settle()
    assert transport.statuses() == [200, 431]
    assert transport.closed


async def test_a_late_pipelined_head_waits_for_the_answer_before_it() -> None:
    """A pipelined head past its deadline gets its 408 after the request before it is answered."""
    server = Server(header_timeout=5)
    protocol, transport = server.connect()
    protocol.data_received(head(100, path="/wait") + b"GET / HTTP/1.1\r\n")
    await settle()
    server.watch.sweep(protocol.deadline)
    assert not transport.closed
    server.app.release.set()
    await settle()
    assert transport.statuses() == [200, 408]
    assert transport.closed


async def test_malformed_requests_get_400_problem_json() -> None:
    """What uvicorn answers with text/plain is a problem+json 400 here."""
    protocol, transport = Server().connect()
    protocol.data_received(b"NOT HTTP\r\n\r\n")
    assert transport.statuses() == [400]
    assert transport.problem()["type"] == "tag:jobcast,2026:malformed-request"
    assert transport.closed


# -- deadlines ------------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline() -> None:
    """Closed without an answer once JOBS_HEADER_TIMEOUT has passed, not before."""
    server = Server(header_timeout=5)
    protocol, transport = server.connect()
    server.watch.sweep(protocol.deadline - 0.01)
    assert not transport.closed
    server.watch.sweep(protocol.deadline)
    assert transport.closed
    assert transport.written == b""


async def test_a_partial_head_gets_408_at_the_head_deadline() -> None:
    """A head still incomplete at its deadline is answered 408, naming the setting."""
    server = Server(header_timeout=5)
    protocol, transport = server.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: example\r\n")
    server.watch.sweep(protocol.deadline)
    assert transport.statuses() == [408]
    problem = transport.problem()
    assert problem["type"] == "tag:jobcast,2026:request-head-timeout"
    assert "JOBS_HEADER_TIMEOUT = 5" in problem["detail"]
    assert transport.closed


async def test_a_partial_body_gets_408_and_the_app_hears_the_client_leave() -> None:
    """A body incomplete at JOBS_BODY_TIMEOUT: 408, and the app's receive() says disconnect."""
    server = Server(body_timeout=3)
    protocol, transport = server.connect()
    protocol.data_received(head(200, method="POST", extra="Content-Length: 100\r\n") + b"{")
    await settle()
    assert protocol.deadline == pytest.approx(asyncio.get_running_loop().time() + 3, abs=0.5)
    server.watch.sweep(protocol.deadline)
    await settle()
    assert transport.statuses() == [408]
    assert transport.problem()["type"] == "tag:jobcast,2026:request-body-timeout"
    assert transport.closed
    assert server.app.heard[-1] == "http.disconnect"


async def test_a_request_being_answered_has_no_deadline() -> None:
    """Once its request is read, a connection waits as long as its answer takes."""
    server = Server(header_timeout=1, body_timeout=1)
    protocol, transport = server.connect()
    protocol.data_received(head(100, path="/wait"))
    await settle()
    assert protocol.deadline == NEVER
    server.watch.sweep(asyncio.get_running_loop().time() + 3600)
    assert not transport.closed
    server.app.release.set()
    await settle()
    assert transport.statuses() == [200]
    # Answered: now it waits for the next head, with a deadline again.
    assert protocol.deadline != NEVER
    server.watch.sweep(protocol.deadline)
    assert transport.closed
    assert transport.statuses() == [200]


async def test_a_request_queued_behind_another_gets_its_body_deadline_when_it_starts() -> None:
    """A pipelined POST is not read while the request before it is answered: its
    body deadline starts when it does."""
    server = Server(body_timeout=2)
    protocol, transport = server.connect()
    protocol.data_received(
        head(100, path="/wait") + head(200, method="POST", extra="Content-Length: 10\r\n")
    )
    await settle()
    assert protocol.deadline == NEVER
    server.app.release.set()
    await settle()
    assert transport.statuses() == [200]
    assert protocol.deadline == pytest.approx(asyncio.get_running_loop().time() + 2, abs=0.5)
    protocol.data_received(b"0123456789")
    await settle()
    assert transport.statuses() == [200, 200]


# -- the connection limit -------------------------------------------------------------------


async def test_a_connection_past_the_limit_closes_the_one_idle_longest() -> None:
    """Over JOBS_MAX_CONNECTIONS, the oldest connection waiting for a head makes room."""
    server = Server(max_connections=2)
    (oldest, oldest_transport), (newer, newer_transport) = server.connect(), server.connect()
    newer.data_received(b"GET / HT")  # a head in progress is waiting too, but newer
    newest, newest_transport = server.connect()
    assert oldest_transport.closed
    assert oldest_transport.written == b""
    assert not newer_transport.closed
    newest.data_received(head(100))
    await settle()
    assert newest_transport.statuses() == [200]
    del oldest, newer


async def test_an_evicted_head_in_progress_is_told_why() -> None:
    """A head cut short to make room is answered 503 too-many-connections."""
    server = Server(max_connections=1)
    first, first_transport = server.connect()
    first.data_received(b"GET / HTTP/1.1\r\n")
    server.connect()
    assert first_transport.statuses() == [503]
    assert first_transport.problem()["type"] == "tag:jobcast,2026:too-many-connections"


async def test_a_body_still_coming_makes_room_after_idle_connections_and_is_told_why() -> None:
    """A slow body is pushed out for a newcomer (it would hold its place for
    JOBS_BODY_TIMEOUT), but after any idle connection, whose deadline is nearer yet
    which costs its client less; the app reading the body hears the client leave."""
    server = Server(max_connections=2)
    uploading, upload_transport = server.connect()
    uploading.data_received(head(200, method="POST", extra="Content-Length: 100\r\n") + b"{")
    await settle()
    idle, idle_transport = server.connect()
    answered, _ = server.connect()
    assert idle_transport.closed
    assert not upload_transport.closed
    answered.data_received(head(100, path="/wait"))  # busy now: not one to push out
    await settle()
    server.connect()
    assert upload_transport.statuses() == [503]
    assert "body was still coming" in upload_transport.problem()["detail"]
    await settle()
    assert "http.disconnect" in server.app.heard
    server.app.release.set()
    await settle()
    del idle


async def test_a_head_pipelined_behind_an_answer_is_not_pushed_out() -> None:
    """A head begun behind a request still being answered could only be refused after that
    answer: it holds its place, and a newcomer past the limit gets 503."""
    server = Server(max_connections=1)
    busy, busy_transport = server.connect()
    busy.data_received(head(100, path="/wait") + b"GET / HTTP/1.1\r\n")
    await settle()
    newcomer, transport = server.connect()
    newcomer.data_received(head(100))
    assert transport.statuses() == [503]
    assert not busy_transport.closed
    server.app.release.set()
    await settle()


async def test_when_every_connection_is_busy_a_newcomer_gets_503() -> None:
    """Connections with a request in progress are never cut for a newcomer: it gets 503."""
    server = Server(max_connections=2)
    busy = [server.connect() for _ in range(2)]
    for protocol, _ in busy:
        protocol.data_received(head(100, path="/wait"))
    await settle()
    newcomer, transport = server.connect()
    assert not transport.closed  # answered once its head is read
    newcomer.data_received(head(100))
    assert transport.statuses() == [503]
    assert b"retry-after: 1\r\n" in transport.written
    problem = transport.problem()
    assert problem["type"] == "tag:jobcast,2026:too-many-connections"
    assert "JOBS_MAX_CONNECTIONS = 2" in problem["detail"]
    assert not any(busy_transport.closed for _, busy_transport in busy)
    server.app.release.set()
    await settle()


async def test_streams_do_not_count_against_the_connection_limit() -> None:
    """Connections holding a stream slot are bounded by JOBS_MAX_STREAMS instead."""
    server = Server(max_connections=2, streams=5)
    streams, slots = [], []
    for _ in range(3):
        stream, transport = server.connect()
        stream.data_received(head(100, path="/wait"))  # as an SSE GET, answered for long
        streams.append((stream, transport))
        slots.append(server.streams.acquire())
    idle = [server.connect() for _ in range(2)]
    assert not any(transport.closed for _, transport in streams + idle)
    server.connect()
    assert [transport.closed for _, transport in streams + idle] == [False] * 3 + [True, False]
    for slot in slots:
        slot.release()
    server.app.release.set()
    await settle()


async def test_settings_default_when_the_app_state_has_none() -> None:
    """Served without Jobcast's lifespan (another app), the defaults apply."""
    config = Config(app=App(), log_config=None, lifespan="off")
    protocol = HttpProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    assert protocol.watch.max_header_bytes == Settings().max_header_bytes
    assert protocol.watch.streams is None
    assert not protocol.watch.over_capacity()


# -- open files -----------------------------------------------------------------------------


def test_descriptors_needed_adds_streams_connections_and_the_reserve() -> None:
    """Memory mode: streams + connections + the reserve; Redis adds its two pools."""
    memory = Settings(max_streams=100, max_connections=200)
    assert descriptors_needed(memory) == 300 + RESERVED_DESCRIPTORS
    redis = Settings(max_streams=100, max_connections=200, backend="redis")
    assert descriptors_needed(redis) > descriptors_needed(memory)


def test_the_open_file_warning_names_the_numbers_and_the_settings() -> None:
    """Silent when the limits fit; otherwise one message naming all three numbers."""
    settings = Settings(max_streams=1000, max_connections=1000)
    assert open_files_warning(settings, 4096) is None
    warning = open_files_warning(settings, 1024)
    assert warning is not None
    for part in ("1024", "JOBS_MAX_STREAMS=1000", "JOBS_MAX_CONNECTIONS=1000", "ulimit"):
        assert part in warning


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """python -m app lifts its soft limit to the hard one, and keeps it when refused."""
    limits = {"now": (256, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: limits.update(now=value))
    assert entry.raise_open_file_limit() == 4096
    assert limits["now"] == (4096, 4096)

    def refuse(_: int, __: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    limits["now"] = (256, resource.RLIM_INFINITY)
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert entry.raise_open_file_limit() == 256
    limits["now"] = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    assert entry.raise_open_file_limit() == sys.maxsize


async def test_shutdown_ends_the_streams_once_however_many_connections() -> None:
    """uvicorn shuts every connection down; the runtime's streams are ended by the first,
    not once per connection (which would walk every stream for every connection)."""
    server = Server()
    closes: list[None] = []
    server.hub.close = lambda: closes.append(None)  # type: ignore[method-assign]
    connections = [server.connect()[0] for _ in range(3)]
    for connection in connections:
        connection.shutdown()
    assert closes == [None]
