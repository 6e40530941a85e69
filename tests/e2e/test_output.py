"""Job output end to end, on the real server (memory, and Redis on a real redis-server):
every subscriber of SSE (``?output=1``) and WebSocket (``"output": true``) gets every
chunk once, in order, interleaved with the job's changes as they happened, and the
terminal state last; late, interrupted and stalled readers catch up from their offset;
writers on two processes never interleave inside an append or lose one."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from websockets.asyncio.client import connect

from tests.conftest import seconds
from tests.store.redis_server import RedisServer

from .sse_reader import EndOfStream, SSEStream

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
CHUNKS = 10_000
BATCH = 50  # chunks per append
CHANGE_EVERY = 20  # appends between two state changes
READERS = 100  # of each transport
WAIT = seconds(30)
PAD = "." * 500  # the longest any one awaited frame may take, under load


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The settings of a server on each backend (Redis: a redis-server of its own)."""
    if request.param == "memory":
        yield {}
        return
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        yield {"JOBS_BACKEND": "redis", "JOBS_REDIS_URL": redis.url}
    finally:
        redis.stop()


@dataclass
class Received:
    """What one subscriber got, checked as it arrives."""

    name: str = "reader"
    chunks: list[Any] = field(default_factory=list)
    changes: int = 0
    ended: bool = False

    def take(self, kind: str, body: dict[str, Any]) -> None:
        assert not self.ended, f"a {kind} event after the terminal state"
        if kind == "output":
            for chunk in body["chunks"]:
                assert chunk["offset"] == len(self.chunks), "each chunk once, in order"
                self.chunks.append(chunk["data"])
        elif kind == "job":
            # Output appended before a change comes before it, output after it after.
            said, held = body.get("outputSize", 0), len(self.chunks)
            assert said == held, f"{self.name}: a job event says {said} chunks, {held} came"
            self.changes += 1
            self.ended = body["status"] in ("completed", "error")


def expected(count: int = CHUNKS, pad: str = "") -> list[str]:
    return [f"t{offset}{pad}" for offset in range(count)]


async def write(
    api: JobsClient, job_id: str, upto: int = CHUNKS, start: int = 0, pad: str = ""
) -> None:
    """Append chunks ``start`` to ``upto`` in batches (exactly once, by expected offset),
    changing the job's progress every CHANGE_EVERY appends."""
    for number, offset in enumerate(range(start, upto, BATCH)):
        chunks = [{"data": f"t{n}{pad}", "kind": "token"} for n in range(offset, offset + BATCH)]
        body = {"chunks": chunks, "expectedOffset": offset}
        answer = await api.post(f"/api/jobs/{job_id}/output", json=body)
        assert answer.status_code == 200, answer.text
        if number % CHANGE_EVERY == 0:
            await api.update(job_id, status="processing", progress=offset * 100 // CHUNKS)


def sse_url(srv: RunningServer, job_id: str) -> str:
    return f"{srv.base_url}/api/jobs/{job_id}/events?output=1"


async def read_sse(
    srv: RunningServer,
    job_id: str,
    got: Received,
    *,
    last_id: str = "",
    synced: anyio.Event | None = None,
    leave_after: int | None = None,
) -> str:
    """Read the job's output stream into ``got`` until it ends (or, with ``leave_after``,
    until that many chunks are in: then leave); the last event id it held."""
    stream = await SSEStream.open(sse_url(srv, job_id), last_event_id=last_id)
    try:
        while True:
            try:
                event = await stream.next_event(WAIT)
            except EndOfStream:
                return last_id
            # The id of the last event taken: the parser may be further on.
            last_id = event.id
            if event.event == "synced":
                if synced is not None:
                    synced.set()
                continue
            got.take(event.event, event.json())
            if leave_after is not None and len(got.chunks) >= leave_after:
                return last_id
    finally:
        stream.abort()


async def follow_sse(srv: RunningServer, job_id: str, got: Received, **kwargs: Any) -> None:
    """As a browser's EventSource: reconnect with the last id until the job has ended."""
    last_id = ""
    while not got.ended:
        last_id = await read_sse(srv, job_id, got, last_id=last_id, **kwargs)


async def follow_ws(
    srv: RunningServer, job_id: str, got: Received, synced: anyio.Event | None = None
) -> None:
    async with connect(srv.ws_url, open_timeout=WAIT, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "jobId": job_id, "output": True}))
        while not got.ended:
            with anyio.fail_after(WAIT):
                frame = json.loads(await ws.recv())
            kind = frame["type"]
            if kind == "output":
                got.take("output", frame)
            elif kind == "job":
                got.take("job", frame["job"])
            elif kind == "synced" and synced is not None:
                synced.set()
            else:
                assert kind in ("subscribed", "synced"), frame


@pytest.fixture
async def api_of() -> AsyncIterator[Callable[[RunningServer], JobsClient]]:
    opened: list[JobsClient] = []

    def open_client(srv: RunningServer) -> JobsClient:
        opened.append(srv.client())
        return opened[-1]

    yield open_client
    for client in opened:
        await client.aclose()


@pytest.mark.slow
async def test_every_subscriber_gets_every_chunk_once_in_order(
    server: Start, backend: dict[str, str], api_of: Callable[[RunningServer], JobsClient]
) -> None:
    """10 000 chunks appended in batches, with state changes between, while 100 SSE and
    100 WebSocket subscribers read: each gets it all, in order, the terminal state last."""
    srv = server(**backend)
    api = api_of(srv)
    job_id = await api.create_job(jobType="llm_agent")
    readers = [Received() for _ in range(2 * READERS)]
    ready = [anyio.Event() for _ in readers]
    async with anyio.create_task_group() as group:
        for number, (got, synced) in enumerate(zip(readers, ready, strict=True)):
            if number < READERS:
                group.start_soon(partial(follow_sse, srv, job_id, got, synced=synced))
            else:
                group.start_soon(follow_ws, srv, job_id, got, synced)
        with anyio.fail_after(WAIT):
            for synced in ready:
                await synced.wait()
        await write(api, job_id)
        await api.complete(job_id)
    for got in readers:
        assert got.chunks == expected()
        assert got.ended
        assert got.changes >= 2  # the first state and the last, conflated or not between
    sent = await api.metric("jobcast_output_chunks_sent_total", transport="sse")
    assert sent == CHUNKS * READERS  # nothing twice


async def test_late_interrupted_and_stalled_readers_end_with_all_of_it(
    server: Start, backend: dict[str, str], api_of: Callable[[RunningServer], JobsClient]
) -> None:
    """One reader comes after 5 000 chunks, one leaves at a random point and resumes with
    its Last-Event-ID, one stops reading until the server cuts it and then resumes: all
    three end with the whole output."""
    # A small backlog, so a reader that stops is cut soon (and its resume is exercised),
    # and chunks big enough (5 MB in all) that the kernel's buffers cannot hold them all.
    srv = server(
        **backend,
        JOBS_SUBSCRIBER_BACKLOG="20",
        JOBS_SEND_TIMEOUT="2",
        JOBS_OUTPUT_MAX_BYTES=str(16 * 1024 * 1024),
    )
    api = api_of(srv)
    job_id = await api.create_job(jobType="llm_agent")
    late, interrupted, stalled = Received("late"), Received("interrupted"), Received("stalled")
    await write(api, job_id, upto=CHUNKS // 2, pad=PAD)
    async with anyio.create_task_group() as group:
        group.start_soon(follow_sse, srv, job_id, late)

        async def leave_and_come_back() -> None:
            leave_at = random.randrange(1, CHUNKS)
            last_id = await read_sse(srv, job_id, interrupted, leave_after=leave_at)
            assert last_id, "an output stream's events all carry ids"
            while not interrupted.ended:
                last_id = await read_sse(srv, job_id, interrupted, last_id=last_id)

        group.start_soon(leave_and_come_back)

        stall = await SSEStream.open(sse_url(srv, job_id), rcvbuf=4096)
        await write(api, job_id, start=CHUNKS // 2, pad=PAD)
        await api.complete(job_id)
        # Its send blocked past JOBS_SEND_TIMEOUT: the server cuts it. (No backlog does it
        # first: a connection holds a bounded share of the output, the rest in the store.)
        await api.wait_for_metric(
            "jobcast_slow_disconnects_total", lambda cut: cut >= 1, transport="sse"
        )
        # Reading only now: what the socket held, then the end the server cut it at.
        last_id = ""
        try:
            while True:
                event = await stall.next_event(WAIT)
                last_id = event.id
                if event.event != "synced":
                    stalled.take(event.event, event.json())
        except EndOfStream:
            pass
        finally:
            stall.abort()
        assert not stalled.ended, "the stalled reader was cut before the end"
        while not stalled.ended:
            last_id = await read_sse(srv, job_id, stalled, last_id=last_id)
    for got in (late, interrupted, stalled):
        assert got.chunks == expected(pad=PAD)
        assert got.ended


async def test_appenders_on_two_processes_never_interleave_inside_an_append(
    server: Start, api_of: Callable[[RunningServer], JobsClient], tmp_path: Path
) -> None:
    """Two servers on one Redis, a writer on each appending to the same job at once:
    every append lands whole, at consecutive offsets, and none is lost."""
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        settings = {"JOBS_BACKEND": "redis", "JOBS_REDIS_URL": redis.url}
        first, second = server(**settings), server(**settings)
        job_id = await api_of(first).create_job()
        appends, size = 100, 10

        async def writer(srv: RunningServer, name: str) -> None:
            api = api_of(srv)
            for number in range(appends):
                chunks = [{"data": f"{name}{number}-{k}"} for k in range(size)]
                answer = await api.post(f"/api/jobs/{job_id}/output", json={"chunks": chunks})
                assert answer.status_code == 200, answer.text

        async with anyio.create_task_group() as group:
            group.start_soon(writer, first, "a")
            group.start_soon(writer, second, "b")
        data: list[str] = []
        page = {"nextOffset": 0, "chunks": [None]}
        while page["chunks"]:
            answer = await api_of(second).get(
                f"/api/jobs/{job_id}/output?after={page['nextOffset']}&limit=300"
            )
            page = answer.json()
            data += [chunk["data"] for chunk in page["chunks"]]
    finally:
        redis.stop()
    assert len(data) == 2 * appends * size
    runs = [data[i : i + size] for i in range(0, len(data), size)]
    for run in runs:
        name = run[0].rpartition("-")[0]
        assert run == [f"{name}-{k}" for k in range(size)], "an append was split"
    assert sorted(run[0] for run in runs) == sorted(
        f"{name}{number}-0" for name in "ab" for number in range(appends)
    )
