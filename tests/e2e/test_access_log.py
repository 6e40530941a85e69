"""The real server's access log: with and without a line per request (JOBS_ACCESS_LOG),
and never a read token, however the URL spells its name."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect

from tests.conftest import seconds

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
Start = Callable[..., "RunningServer"]


async def _one_poll_and_one_socket(srv: RunningServer) -> None:
    async with srv.client() as client:
        assert (await client.get("/api/jobs")).status_code == 200
    async with connect(srv.ws_url, open_timeout=seconds(5)) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}


async def test_requests_and_sockets_are_logged_by_default(server: Start) -> None:
    """By default each request and each WebSocket handshake gets its access line."""
    srv = server()
    await _one_poll_and_one_socket(srv)
    srv.stop()
    log = srv.log()
    assert '"GET /api/jobs HTTP/1.1" 200' in log
    assert '"WebSocket /api/jobs/ws" [accepted]' in log


async def test_access_log_off_drops_every_per_request_line(server: Start) -> None:
    """JOBS_ACCESS_LOG=0: no line per request or socket; start-up and shutdown still log."""
    srv = server(JOBS_ACCESS_LOG="0")
    await _one_poll_and_one_socket(srv)
    srv.stop()
    log = srv.log()
    assert "GET /api/jobs" not in log
    assert "WebSocket /api/jobs/ws" not in log
    assert "connection open" not in log
    assert "Application startup complete" in log


KEY = "access-log-key-0123456789abcdefghij01234"


async def _read_token(srv: RunningServer) -> tuple[str, str]:
    """A new job's id and its read token."""
    async with srv.client(headers={"Authorization": f"Bearer {KEY}"}) as api:
        response = await api.post("/api/jobs", json={})
        assert response.status_code == 201, response.text
        created = response.json()
    return created["jobId"], created["token"]


async def wait_for_log(srv: RunningServer, *lines: str) -> str:
    """The server's log once it holds every one of ``lines``; fails after a deadline."""
    deadline = time.monotonic() + seconds(10)
    while not all(line in (log := srv.log()) for line in lines):
        missing = [line for line in lines if line not in log]
        assert time.monotonic() < deadline, f"never logged {missing}:\n{log}"
        await asyncio.sleep(0.02)
    return log


async def handshake(srv: RunningServer, target: str, *headers: str) -> int:
    """A raw WebSocket handshake for ``target``; the status of the server's answer."""
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    key = base64.b64encode(os.urandom(16)).decode()
    named = any(header.lower().startswith("host:") for header in headers)
    lines = [
        f"GET {target} HTTP/1.1",
        *([] if named else [f"Host: {srv.host}:{srv.port}"]),
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(seconds(5)):
            status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_a_token_is_blanked_however_the_query_spells_its_name(server: Start) -> None:
    """?%74oken= reads as ?token=: the server accepts it, and the log shows only REDACTED."""
    srv = server(JOBS_API_KEY=KEY)
    job_id, token = await _read_token(srv)
    async with srv.client() as anonymous:
        for query in (f"%74oken={token}", f"a=1&%74%6Fken={token}"):
            response = await anonymous.get(f"/api/jobs/{job_id}?{query}")
            assert response.status_code == 200, response.text  # a credential, then
    async with connect(f"{srv.ws_url}?t%6Fken={token}", open_timeout=seconds(5)) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
    log = await wait_for_log(
        srv,
        f'"GET /api/jobs/{job_id}?%74oken=REDACTED HTTP/1.1" 200',
        f'"GET /api/jobs/{job_id}?a=1&%74%6Fken=REDACTED HTTP/1.1" 200',
        '"WebSocket /api/jobs/ws?t%6Fken=REDACTED" [accepted]',
    )
    assert token not in log


async def test_websocket_denials_are_one_info_line_each_with_the_token_blanked(
    server: Start,
) -> None:
    """401, 403, 421 and 422 handshake denials: one INFO line each, no token, no ERROR."""
    srv = server(JOBS_API_KEY=KEY, JOBS_ALLOWED_HOSTS="127.0.0.1")
    _, token = await _read_token(srv)
    auth = f"Authorization: Bearer {KEY}"
    path = "/api/jobs/ws?%74oken="
    assert await handshake(srv, f"{path}{token}x") == 401  # not a valid token
    assert await handshake(srv, f"{path}{token}", "Origin: http://elsewhere.example") == 403
    assert await handshake(srv, f"{path}{token}", "Host: elsewhere.example") == 421
    assert await handshake(srv, f"/api/jobs/ws?batch=x&%74oken={token}", auth) == 422
    log = await wait_for_log(
        srv,
        f'"WebSocket {path}REDACTED" 401',
        f'"WebSocket {path}REDACTED" 403',
        f'"WebSocket {path}REDACTED" 421',
        '"WebSocket /api/jobs/ws?batch=x&%74oken=REDACTED" 422',
    )
    assert token not in log
    denials = [line for line in log.splitlines() if '"WebSocket /api/jobs/ws?' in line]
    assert len(denials) == 4
    assert all(line.startswith("INFO: ") for line in denials)
    assert "ERROR" not in log
