"""The connection edge against the real server, over raw sockets: head size and header
count, head and body deadlines, the connection limit, and the open-file limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import seconds

from . import conftest as e2e
from .sse_reader import SSEStream

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
HEAD_LIMIT = 16 * 1024  # JOBS_MAX_HEADER_BYTES' default


def get(
    srv: RunningServer, path: str = "/healthz", *, extra: str = "", close: bool = True
) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n{extra}{connection}\r\n".encode()


def padded(srv: RunningServer, size: int, *, close: bool = True) -> bytes:
    """A GET /healthz whose head is exactly ``size`` bytes."""
    bare = get(srv, extra="X-Pad: \r\n", close=close)
    return get(srv, extra=f"X-Pad: {'p' * (size - len(bare))}\r\n", close=close)


async def connected(srv: RunningServer) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (srv.host, srv.port))
    return sock


async def read_until_closed(sock: socket.socket, within: float = 5) -> bytes:
    """Everything the server sends until it closes the connection."""
    loop, received = asyncio.get_running_loop(), bytearray()
    async with asyncio.timeout(seconds(within)):
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                break  # a close with our bytes unread; what came before it was read
            if not data:
                break
            received += data
    return bytes(received)


async def exchange(srv: RunningServer, request: bytes, within: float = 5) -> bytes:
    """Send ``request`` on a new connection; everything answered until the server closes."""
    sock = await connected(srv)
    with sock:
        await asyncio.get_running_loop().sock_sendall(sock, request)
        return await read_until_closed(sock, within)


def on_time(elapsed: float, deadline: float) -> bool:
    """Cut at the deadline: not before it (give or take the server loop's clock, which it
    reads once a turn), and not long after (the sweep runs four times per timeout)."""
    return deadline - 0.05 <= elapsed < deadline + seconds(1)


def statuses(answer: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def problem(answer: bytes) -> dict[str, Any]:
    """The one problem+json answer in ``answer``: its body, after checking its head."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head, answer
    assert b"connection: close" in head, answer
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed this idle connection (without waiting)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def unread_by_server(srv: RunningServer, ports: set[int]) -> dict[int, int]:
    """Bytes sent from each of these client ports that the server has not read yet (the
    kernel's receive queues, from /proc/net/tcp)."""
    unread = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if local == srv.port and remote in ports:
            unread[remote] = int(fields[4].split(":")[1], 16)
    return unread


async def until_read_by_server(srv: RunningServer, socks: list[socket.socket]) -> None:
    """Wait until the server has read every byte these connections sent: their requests
    are parsed and being answered."""
    ports = {sock.getsockname()[1] for sock in socks}
    deadline = time.monotonic() + seconds(5)
    while (unread := unread_by_server(srv, ports)).keys() != ports or any(unread.values()):
        assert time.monotonic() < deadline, f"the server left requests unread: {unread}"
        await asyncio.sleep(0.01)


# -- head size ------------------------------------------------------------------------------


async def flood(srv: RunningServer, megabytes: int) -> bytes:
    """A header value of ``megabytes`` MB, sent as fast as the server takes it; the answer."""
    loop = asyncio.get_running_loop()
    sock = await connected(srv)
    chunk = b"a" * 1024 * 1024

    async def send() -> None:
        with contextlib.suppress(OSError):  # the server closed: the rest is not wanted
            await loop.sock_sendall(sock, get(srv).removesuffix(b"\r\n") + b"X-Big: ")
            for _ in range(megabytes):
                await loop.sock_sendall(sock, chunk)

    sender = asyncio.create_task(send())
    try:
        return await read_until_closed(sock, within=15)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        sock.close()


async def test_the_edges_own_answers_carry_the_security_headers(server: Start) -> None:
    """A 431 (or any answer the connection edge makes itself) has the headers every
    response has: nosniff, and no referrer (read tokens ride in URLs)."""
    srv = server()
    answer = await exchange(srv, padded(srv, HEAD_LIMIT + 1))
    assert statuses(answer) == [431]
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nx-content-type-options: nosniff" in head
    assert b"\r\nreferrer-policy: no-referrer" in head


async def test_huge_headers_get_431_and_cost_no_memory(server: Start) -> None:
    """Four parallel 50 MB headers: each gets 431 and a close, and memory stays flat."""
    srv = server()
    assert statuses(await exchange(srv, padded(srv, HEAD_LIMIT + 1))) == [431]  # warm up
    before = srv.rss_bytes()
    answers = await asyncio.gather(*(flood(srv, 50) for _ in range(4)))
    growth = srv.rss_bytes() - before
    for answer in answers:
        assert statuses(answer) == [431], answer[:200]
        refused = problem(answer)
        assert refused["type"] == "tag:jobcast,2026:request-head-too-large"
        assert "JOBS_MAX_HEADER_BYTES = 16384 bytes" in refused["detail"]
    assert growth < 4 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB"


async def test_more_headers_than_the_limit_get_431(server: Start) -> None:
    """10 000 small headers get 431; so does one header more than JOBS_MAX_HEADERS (100,
    Host included); exactly 100 are served."""
    srv = server()
    many = get(srv, extra="X-H: v\r\n" * 10_000)
    assert statuses(await exchange(srv, many)) == [431]
    # Host and Connection are two of them.
    assert statuses(await exchange(srv, get(srv, extra="X-H: v\r\n" * 98))) == [200]
    answer = await exchange(srv, get(srv, extra="X-H: v\r\n" * 99))
    assert statuses(answer) == [431]
    refused = problem(answer)
    assert refused["type"] == "tag:jobcast,2026:too-many-headers"
    assert "JOBS_MAX_HEADERS = 100" in refused["detail"]


async def test_a_head_at_the_limit_is_served_one_byte_more_gets_431(server: Start) -> None:
    """The request line and headers may take exactly JOBS_MAX_HEADER_BYTES, not a byte more."""
    srv = server()
    assert statuses(await exchange(srv, padded(srv, HEAD_LIMIT))) == [200]
    assert statuses(await exchange(srv, padded(srv, HEAD_LIMIT + 1))) == [431]


async def test_pipelined_requests_are_answered_in_order_up_to_a_refused_one(
    server: Start,
) -> None:
    """Pipelined requests in one write, two of them near the limit, are each answered;
    a head over the limit after them gets 431 after their answers, and the close."""
    srv = server()
    fine = get(srv, close=False) * 5 + padded(srv, HEAD_LIMIT - 10, close=False) * 2
    answer = await exchange(srv, fine + padded(srv, HEAD_LIMIT + 1))
    assert statuses(answer) == [200] * 7 + [431]


# -- deadlines ------------------------------------------------------------------------------


async def test_a_head_sent_a_line_at_a_time_gets_408_at_the_deadline(server: Start) -> None:
    """Header lines trickling in, one per 0.1 s: 408 once JOBS_HEADER_TIMEOUT (1 s) passes."""
    srv = server(JOBS_HEADER_TIMEOUT="1")
    loop = asyncio.get_running_loop()
    sock = await connected(srv)
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\n")
            for number in range(1000):
                await asyncio.sleep(0.1)
                await loop.sock_sendall(sock, b"X-Line-%d: still coming\r\n" % number)

    sender = asyncio.create_task(trickle())
    try:
        answer = await read_until_closed(sock, within=5)
    finally:
        sender.cancel()
        sock.close()
    elapsed = time.monotonic() - started
    assert statuses(answer) == [408]
    refused = problem(answer)
    assert refused["type"] == "tag:jobcast,2026:request-head-timeout"
    assert "JOBS_HEADER_TIMEOUT = 1" in refused["detail"]
    assert on_time(elapsed, 1)


async def test_a_partial_body_gets_408_and_nothing_is_logged_as_an_error(
    server: Start,
) -> None:
    """Half a body, then silence: 408 at JOBS_BODY_TIMEOUT, and the app takes it as the
    client leaving (no 500, no error in the log)."""
    srv = server(JOBS_BODY_TIMEOUT="1")
    sock = await connected(srv)
    started = time.monotonic()
    with sock:
        request = (
            f"POST /api/jobs HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            '{"message": "only the start'
        )
        await asyncio.get_running_loop().sock_sendall(sock, request.encode())
        answer = await read_until_closed(sock, within=5)
    elapsed = time.monotonic() - started
    assert statuses(answer) == [408]
    refused = problem(answer)
    assert refused["type"] == "tag:jobcast,2026:request-body-timeout"
    assert "JOBS_BODY_TIMEOUT = 1" in refused["detail"]
    assert on_time(elapsed, 1)
    # The server is still well, and said nothing about that request.
    assert statuses(await exchange(srv, get(srv))) == [200]
    log = srv.log()
    assert "ERROR" not in log
    assert " 500" not in log
    assert "POST /api/jobs" not in log


async def test_a_connection_that_sends_nothing_is_closed(server: Start) -> None:
    """A socket that never sends is closed at JOBS_HEADER_TIMEOUT, without an answer."""
    srv = server(JOBS_HEADER_TIMEOUT="1")
    sock = await connected(srv)
    started = time.monotonic()
    with sock:
        assert await read_until_closed(sock, within=5) == b""
    assert on_time(time.monotonic() - started, 1)


# -- the connection limit -------------------------------------------------------------------


async def test_idle_sockets_past_the_limit_make_room_for_new_requests(server: Start) -> None:
    """40 idle sockets with JOBS_MAX_CONNECTIONS=20: the oldest are closed to make room,
    and /healthz is answered."""
    srv = server(JOBS_MAX_CONNECTIONS="20")
    idle = [await connected(srv) for _ in range(40)]
    try:
        assert statuses(await exchange(srv, get(srv))) == [200]
        closed = [closed_by_server(sock) for sock in idle]
        assert closed.count(True) > 20 - 1, closed
        # The oldest went first.
        assert closed == sorted(closed, reverse=True), closed
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/api/jobs"), ("GET", "/healthz")], ids=["read", "unread"]
)
async def test_bodies_still_coming_past_the_limit_make_room_for_new_requests(
    server: Start, method: str, path: str
) -> None:
    """JOBS_MAX_CONNECTIONS=20 connections owing most of a body (which the app reads, or
    answered without reading): a trickle of bytes would keep each for its
    JOBS_BODY_TIMEOUT, so they make room as idle sockets do. /healthz is answered; the
    oldest body, if the app still waited for it, gets 503, its job never made."""
    srv = server(JOBS_MAX_CONNECTIONS="20")
    owing = (
        f"{method} {path} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    ).encode()
    holders = []
    try:
        for _ in range(20):
            holders.append(sock := await connected(srv))
            await asyncio.get_running_loop().sock_sendall(sock, owing)
        await until_read_by_server(srv, holders)
        assert statuses(await exchange(srv, get(srv))) == [200]
        first = await read_until_closed(holders[0])
        assert statuses(first) == ([503] if path == "/api/jobs" else [200])
        async with srv.client() as api:
            assert (await api.get("/api/jobs")).json()["jobs"] == []
    finally:
        for sock in holders:
            sock.close()


async def test_when_every_connection_is_busy_a_new_request_gets_503(server: Start) -> None:
    """Five long-polls hold JOBS_MAX_CONNECTIONS=5: the next request gets 503
    problem+json with Retry-After, and the long-polls are not cut for it."""
    srv = server(JOBS_MAX_CONNECTIONS="5")
    async with srv.client() as api:
        job_id = await api.create_job()
    wait = get(srv, f"/api/jobs/{job_id}?waitForVersion=1&timeout=2")
    polls = [await connected(srv) for _ in range(5)]
    try:
        for sock in polls:
            await asyncio.get_running_loop().sock_sendall(sock, wait)
        await until_read_by_server(srv, polls)
        answer = await exchange(srv, get(srv))
        assert statuses(answer) == [503]
        assert b"\r\nretry-after: 1\r\n" in answer
        refused = problem(answer)
        assert refused["type"] == "tag:jobcast,2026:too-many-connections"
        assert "JOBS_MAX_CONNECTIONS = 5" in refused["detail"]
        assert not any(closed_by_server(sock) for sock in polls)
    finally:
        for sock in polls:
            sock.close()


async def test_streams_outlive_the_deadlines_and_are_not_counted(server: Start) -> None:
    """SSE and WebSocket streams are not cut by the head and body deadlines, nor counted
    against JOBS_MAX_CONNECTIONS: with two allowed, five streams and requests coexist."""
    srv = server(JOBS_HEADER_TIMEOUT="1", JOBS_BODY_TIMEOUT="1", JOBS_MAX_CONNECTIONS="2")
    streams = [await SSEStream.open(f"{srv.base_url}/api/jobs/events") for _ in range(4)]
    async with connect(srv.ws_url, open_timeout=seconds(5)) as ws:
        try:
            assert [stream.status for stream in streams] == [200] * 4
            # An idle socket opened now is cut at its deadline: by then the sweep has
            # passed the streams' deadlines too, had they any.
            sock = await connected(srv)
            with sock:
                assert await read_until_closed(sock, within=5) == b""
            async with srv.client() as api:
                job_id = await api.create_job()
                for stream in streams:
                    while job_id not in (await stream.next_event(within=seconds(5))).data:
                        pass
                await ws.send(json.dumps({"type": "ping"}))
                async with asyncio.timeout(seconds(5)):
                    assert json.loads(await ws.recv()) == {"type": "pong"}
                assert (await api.get("/healthz")).status_code == 200
        finally:
            for stream in streams:
                stream.close()


# -- open files -----------------------------------------------------------------------------


@pytest.fixture
def open_files(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int], None]:
    """``open_files(soft, hard)``: servers started after it get that RLIMIT_NOFILE, as
    after ``ulimit -n``."""

    def limit(soft: int, hard: int) -> None:
        die_with_parent = e2e._die_with_parent

        def preexec() -> None:
            die_with_parent()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        monkeypatch.setattr(e2e, "_die_with_parent", preexec)

    return limit


def open_file_limit(srv: RunningServer) -> tuple[int, int]:
    limits = Path(f"/proc/{srv.pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
    assert match is not None, limits
    return int(match.group(1)), int(match.group(2))


async def test_with_256_open_files_300_idle_sockets_leave_healthz_answering(
    server: Start, open_files: Callable[[int, int], None]
) -> None:
    """Under ``ulimit -n 256``, with limits that fit it, 300 idle sockets do not stop
    /healthz from answering."""
    open_files(256, 256)
    srv = server(JOBS_MAX_STREAMS="50", JOBS_MAX_CONNECTIONS="150")
    assert open_file_limit(srv) == (256, 256)
    assert "RLIMIT_NOFILE" not in srv.log()
    idle = [await connected(srv) for _ in range(300)]
    try:
        for _ in range(3):
            assert statuses(await exchange(srv, get(srv))) == [200]
    finally:
        for sock in idle:
            sock.close()


async def test_start_up_raises_the_open_file_limit_and_warns_when_it_is_too_low(
    server: Start, open_files: Callable[[int, int], None]
) -> None:
    """The soft limit is raised to the hard one; when streams + connections + the reserve
    do not fit even that, one warning says so, naming the numbers and the settings."""
    open_files(256, 1024)
    srv = server()
    assert open_file_limit(srv) == (1024, 1024)
    warnings = [line for line in srv.log().splitlines() if "RLIMIT_NOFILE" in line]
    assert len(warnings) == 1, srv.log()
    (warning,) = warnings
    assert warning.startswith("WARNING:")
    for part in ("1024", "JOBS_MAX_STREAMS=1000", "JOBS_MAX_CONNECTIONS=1000", "ulimit -Hn"):
        assert part in warning
