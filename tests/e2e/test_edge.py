"""The edge against real clients that leave early: nothing to log, nothing counted as a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


async def test_a_client_leaving_mid_body_is_no_error(server: Start) -> None:
    """A POST whose client hangs up halfway through its body logs nothing and is counted
    as 499 (client closed request), never as a 500; the server goes on serving."""
    jobcast = server()
    for path in ("/api/jobs", "/api/tokens"):
        reader, writer = await asyncio.open_connection("127.0.0.1", jobcast.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            'Content-Length: 1000\r\n\r\n{"message": "'.encode()
        )
        await writer.drain()
        writer.close()  # the rest of the body never comes
        await writer.wait_closed()
        del reader
    async with jobcast.client() as client:
        await client.wait_for_metric(
            "jobcast_request_duration_seconds_count",
            lambda count: count == 1,
            method="POST",
            route="/api/tokens",
            status="499",
        )
        for route in ("/api/jobs", "/api/tokens"):
            labels = {"method": "POST", "route": route}
            assert (
                await client.metric(
                    "jobcast_request_duration_seconds_count", status="499", **labels
                )
                == 1
            )
            assert (
                await client.metric(
                    "jobcast_request_duration_seconds_count", status="500", **labels
                )
                == 0
            )
        assert (await client.post("/api/jobs", json={})).status_code == 201
    log = jobcast.log()
    assert "ClientDisconnect" not in log
    assert "ERROR" not in log
