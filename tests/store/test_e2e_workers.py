"""Several real server processes on one redis-server, as a deployment runs them.

Each server is ``python -m app`` on its own port with JOBS_BACKEND=redis;
clients talk to them over real sockets (HTTP, SSE, WebSocket). Servers
are killed, and Redis is stopped and started again, while clients stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.store.redis_client import POOL_SIZE
from tests.conftest import seconds
from tests.store.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
BOOT = seconds(20)  # a server may take this long to start answering
WAIT = seconds(5)  # any awaited event may take this long
REDIS_TIMEOUT = 1.0  # JOBS_REDIS_TIMEOUT of these servers


class Server:
    """One ``python -m app`` process (uvicorn, and its workers if asked) on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "JOBS_PORT": str(self.port)}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            # A session of its own, so its worker processes can be killed with it.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self) -> None:
        """Wait until /healthz answers; fail with the server's log if it never does."""
        deadline = time.monotonic() + BOOT
        async with httpx2.AsyncClient(base_url=self.url, timeout=seconds(1)) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx2.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await anyio.sleep(0.05)
        pytest.fail(f"server on port {self.port} did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL the server and every worker it started: no clean shutdown at all."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=seconds(10))
            self.process = None


@pytest.fixture
def start_servers(tmp_path: Path, redis_prefix: str) -> Iterator[Callable[..., Any]]:
    """Start servers on a Redis URL; all are killed when the test ends."""
    started: list[Server] = []

    async def start(url: str, count: int = 1, **extra: str) -> list[Server]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("JOBS_")}
        env.update(
            JOBS_HOST="127.0.0.1",
            JOBS_BACKEND="redis",
            JOBS_REDIS_URL=url,
            JOBS_REDIS_PREFIX=redis_prefix,
            JOBS_REDIS_TIMEOUT=str(REDIS_TIMEOUT),
            JOBS_SHUTDOWN_TIMEOUT="1",
            **extra,
        )
        servers = [Server(env, tmp_path / f"server-{len(started) + n}.log") for n in range(count)]
        for server in servers:
            started.append(server)
            server.start()
        for server in servers:
            await server.ready()
        return servers

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@dataclass
class Event:
    event: str
    data: str
    id: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SSEReader:
    """A minimal Server-Sent Events parser over an httpx2 streaming response."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> Event | None:
        """The next event, or None once the stream has ended (cleanly or not)."""
        event, data, event_id = "message", list[str](), None
        with anyio.fail_after(WAIT):
            while True:
                try:
                    line = await anext(self._lines)
                except (StopAsyncIteration, httpx2.TransportError):
                    return None
                if not line:
                    if data:
                        return Event(event, "\n".join(data), event_id)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value

    async def jobs(self, count: int) -> list[Event]:
        """The next ``count`` events about jobs (`synced`, the snapshot's end, is passed)."""
        events: list[Event] = []
        while len(events) < count:
            event = await self.next()
            assert event is not None, f"the stream ended after {events}"
            if event.event != "synced":
                events.append(event)
        return events


@contextlib.asynccontextmanager
async def sse(url: str, last_event_id: str | None = None) -> AsyncIterator[SSEReader]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    timeout = httpx2.Timeout(WAIT, read=None)
    async with (
        httpx2.AsyncClient(timeout=timeout) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield SSEReader(response)


async def ws_next(socket: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``, skipping others (subscribed, pong)."""
    with anyio.fail_after(WAIT):
        while True:
            frame: dict[str, Any] = json.loads(await socket.recv())
            if frame["type"] == kind:
                return frame


async def request(method: str, url: str, **kwargs: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=WAIT) as client:
        return await client.request(method, url, **kwargs)


async def create_job(server: Server, **body: Any) -> str:
    response = await request("POST", f"{server.url}/api/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def patch(server: Server, job_id: str, **body: Any) -> dict[str, Any]:
    response = await request("PATCH", f"{server.url}/api/jobs/{job_id}", json=body)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def until_ready(server: Server) -> None:
    """Poll /readyz (another process: there is no event to await) until it answers 200."""
    with anyio.fail_after(WAIT):
        while True:
            if (await request("GET", f"{server.url}/readyz")).status_code == 200:
                return
            await anyio.sleep(0.05)


async def test_changes_through_both_workers_reach_streams_on_one(
    redis_server: str, start_servers: Callable[..., Any]
) -> None:
    """Updates made through two processes reach SSE and WebSocket clients of one, in order."""
    a, b = await start_servers(redis_server, count=2)
    job_id = await create_job(a, jobType="llm_agent")
    async with (
        sse(f"{b.url}/api/jobs/{job_id}/events") as stream,
        connect(f"ws://127.0.0.1:{b.port}/api/jobs/ws") as socket,
    ):
        await socket.send(json.dumps({"type": "subscribe", "jobId": job_id}))
        assert (await stream.jobs(1))[0].json["version"] == 1
        assert (await ws_next(socket, "job"))["job"]["version"] == 1
        for version, writer in enumerate([a, b, a, b, a], start=2):
            await patch(writer, job_id, status="processing", progress=version * 10)
            event = (await stream.jobs(1))[0]
            assert (event.id, event.json["progress"]) == (str(version), version * 10)
            assert (await ws_next(socket, "job"))["job"]["version"] == version
        done = await request("POST", f"{a.url}/api/jobs/{job_id}/complete", json={})
        assert done.status_code == 200
        assert (await stream.jobs(1))[0].json["status"] == "completed"
        assert await stream.next() is None  # a job's stream ends after its terminal state
        assert (await ws_next(socket, "job"))["job"]["status"] == "completed"


async def test_client_resumes_on_the_other_worker_after_sigkill(
    redis_server: str, start_servers: Callable[..., Any]
) -> None:
    """A stream cut by a killed process resumes on another with exactly what it missed."""
    a, b = await start_servers(redis_server, count=2)
    first = await create_job(b)
    second = await create_job(b)
    async with sse(f"{a.url}/api/jobs/events") as stream:
        assert [e.json["jobId"] for e in await stream.jobs(2)] == [first, second]
        await patch(b, first, status="processing")
        seen = (await stream.jobs(1))[0]
        assert (seen.json["jobId"], seen.json["version"]) == (first, 2)
        a.kill()
        assert await stream.next() is None

    await patch(b, first, progress=40)
    await patch(b, first, progress=60)
    third = await create_job(b)
    failed = await request("POST", f"{b.url}/api/jobs/{second}/fail", json={"error": "x"})
    assert failed.status_code == 200
    async with sse(f"{b.url}/api/jobs/events", last_event_id=seen.id) as resumed:
        missed = await resumed.jobs(3)
        assert [(e.event, e.json["jobId"], e.json["version"]) for e in missed] == [
            ("job", first, 4),
            ("job", third, 1),
            ("job", second, 2),
        ]
        await patch(b, third, progress=5)
        after = (await resumed.jobs(1))[0]
        assert (after.json["jobId"], after.json["version"]) == (third, 2)


async def test_redis_outage_answers_503_and_recovers_without_restart(
    private_redis: RedisServer, start_servers: Callable[..., Any]
) -> None:
    """Redis stopped: streams end, writes and /readyz answer 503 fast; Redis back: all works."""
    (server,) = await start_servers(private_redis.url)
    job_id = await create_job(server)
    async with sse(f"{server.url}/api/jobs/events") as stream:
        assert (await stream.jobs(1))[0].json["jobId"] == job_id
        synced = await stream.next()
        assert synced is not None
        assert synced.event == "synced"
        private_redis.stop()
        assert await stream.next() is None

    not_ready = await request("GET", f"{server.url}/readyz")
    assert not_ready.status_code == 503
    # The reason is logged; the answer, open to anyone, names no address.
    assert str(private_redis.port) not in not_ready.text
    assert (await request("GET", f"{server.url}/healthz")).status_code == 200
    started = time.monotonic()
    refused = await request("POST", f"{server.url}/api/jobs", json={})
    assert time.monotonic() - started < REDIS_TIMEOUT + seconds(1.5)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 503
    assert str(private_redis.port) not in refused.text
    assert (await request("GET", f"{server.url}/api/jobs/{job_id}")).status_code == 503

    private_redis.start()
    await until_ready(server)
    again = await create_job(server)
    async with sse(f"{server.url}/api/jobs/events") as stream:
        assert [e.json["jobId"] for e in await stream.jobs(1)] == [again]
        await patch(server, again, status="processing")
        live = (await stream.jobs(1))[0]
        assert (live.json["jobId"], live.json["status"]) == (again, "processing")


async def test_uvicorn_workers_serve_with_redis(
    redis_server: str, start_servers: Callable[..., Any]
) -> None:
    """JOBS_WORKERS=2 on Redis serves, and changes reach a stream whichever worker took them."""
    (server,) = await start_servers(redis_server, JOBS_WORKERS="2")
    job_id = await create_job(server)
    async with sse(f"{server.url}/api/jobs/{job_id}/events") as stream:
        assert (await stream.jobs(1))[0].json["version"] == 1
        for progress in range(10, 60, 10):
            # A fresh connection per request, so the kernel may hand it to either worker.
            job = await patch(server, job_id, progress=progress)
            event = (await stream.jobs(1))[0]
            assert (event.json["version"], event.json["progress"]) == (job["version"], progress)


def test_memory_backend_refuses_several_workers() -> None:
    """JOBS_WORKERS=2 with the memory backend stops at start-up, naming the Redis backend."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("JOBS_")}
    env.update(JOBS_WORKERS="2", JOBS_BACKEND="memory", JOBS_PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOOT,
        check=False,
    )
    assert result.returncode != 0
    assert "JOBS_BACKEND=redis" in result.stderr


async def test_a_crowd_connecting_at_once_gets_every_stream(
    redis_server: str, start_servers: Callable[..., Any]
) -> None:
    """More subscribers at once than the process has Redis connections: each waits its
    turn for one, none is refused (browsers all reconnect together after a restart)."""
    (server,) = await start_servers(redis_server)
    job_id = await create_job(server)
    request = f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    connections: list[anyio.abc.SocketStream] = []
    status_lines: list[bytes] = []

    async def subscribe() -> None:
        connection = await anyio.connect_tcp("127.0.0.1", server.port)
        connections.append(connection)
        await connection.send(request)
        head = b""
        while b"\r\n" not in head:
            head += await connection.receive()
        status_lines.append(head.split(b"\r\n", 1)[0])

    try:
        with anyio.fail_after(WAIT * 4):
            async with anyio.create_task_group() as tasks:
                for _ in range(3 * POOL_SIZE):
                    tasks.start_soon(subscribe)
    finally:
        for connection in connections:
            await connection.aclose()
    assert status_lines == [b"HTTP/1.1 200 OK"] * (3 * POOL_SIZE)


async def test_a_subscription_made_while_redis_is_down_is_never_left_silent(
    private_redis: RedisServer, start_servers: Callable[..., Any]
) -> None:
    """Redis stopped: a WebSocket subscription gets an `unavailable` error naming it (or the
    socket closes so the client reconnects); once Redis is back, subscribing again works."""
    (server,) = await start_servers(private_redis.url)
    job_id = await create_job(server)
    private_redis.stop()
    ws_url = server.url.replace("http", "ws") + "/api/jobs/ws"
    with anyio.fail_after(WAIT):
        async with connect(ws_url) as socket:
            await socket.send(json.dumps({"type": "subscribe", "jobId": job_id}))
            frame, closed_with = None, None
            try:
                frame = json.loads(await socket.recv())
            except ConnectionClosed as closed:  # the feed's loss ends every stream: reconnect
                closed_with = closed.rcvd.code if closed.rcvd else None
    if frame is None:
        assert closed_with == 1012
    else:
        assert (frame["type"], frame["code"], frame["jobId"]) == ("error", "unavailable", job_id)
        assert str(private_redis.port) not in frame["error"]
    private_redis.start()  # with no persistence: the job is gone with the old Redis
    await until_ready(server)
    job_id = await create_job(server)
    with anyio.fail_after(WAIT):
        async with connect(ws_url) as socket:
            await socket.send(json.dumps({"type": "subscribe", "jobId": job_id}))
            answer = json.loads(await socket.recv())
            assert answer["type"] == "subscribed", answer


async def test_cancel_and_delete_through_one_worker_reach_streams_on_the_other(
    redis_server: str, start_servers: Callable[..., Any]
) -> None:
    """A cancel and a delete made through one process reach a stream on the other."""
    a, b = await start_servers(redis_server, count=2)
    job_id = await create_job(a)
    async with sse(f"{b.url}/api/jobs/{job_id}/events") as stream:
        assert (await stream.jobs(1))[0].json["version"] == 1
        asked = await request("POST", f"{a.url}/api/jobs/{job_id}/cancel", json={})
        pushed = (await stream.jobs(1))[0].json
        assert pushed == asked.json()
        assert pushed["cancelRequested"] is True
        assert (await request("DELETE", f"{a.url}/api/jobs/{job_id}")).status_code == 204
        removed = (await stream.jobs(1))[0]
        assert (removed.event, removed.json) == ("removed", {"jobId": job_id})
        assert await stream.next() is None
    assert (await request("GET", f"{b.url}/api/jobs/{job_id}")).status_code == 410


async def test_two_workers_fail_a_stale_job_once(
    redis_server: str, start_servers: Callable[..., Any]
) -> None:
    """With JOBS_STALE_TTL on two processes, an abandoned job fails as stale exactly once."""
    a, b = await start_servers(redis_server, count=2, JOBS_STALE_TTL=str(seconds(0.5)))
    job_id = await create_job(a)
    async with sse(f"{b.url}/api/jobs/{job_id}/events") as stream:
        assert (await stream.jobs(1))[0].json["version"] == 1
        [stale] = await stream.jobs(1)
        assert (stale.json["status"], stale.json["error"], stale.json["version"]) == (
            "error",
            "stale",
            2,
        )
        assert await stream.next() is None
