"""End-to-end fixtures: the real server (``python -m app``) on a free loopback port.

``server`` is a factory: ``server(JOBS_HEARTBEAT="0.2")`` starts one process
with those settings, waits until ``/healthz`` answers, and returns a
:class:`RunningServer`. Every process it started is stopped at teardown,
and teardown fails if the server logged a traceback.

``shared_server`` is the same factory for tests that touch only the jobs they
create: it hands every such test of a test process the same server for the same
settings. A server start is most of what such a test costs (about a second of CPU
with coverage on), and the suite has hundreds of them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.conftest import seconds

ROOT = Path(__file__).resolve().parents[2]


class JobsClient(httpx2.AsyncClient):
    """httpx2, plus the few job calls and metric reads the tests repeat."""

    async def create_job(self, **body: Any) -> str:
        response = await self.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["jobId"]
        return job_id

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        response = await self.patch(f"/api/jobs/{job_id}", json=fields)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def complete(self, job_id: str, **body: Any) -> dict[str, Any]:
        response = await self.post(f"/api/jobs/{job_id}/complete", json=body)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def fail(self, job_id: str, error: str = "boom") -> dict[str, Any]:
        response = await self.post(f"/api/jobs/{job_id}/fail", json={"error": error})
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when the series does not exist yet)."""
        response = await self.get("/metrics")
        assert response.status_code == 200, response.text
        return sample(response.text, name, **labels)

    async def wait_for_metric(
        self, name: str, check: Callable[[float], bool], within: float = 10, **labels: str
    ) -> float:
        """Poll ``/metrics`` until the sample passes ``check``; fail after ``within`` s."""
        deadline = time.monotonic() + seconds(within)
        while True:
            value = await self.metric(name, **labels)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} stayed at {value}")
            await anyio.sleep(0.02)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in exposition text, 0 if absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


@dataclass
class RunningServer:
    """One server process: where it listens, the process itself, and its log."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/api/jobs/ws"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> JobsClient:
        """An HTTP client for this server's REST routes (close it: ``async with``)."""
        return JobsClient(base_url=self.base_url, timeout=seconds(10), **kwargs)

    def rss_bytes(self) -> int:
        """The server process's resident memory, from ``/proc/<pid>/status``."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024

    def interrupt(self) -> None:
        """Send SIGINT, as Ctrl+C does."""
        self.process.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=seconds(5))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=seconds(5))


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies, so no server outlives the run."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_healthy(server: RunningServer, deadline: float) -> bool:
    """Poll ``/healthz`` until it answers 200; False if the process died first.

    This blocks the caller (an async test's loop too) for the start-up only,
    typically a few hundred milliseconds, before any stream is open.
    """
    with httpx2.Client(timeout=seconds(1)) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if client.get(server.base_url + "/healthz").status_code == 200:
                    return True
            except httpx2.TransportError:
                pass
            time.sleep(0.02)
    raise AssertionError(f"the server did not answer /healthz in time:\n{server.log()}")


def _launch(port: int, settings: dict[str, str], log_path: Path) -> RunningServer:
    """``python -m app`` on loopback ``port`` with ``settings``, started (not yet healthy)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("JOBS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    env.update(JOBS_HOST="127.0.0.1", JOBS_PORT=str(port))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return RunningServer("127.0.0.1", port, process, log_path, dict(settings))


def _healthy_or_stopped(server: RunningServer) -> bool:
    try:
        healthy = _wait_until_healthy(server, time.monotonic() + seconds(15))
    except BaseException:
        server.stop()
        raise
    if not healthy:
        server.stop()
    return healthy


def _start(tmp_path: Path, number: int, settings: dict[str, str]) -> RunningServer:
    for attempt in range(3):
        server = _launch(free_port(), settings, tmp_path / f"server-{number}-{attempt}.log")
        if _healthy_or_stopped(server):
            return server
        if "address already in use" not in server.log().lower():
            break
    raise AssertionError(f"the server did not start:\n{server.log()}")


def restart(server: RunningServer, log_path: Path) -> RunningServer:
    """A new server on the stopped ``server``'s port, with its settings (a restart)."""
    again = _launch(server.port, server.env, log_path)
    assert _healthy_or_stopped(again), f"the server did not start again:\n{again.log()}"
    return again


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningServer]]:
    """Start ``python -m app`` with extra ``JOBS_*`` settings; stopped at teardown.

    Teardown fails a passing test whose server logged a traceback; a failing
    test gets the server's log printed instead.
    """
    started: list[RunningServer] = []

    def start(**settings: str) -> RunningServer:
        running = _start(tmp_path, len(started), settings)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
    for running in started:
        _judge(request, f"server log ({running.base_url}, {running.env})", running.log())


def _judge(request: pytest.FixtureRequest, heading: str, log: str) -> None:
    """After a test: print what its server logged if the test failed, else fail the test
    if that log holds a traceback."""
    if request.node.stash.get(_CALL_FAILED, True):
        print(f"--- {heading} ---\n{log}")
    else:
        assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


@pytest.fixture(scope="session")
def _shared_servers() -> Iterator[dict[str, RunningServer]]:
    started: dict[str, RunningServer] = {}
    yield started
    for running in started.values():
        running.stop()


@pytest.fixture
def shared_server(
    _shared_servers: dict[str, RunningServer],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., RunningServer]]:
    """``server``, shared: the test process's server with these settings, started by the
    first test that asks. For tests that neither count what the server holds (the list of
    all jobs, metrics) nor stop it. All-jobs snapshots are not rate-limited on it, since
    every test on it comes from the same address.

    Teardown judges only what the server logged during this test."""
    used: list[tuple[RunningServer, int]] = []

    def start(**settings: str) -> RunningServer:
        key = repr(sorted(settings.items()))
        running = _shared_servers.get(key)
        if running is None or running.process.poll() is not None:
            folder = tmp_path_factory.mktemp("shared-server")
            running = _start(folder, 0, {"JOBS_SNAPSHOT_RATE": "1000", **settings})
            _shared_servers[key] = running
        used.append((running, running.log_path.stat().st_size))
        return running

    yield start
    for running, offset in used:
        with running.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        _judge(request, f"shared server log, this test ({running.base_url})", text)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
