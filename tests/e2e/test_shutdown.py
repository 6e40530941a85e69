"""Ctrl+C with streams open: the server exits promptly and ends every stream cleanly."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import seconds

from .sse_reader import SSEStream

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


async def wait_for_exit(srv: RunningServer, within: float) -> None:
    """Return once the process has exited; fail if it is still running after `within`."""
    with anyio.fail_after(within):
        while srv.process.poll() is None:  # noqa: ASYNC110 (a process exit is not an event)
            await anyio.sleep(0.02)


async def test_sigint_ends_open_streams_and_exits_promptly(server: Start) -> None:
    """On SIGINT open SSE streams end cleanly, WebSockets close, and the process exits."""
    srv = server(JOBS_SHUTDOWN_TIMEOUT="10")
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, status="processing", progress=30)
    one = await SSEStream.open(f"{srv.base_url}/api/jobs/{job_id}/events")
    every = await SSEStream.open(f"{srv.base_url}/api/jobs/events")
    async with connect(srv.ws_url, open_timeout=seconds(5)) as ws, one, every:
        await ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
        with anyio.fail_after(seconds(5)):
            assert json.loads(await ws.recv())["type"] == "subscribed"
            assert json.loads(await ws.recv())["type"] == "job"
            synced = json.loads(await ws.recv())
            assert synced == {"type": "synced", "jobId": job_id, "version": 2}
        for stream in (one, every):
            snapshot, _ = await stream.until_synced(seconds(5))
            assert [event.json()["version"] for event in snapshot] == [2]

        srv.interrupt()
        interrupted = time.monotonic()
        for stream in (one, every):
            assert await stream.events_until_end(seconds(8)) == []
            assert stream.ended, "the body ended with its terminating chunk, not a dropped socket"
        with anyio.fail_after(seconds(8)), pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code in (1001, 1012)
        await wait_for_exit(srv, seconds(8))
    # Well before the 10 s graceful timeout: the streams did not hold shutdown up.
    assert time.monotonic() - interrupted < seconds(5)
    assert "graceful shutdown exceeded" not in srv.log()


async def test_sigint_with_no_streams_exits_promptly(server: Start) -> None:
    """An idle server stops on SIGINT within a few seconds and reports its shutdown."""
    srv = server()
    srv.interrupt()
    await wait_for_exit(srv, seconds(8))
    assert srv.process.returncode is not None
    assert "Shutting down" in srv.log() or "Finished server process" in srv.log()


async def test_sigint_answers_a_pending_long_poll_and_exits_promptly(server: Start) -> None:
    """On SIGINT a waiting long-poll gets an HTTP answer at once instead of holding shutdown."""
    srv = server(JOBS_SHUTDOWN_TIMEOUT="10")
    async with srv.client() as api:
        job_id = await api.create_job()
        answers: list[httpx2.Response | Exception] = []

        async def poll() -> None:
            try:
                answers.append(
                    await api.get(
                        f"/api/jobs/{job_id}",
                        params={"waitForVersion": 1, "timeout": 60},
                        timeout=seconds(30),
                    )
                )
            except httpx2.TransportError as exc:
                answers.append(exc)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(poll)
            await api.wait_for_metric("jobcast_long_polls", lambda waiting: waiting == 1)
            srv.interrupt()
            interrupted = time.monotonic()
            await wait_for_exit(srv, seconds(15))
        exited = time.monotonic() - interrupted
        (answer,) = answers
        assert isinstance(answer, httpx2.Response), f"the long-poll was cut off: {answer!r}"
        assert answer.status_code in (304, 503)
        assert exited < seconds(5), f"the long-poll held shutdown for {exited:.1f}s"
