"""The real server logs what clients do wrong at INFO or WARNING, one line, never at ERROR.

uvicorn logs some client faults at ERROR (see :mod:`app.logs`); here
a real client commits each against ``python -m app``, and the log must say
what happened without an ERROR or a traceback (the ``server`` fixture fails
a test whose server logged one).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from tests.conftest import seconds

from .sse_reader import SSEStream
from .test_access_log import wait_for_log

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
Start = Callable[..., "RunningServer"]

BLOB = secrets.token_urlsafe(15 * 1024)  # 20 KiB per update: a stalled reader stalls soon


async def test_invalid_utf8_in_a_text_frame_is_a_warning(server: Start) -> None:
    """A text frame of invalid UTF-8 closes the socket with 1007: one WARNING line, no ERROR."""
    srv = server()
    async with connect(srv.ws_url, open_timeout=seconds(5)) as ws:
        await ws.send(b"\xff\xfe not UTF-8", text=True)
        with anyio.fail_after(seconds(5)), pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007
    log = await wait_for_log(
        srv, "WARNING:  WebSocket client sent invalid UTF-8 in a text frame; closed with 1007"
    )
    assert "ERROR" not in log


async def test_a_stream_cut_for_not_reading_is_no_error(server: Start) -> None:
    """An SSE reader cut for not reading is a WARNING and an INFO line, not an ERROR."""
    srv = server(JOBS_SEND_TIMEOUT="0.5")
    async with srv.client() as api:
        job_id = await api.create_job()
        url = f"{srv.base_url}/api/jobs/{job_id}/events"
        async with await SSEStream.open(url, rcvbuf=4096, within=seconds(5)) as stalled:
            await stalled.next_event(seconds(5))
            with anyio.fail_after(seconds(30)):
                while await api.metric("jobcast_slow_disconnects_total", transport="sse") == 0:
                    for number in range(40):
                        await api.update(job_id, metadata={"blob": BLOB, "n": number})
    log = await wait_for_log(
        srv,
        "disconnected an SSE subscriber that stopped reading",
        "INFO:     closed the connection of a response the application cut short",
    )
    assert "ERROR" not in log
