"""Subscribers that stop reading: bounded server memory, conflation, slow disconnects.

A stalled reader really stalls here: the SSE client reads its socket only
when asked, with a small receive buffer, so the kernel buffers fill and the
server's writes block. Meanwhile thousands of 20 KiB updates flow. The
server must keep only the newest state per job for that reader (SPEC 3,
last point), hand it over when reading resumes, and drop a reader that
never resumes once its send timeout passes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import seconds

from .sse_reader import Event, SSEStream

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]

# Each update carries 20 KiB of metadata that does not compress (WebSocket clients
# negotiate permessage-deflate, which would shrink a repetitive blob to nothing).
BLOB = secrets.token_urlsafe(15 * 1024)
SMALL_RCVBUF = 4096
MiB = 1024 * 1024


# A stall that lasts while thousands of updates are published, then resumes: under a
# loaded machine that can outlast the default send timeout (30 s), which would cut the
# reader these tests want to see resume. The timeout has tests of its own below.
STALL_FOR_AS_LONG_AS_IT_TAKES = "600"
# A stalled WebSocket client answers no ping either, and uvicorn closes a WebSocket whose
# pong is 40 s late (a ping every 20 s, 20 s to answer): its stall must end before that,
# so it is held while a thousand updates flow (20 MB), not three.
WEBSOCKET_UPDATES = 1000


async def publish(api: JobsClient, job_ids: list[str], updates: int, lanes: int = 4) -> int:
    """Send `updates` large updates spread over the jobs, `lanes` at a time; bytes sent."""
    sent = 0

    async def lane(number: int) -> None:
        nonlocal sent
        for index in range(number, updates, lanes):
            job_id = job_ids[index % len(job_ids)]
            body = {"progress": index * 100 // updates, "metadata": {"blob": BLOB, "n": index}}
            await api.update(job_id, **body)
            sent += len(BLOB)

    async with anyio.create_task_group() as tasks:
        for number in range(lanes):
            tasks.start_soon(lane, number)
    return sent


async def stalled_stream(url: str) -> SSEStream:
    """An SSE stream with a tiny receive buffer, read up to its snapshot, then left alone."""
    stream = await SSEStream.open(url, rcvbuf=SMALL_RCVBUF, within=seconds(5))
    assert stream.status == 200
    return stream


def check_job_order(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Each job's versions only increase; returns each job's last state."""
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        job = event.json()
        previous = last.get(job["jobId"])
        assert previous is None or job["version"] > previous["version"], (previous, job)
        last[job["jobId"]] = job
    return last


async def test_stalled_job_stream_keeps_server_memory_bounded_then_gets_the_final_state(
    server: Start,
) -> None:
    """A stalled job stream costs the server bounded memory; on resume it gets the final state."""
    srv = server(JOBS_SEND_TIMEOUT=STALL_FOR_AS_LONG_AS_IT_TAKES)
    async with srv.client() as api:
        job_id = await api.create_job(metadata={"blob": BLOB})
        await publish(api, [job_id], 100)  # warm the server up before measuring
        async with await stalled_stream(f"{srv.base_url}/api/jobs/{job_id}/events") as stream:
            assert (await stream.next_event(seconds(5))).json()["version"] == 101
            await stream.expect_synced("101")
            before = srv.rss_bytes()
            published = await publish(api, [job_id], 3000)
            growth = srv.rss_bytes() - before
            final = await api.complete(job_id)
            assert growth < published / 4, f"RSS grew {growth / MiB:.1f} MiB"
            events = await stream.events_until_end(seconds(30))
        assert check_job_order(events)[job_id] == final
        assert len(events) < 3000, "intermediate states were skipped, not all queued"
        conflated = await api.wait_for_metric(
            "jobcast_events_conflated_total", lambda value: value > 0, transport="sse"
        )
        assert conflated >= 1


async def test_stalled_all_jobs_stream_keeps_server_memory_bounded_then_gets_every_final_state(
    server: Start,
) -> None:
    """A stalled all-jobs stream over several busy jobs gets each job's final state on resume."""
    srv = server(JOBS_SEND_TIMEOUT=STALL_FOR_AS_LONG_AS_IT_TAKES)
    async with srv.client() as api:
        job_ids = [await api.create_job(metadata={"blob": BLOB}) for _ in range(5)]
        await publish(api, job_ids, 100)
        stream = await stalled_stream(f"{srv.base_url}/api/jobs/events")
        async with stream:
            snapshot, _ = await stream.until_synced(seconds(5))
            assert sorted(event.json()["jobId"] for event in snapshot) == sorted(job_ids)
            before = srv.rss_bytes()
            published = await publish(api, job_ids, 3000)
            growth = srv.rss_bytes() - before
            finals = {job_id: await api.complete(job_id) for job_id in job_ids}
            assert growth < published / 4, f"RSS grew {growth / MiB:.1f} MiB"
            events: list[Event] = []
            last: dict[str, dict[str, Any]] = {}
            while any(last.get(job_id, {}).get("status") != "completed" for job_id in job_ids):
                events.append(await stream.next_event(seconds(30)))
                last[events[-1].json()["jobId"]] = events[-1].json()
            assert check_job_order(events) == finals
            assert len(events) < 3000
        conflated = await api.wait_for_metric(
            "jobcast_events_conflated_total", lambda value: value > 0, transport="sse"
        )
        assert conflated >= 1
        await api.wait_for_metric("jobcast_connections", lambda v: v == 0, transport="sse")


async def test_reader_that_never_resumes_is_disconnected_while_others_keep_receiving(
    server: Start,
) -> None:
    """With a short send timeout, a stalled reader is dropped and a healthy one is unaffected."""
    srv = server(JOBS_SEND_TIMEOUT="0.5")
    async with srv.client() as api:
        job_id = await api.create_job()
        stalled = await stalled_stream(f"{srv.base_url}/api/jobs/{job_id}/events")
        await stalled.next_event(seconds(5))
        await stalled.expect_synced("1")
        healthy = await SSEStream.open(f"{srv.base_url}/api/jobs/{job_id}/events")
        await healthy.next_event(seconds(5))
        await healthy.expect_synced("1")
        await api.wait_for_metric("jobcast_connections", lambda v: v == 2, transport="sse")
        healthy_versions: list[int] = []

        async def read_healthy() -> None:
            for event in await healthy.events_until_end(seconds(40)):
                healthy_versions.append(event.json()["version"])

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_healthy)
                with anyio.fail_after(seconds(30)):
                    while await api.metric("jobcast_slow_disconnects_total", transport="sse") == 0:
                        await publish(api, [job_id], 40)
                await api.wait_for_metric("jobcast_connections", lambda v: v == 1, transport="sse")
                final = await api.complete(job_id)
            assert healthy_versions[-1] == final["version"]
            assert healthy_versions == sorted(set(healthy_versions))
            assert healthy.ended
            # The stalled reader finds its stream cut short, without the final state.
            leftovers = await stalled.events_until_end(seconds(20))
            assert stalled.eof
            assert not stalled.ended
            assert all(event.json()["status"] != "completed" for event in leftovers)
        finally:
            stalled.close()
            healthy.close()
        await api.wait_for_metric("jobcast_connections", lambda v: v == 0, transport="sse")


def stalled_websocket(srv: RunningServer, sock: socket.socket) -> connect:
    """A WebSocket client that buffers at most two frames: stop calling recv and it stalls.

    It sends no keepalive pings: stalled, it reads no pong either, and would close the
    connection itself (1011) once a stall outlasts its ping timeout, as thousands of
    updates published under a loaded machine can.
    """
    return connect(
        srv.ws_url,
        sock=sock,
        max_queue=2,
        max_size=None,
        compression=None,
        open_timeout=seconds(5),
        ping_interval=None,
    )


async def small_socket(srv: RunningServer) -> socket.socket:
    """A TCP connection to the server with a tiny receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (srv.host, srv.port))
    return sock


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(seconds(30)):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def drain_until_closed(ws: ClientConnection) -> ConnectionClosed:
    """Read whatever is left until the connection closes; the closing exception."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed


async def test_stalled_websocket_is_conflated_then_gets_the_final_state(server: Start) -> None:
    """A WebSocket that stops reading costs bounded memory and gets the final state on resume."""
    srv = server(JOBS_SEND_TIMEOUT=STALL_FOR_AS_LONG_AS_IT_TAKES)
    async with srv.client() as api:
        job_id = await api.create_job(metadata={"blob": BLOB})
        await publish(api, [job_id], 100)
        async with stalled_websocket(srv, await small_socket(srv)) as ws:
            await ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
            with anyio.fail_after(seconds(5)):
                assert json.loads(await ws.recv())["type"] == "subscribed"
                assert json.loads(await ws.recv())["job"]["version"] == 101
                synced = json.loads(await ws.recv())
                assert synced == {"type": "synced", "jobId": job_id, "version": 101}
            before = srv.rss_bytes()
            published = await publish(api, [job_id], WEBSOCKET_UPDATES)
            growth = srv.rss_bytes() - before
            final = await api.complete(job_id)
            assert growth < published / 4, f"RSS grew {growth / MiB:.1f} MiB"
            versions: list[int] = []
            with anyio.fail_after(seconds(30)):
                while not versions or versions[-1] != final["version"]:
                    frame = json.loads(await ws.recv())
                    assert frame["type"] == "job"
                    versions.append(frame["job"]["version"])
            assert frame["job"] == final
            assert versions == sorted(set(versions))
            assert len(versions) < WEBSOCKET_UPDATES
        conflated = await api.wait_for_metric(
            "jobcast_events_conflated_total", lambda value: value > 0, transport="ws"
        )
        assert conflated >= 1


async def test_stalled_reader_that_vanishes_is_cleaned_up_at_once(server: Start) -> None:
    """A reader that stalls and then drops its socket is noticed without waiting for a timeout."""
    srv = server(JOBS_SEND_TIMEOUT="30")
    async with srv.client() as api:
        job_id = await api.create_job()
        stream = await stalled_stream(f"{srv.base_url}/api/jobs/{job_id}/events")
        await stream.next_event(seconds(5))
        await stream.expect_synced("1")
        await publish(api, [job_id], 500)  # enough to fill every buffer on the way
        await api.wait_for_metric("jobcast_connections", lambda v: v == 1, transport="sse")
        stream.abort()
        await api.wait_for_metric(
            "jobcast_connections", lambda v: v == 0, within=10, transport="sse"
        )
        assert await api.metric("jobcast_slow_disconnects_total", transport="sse") == 0


async def test_reader_that_overflows_its_backlog_is_dropped_and_can_resume(server: Start) -> None:
    """A stalled reader behind on more jobs than its backlog is dropped, then resumes to the end."""
    # The writer notices the overflow once its blocked send gives up: keep that short.
    srv = server(JOBS_SUBSCRIBER_BACKLOG="10", JOBS_SEND_TIMEOUT="1")
    async with srv.client() as api:
        stream = await stalled_stream(f"{srv.base_url}/api/jobs/events")
        assert (await stream.until_synced(seconds(5)))[0] == []  # no jobs yet
        job_ids = [await api.create_job() for _ in range(30)]
        with anyio.fail_after(seconds(30)):
            while await api.metric("jobcast_slow_disconnects_total", transport="sse") == 0:
                await publish(api, job_ids, 60)
        await api.wait_for_metric("jobcast_connections", lambda v: v == 0, transport="sse")
        finals = {job_id: await api.complete(job_id) for job_id in job_ids}
        seen = check_job_order(await stream.events_until_end(seconds(20)))
        assert not stream.ended, "the overflowing stream was cut off"
        stream.close()
        async with await SSEStream.open(
            f"{srv.base_url}/api/jobs/events", last_event_id=stream.last_event_id
        ) as again:
            # What changed since its last event, then `synced`: every final state by then.
            events, _ = await again.until_synced(seconds(5))
            for event in events:
                assert event.event == "job", event
                seen[event.json()["jobId"]] = event.json()
            assert {job_id: seen.get(job_id) for job_id in finals} == finals


async def test_unsubscribe_drops_changes_already_waiting_to_be_sent(server: Start) -> None:
    """After `unsubscribed`, a stalled socket gets no frame for that job, even one queued before."""
    srv = server()
    async with srv.client() as api:
        dropped = await api.create_job()
        marker = await api.create_job()
        async with stalled_websocket(srv, await small_socket(srv)) as ws:
            for job_id in (dropped, marker):
                await ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
                assert (await recv_json(ws))["type"] == "subscribed"
                assert (await recv_json(ws))["type"] == "job"
                assert await recv_json(ws) == {"type": "synced", "jobId": job_id, "version": 1}
            await publish(api, [dropped], 500)  # the writer is now stuck behind `dropped`
            await ws.send(json.dumps({"type": "unsubscribe", "jobId": dropped}))
            while (frame := await recv_json(ws))["type"] != "unsubscribed":
                assert frame["job"]["jobId"] == dropped
            await api.update(marker, progress=1)
            frame = await recv_json(ws)
            assert (frame["type"], frame.get("job", {}).get("jobId")) == ("job", marker), frame


async def test_websocket_that_never_resumes_is_disconnected_while_others_keep_receiving(
    server: Start,
) -> None:
    """With a short send timeout, a stalled WebSocket is closed; a healthy one keeps receiving."""
    srv = server(JOBS_SEND_TIMEOUT="0.5")
    async with srv.client() as api:
        job_id = await api.create_job()
        async with (
            stalled_websocket(srv, await small_socket(srv)) as stalled,
            connect(srv.ws_url, max_size=None, open_timeout=seconds(5)) as healthy,
        ):
            for ws in (stalled, healthy):
                await ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
                assert (await recv_json(ws))["type"] == "subscribed"
                assert (await recv_json(ws))["type"] == "job"
                assert await recv_json(ws) == {"type": "synced", "jobId": job_id, "version": 1}
            healthy_jobs: list[dict[str, Any]] = []

            async def read_healthy() -> None:
                while not healthy_jobs or healthy_jobs[-1]["status"] != "completed":
                    healthy_jobs.append((await recv_json(healthy))["job"])

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_healthy)
                with anyio.fail_after(seconds(30)):
                    while await api.metric("jobcast_slow_disconnects_total", transport="ws") == 0:
                        await publish(api, [job_id], 40)
                await api.wait_for_metric("jobcast_connections", lambda v: v == 1, transport="ws")
                final = await api.complete(job_id)
            assert healthy_jobs[-1] == final
            versions = [job["version"] for job in healthy_jobs]
            assert versions == sorted(set(versions))
            with anyio.fail_after(seconds(20)):
                closed = await drain_until_closed(stalled)
            assert closed.rcvd is None or closed.rcvd.code == 1008
