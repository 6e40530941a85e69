"""A bounded load test on loopback: hundreds of misbehaving clients come and go.

They stop reading their streams, send garbage, flood, and drop
connections halfway through the HTTP or WebSocket handshake. Meanwhile a
well-behaved client must keep getting answers within a bound; once they
have all left, every stream slot is free again and the server's resident
memory is back near where it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tests.conftest import seconds

from .sse_reader import SSEStream

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
KEY = "abuse-key-0123456789abcdefghij0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

STALLED_SSE = 150  # streams that never read
GARBAGE_WS = 100  # sockets that send junk and leave
STALLED_WS = 100  # sockets that subscribe to everything and never read
HALF_HANDSHAKES = 150  # raw connections that stop mid-request
RESPONSIVE_WITHIN = 2.0  # seconds a normal request may take while all this goes on
# What the allocator keeps after the first wave (arenas sized for its peak), generously;
# a second, identical wave must fit in what the first left behind.
RSS_SLACK = 96 * 1024 * 1024
RSS_REPEAT_SLACK = 24 * 1024 * 1024
HALF_REQUESTS = [
    b"GET /api/jobs/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    b'POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"message": ',
    b"GET /api/jobs/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ",
]


async def _raw_connection(host: str, port: int, request: bytes) -> None:
    """Open a TCP connection, send part of a request, then vanish."""
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        writer.transport.abort()  # a reset, not a polite close
        del reader


async def _garbage_socket(url: str, number: int) -> None:
    """Connect, send junk of every kind, and disconnect without closing politely."""
    with contextlib.suppress(OSError, WebSocketException, TimeoutError):
        ws = await connect(url, open_timeout=seconds(10))
        await ws.send(b"\x00\xff binary")
        await ws.send("{not json")
        await ws.send('{"type": "subscribe", "jobId": "' + "x" * 300 + '"}')
        await ws.send('{"type": "subscribe", "all": true, "status": "nope"}')
        for _ in range(number % 5):
            await ws.send('{"type": "ping"}')
        ws.transport.abort()


async def _stalled_socket(url: str) -> ClientConnection | None:
    """A keyed socket that subscribes to every job and then never reads again.

    ``max_queue=1`` makes the client stop reading the TCP stream once one
    frame waits, so the server's writes really block.
    """
    with contextlib.suppress(OSError, WebSocketException, TimeoutError):
        ws = await connect(url, additional_headers=AUTH, open_timeout=seconds(10), max_queue=1)
        await ws.send('{"type": "subscribe", "all": true}')
        return ws
    return None


async def _normal_request_time(api: JobsClient) -> float:
    started = time.monotonic()
    response = await api.get("/healthz")
    assert response.status_code == 200
    return time.monotonic() - started


async def _churn(api: JobsClient, job_ids: list[str], rounds: int) -> None:
    """Change every job with bulky changes, so stalled readers fall behind for real.

    The blob is random: WebSocket clients negotiate permessage-deflate, which
    would shrink a repetitive one to nothing.
    """
    for number in range(rounds):
        blob = secrets.token_urlsafe(15 * 1024)
        for job_id in job_ids:
            await api.update(job_id, progress=number % 100, metadata={"blob": blob})


async def _abuse_round(srv: RunningServer, api: JobsClient, job_ids: list[str], token: str) -> None:
    """One wave of misbehaving clients, from connecting to leaving; asserts responsiveness."""
    ws_url = f"{srv.ws_url}?token={token}"
    # Stalled readers, with tiny receive buffers: they never read again.
    stalled_sse = [
        await SSEStream.open(f"{srv.base_url}/api/jobs/events", headers=AUTH, rcvbuf=4096)
        for _ in range(STALLED_SSE)
    ]
    stalled_ws = [await _stalled_socket(srv.ws_url) for _ in range(STALLED_WS)]
    assert all(stream.status == 200 for stream in stalled_sse)
    assert all(ws is not None for ws in stalled_ws)
    slow_before = await api.metric("jobcast_slow_disconnects_total", transport="sse")
    async with anyio.create_task_group() as group:
        for number in range(GARBAGE_WS):
            group.start_soon(_garbage_socket, ws_url, number)
        for number in range(HALF_HANDSHAKES):
            group.start_soon(_raw_connection, srv.host, srv.port, HALF_REQUESTS[number % 3])
        group.start_soon(_churn, api, job_ids, 8)
        assert await _normal_request_time(api) < seconds(RESPONSIVE_WITHIN)
    assert await _normal_request_time(api) < seconds(RESPONSIVE_WITHIN)

    # Stalled readers are cut off by the server (send timeout or backlog), not by us.
    await api.wait_for_metric(
        "jobcast_slow_disconnects_total", lambda v: v > slow_before, transport="sse"
    )

    # Everyone leaves.
    for stream in stalled_sse:
        stream.abort()
    for ws in stalled_ws:
        if ws is not None:
            ws.transport.abort()
    await api.wait_for_metric("jobcast_connections", lambda v: v == 0, 20, transport="sse")
    await api.wait_for_metric("jobcast_connections", lambda v: v == 0, 20, transport="ws")
    assert await _normal_request_time(api) < seconds(RESPONSIVE_WITHIN)


async def test_misbehaving_clients_leave_the_server_responsive_and_lean(server: Start) -> None:
    """Hundreds of clients that stall, spew garbage or hang up mid-handshake do no lasting harm."""
    srv = server(
        JOBS_API_KEY=KEY,
        JOBS_SEND_TIMEOUT="1",
        JOBS_HEARTBEAT="0.5",
        JOBS_MAX_STREAMS="1000",
        # Every client here is 127.0.0.1: its all-jobs snapshots (hundreds a wave, each
        # stalled stream and socket takes one) must not run into the per-client budget.
        JOBS_SNAPSHOT_RATE="100",
    )
    async with srv.client(headers=AUTH) as api:
        job_ids = [await api.create_job(message=f"job {n}") for n in range(20)]
        token = (await api.post("/api/tokens", json={"owner": "nobody"})).json()["token"]
        sse_url = f"{srv.base_url}/api/jobs/events?token={token}"
        # Warm up every code path once, so the baseline includes what is loaded lazily.
        async with await SSEStream.open(sse_url):
            pass
        await _garbage_socket(f"{srv.ws_url}?token={token}", 0)
        await _churn(api, job_ids, 1)
        await api.wait_for_metric("jobcast_connections", lambda v: v == 0, transport="ws")
        baseline = srv.rss_bytes()

        await _abuse_round(srv, api, job_ids, token)
        first = await _settled_rss(srv, baseline + RSS_SLACK)
        # The same again: what the allocator kept for the first wave serves the second.
        await _abuse_round(srv, api, job_ids, token)
        second = await _settled_rss(srv, first + RSS_REPEAT_SLACK)

        # The slots are free again: new streams open.
        reopened = [await SSEStream.open(sse_url) for _ in range(10)]
        assert all(stream.status == 200 for stream in reopened)
        for stream in reopened:
            stream.close()

    mib = 2**20
    report = f"RSS {baseline / mib:.1f} MiB, then {first / mib:.1f}, then {second / mib:.1f}"
    assert first <= baseline + RSS_SLACK, report
    assert second <= first + RSS_REPEAT_SLACK, report


async def _settled_rss(srv: RunningServer, bound: int) -> int:
    """The server's RSS once it is under ``bound``, or after a few seconds of falling."""
    deadline = time.monotonic() + seconds(5)
    rss = srv.rss_bytes()
    while rss > bound and time.monotonic() < deadline:
        await anyio.sleep(0.2)
        rss = srv.rss_bytes()
    return rss
