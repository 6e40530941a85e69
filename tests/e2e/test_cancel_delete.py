"""Cancel, delete and stale jobs as subscribers see them, against the real server: the
cancel pushed over SSE and WebSocket and to a long-poll, `removed` on delete, and
JOBS_STALE_TTL failing a job nobody touches."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.conftest import seconds

from .test_sse import all_stream, job_stream, next_job, snapshot
from .test_ws import expect_synced, next_job as next_ws_job, receive, socket_to, subscribe

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


async def test_sse_gets_the_cancel_then_removed_on_delete(server: Start) -> None:
    """The job stream sends the cancel as a change, then `removed` on delete, and ends."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as stream, await all_stream(srv) as everyone:
            await next_job(stream)
            await stream.expect_synced("1")
            await snapshot(everyone)
            answer = await api.post(f"/api/jobs/{job_id}/cancel", json={"reason": "not needed"})
            assert answer.status_code == 200
            pushed = await next_job(stream)
            assert pushed == answer.json()
            assert (pushed["cancelRequested"], pushed["cancelReason"]) == (True, "not needed")
            assert await next_job(everyone) == pushed

            assert (await api.delete(f"/api/jobs/{job_id}")).status_code == 204
            events = await stream.events_until_end(seconds(5))
            assert [(event.event, event.json()) for event in events] == [
                ("removed", {"jobId": job_id})
            ]
            assert not events[0].has_id  # the client keeps the last version it saw
            removed = await everyone.next_event(seconds(5))
            assert (removed.event, removed.json()) == ("removed", {"jobId": job_id})


async def test_websocket_gets_the_cancel_then_removed_on_delete(server: Start) -> None:
    srv = server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        await subscribe(ws, job_id)
        await next_ws_job(ws)
        await expect_synced(ws, job_id, 1)
        await api.update(job_id, status="processing")
        await next_ws_job(ws)
        answer = await api.post(f"/api/jobs/{job_id}/cancel", json={})
        assert await next_ws_job(ws) == answer.json()
        assert answer.json()["cancelRequested"] is True
        assert (await api.delete(f"/api/jobs/{job_id}")).status_code == 204
        removed = await receive(ws)
        assert (removed["type"], removed["jobId"]) == ("removed", job_id)


async def test_long_poll_returns_on_the_cancel(server: Start) -> None:
    """A legacy poller waiting for the next version learns of the cancel at once."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, status="processing")
        async with srv.client() as poller:
            waiting = poller.get(f"/api/jobs/{job_id}?waitForVersion=2&timeout=20")
            answer = await api.post(f"/api/jobs/{job_id}/cancel", json={"force": True})
            polled = await waiting
        assert polled.status_code == 200
        assert polled.json() == answer.json()
        assert (polled.json()["status"], polled.json()["error"]) == ("error", "canceled")


async def test_stale_jobs_fail_and_touched_ones_do_not(server: Start) -> None:
    """With JOBS_STALE_TTL a job that goes that long unchanged fails as `stale`, pushed like
    any change; a job whose worker keeps reporting is left alone."""
    ttl = seconds(1)
    srv = server(JOBS_STALE_TTL=str(ttl))
    async with srv.client() as api:
        abandoned = await api.create_job()
        alive = await api.create_job()

        async def keep_reporting() -> None:
            for progress in range(1, 101):
                await api.update(alive, progress=progress)
                await anyio.sleep(ttl / 10)  # a worker's pace, not a wait for an event

        async with await job_stream(srv, abandoned) as stream, anyio.create_task_group() as group:
            await next_job(stream)
            await stream.expect_synced("1")
            group.start_soon(keep_reporting)
            events = await stream.events_until_end(seconds(10))
            group.cancel_scope.cancel()
        [failed] = [event.json() for event in events]
        assert (failed["status"], failed["error"]) == ("error", "stale")
        assert (await api.job(abandoned)) == failed
        assert (await api.job(alive))["status"] == "queued"
        assert await api.metric("jobcast_jobs_failed_total") == 1
