"""JOBS_ACCESS_LOG: the real server's log with and without a line per request."""

from __future__ import annotations

import json
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
