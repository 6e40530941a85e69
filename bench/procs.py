"""Processes of the benchmark: the servers under test, Redis and the C receivers.

Every process is started here, pinned to its core(s), and stopped by ``ProcessSet``
on the way out, also after Ctrl-C or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER_CORE = {0}
CLIENT_CORE = {1}
# Every core this process may use, read before the benchmark pins itself to CLIENT_CORE.
ANY_CORE = frozenset(os.sched_getaffinity(0))
TICK = os.sysconf("SC_CLK_TCK")
UVICORN = ["-m", "uvicorn", "--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools"]
# Receivers' pids still running, for ProcessSet.close to stop after an interruption.
RECEIVERS: set[int] = set()
# Access logs would cost every server the same per request; off for all of them.
QUIET = ["--no-access-log", "--log-level", "warning"]


def pin(pid: int, cores: set[int]) -> None:
    """Pin ``pid`` to ``cores`` where this machine has them (a 1-core box cannot)."""
    usable = cores & os.sched_getaffinity(0) if pid == 0 else cores
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, usable or os.sched_getaffinity(0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    name: str
    args: tuple[str, ...]  # after the program; "{port}" is replaced
    env: tuple[tuple[str, str], ...] = ()  # "{port}" is replaced in values too
    program: str = sys.executable
    cores: frozenset[int] = frozenset(SERVER_CORE)
    # Jobcast answers 404 to a PATCH of a job it has not created; the references take any id.
    needs_created_job: bool = False


JOBCAST = ServerSpec(
    "jobcast",
    ("-m", "app"),  # as `make run` serves it: uvicorn with uvloop and httptools
    (
        ("JOBS_HOST", "127.0.0.1"),
        ("JOBS_PORT", "{port}"),
        # The references run without access logs too; they would cost every server alike.
        ("JOBS_ACCESS_LOG", "0"),
        # The stream, connection and snapshot limits guard a real server; the benchmark
        # opens up to 5 000 streams at once, all from one address.
        ("JOBS_MAX_STREAMS", "20000"),
        ("JOBS_MAX_CONNECTIONS", "20000"),
        ("JOBS_SNAPSHOT_RATE", "1000000"),
        ("JOBS_DEMO", "0"),
    ),
    needs_created_job=True,
)
NAIVE = ServerSpec("naive", (*UVICORN, *QUIET, "--port", "{port}", "bench.naive_app:app"))
RAW = ServerSpec("raw", ("-m", "bench.raw_server", "{port}"))
FLOOR = ServerSpec("floor", (*UVICORN, *QUIET, "--port", "{port}", "bench.floor_app:app"))


# The hooks section's webhook receiver, on the client core like the other clients.
HOOK_RECEIVER = ServerSpec(
    "hook-receiver",
    (*UVICORN, *QUIET, "--port", "{port}", "bench.hook_receiver:app"),
    cores=frozenset(CLIENT_CORE),
)
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a throwaway key, as the settings want


def jobcast_with_webhooks(url: str) -> ServerSpec:
    """Jobcast delivering every event (``JOBS_WEBHOOK_EVENTS=all``) to ``url``. A failed
    delivery is tried again at least once a second (``JOBS_WEBHOOK_BACKOFF_MAX=1``), so a
    failing receiver is retried throughout a window rather than at 1, 2, 4, 8… s."""
    env = (
        *JOBCAST.env,
        ("JOBS_WEBHOOK_URLS", url),
        ("JOBS_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("JOBS_WEBHOOK_EVENTS", "all"),
        ("JOBS_WEBHOOK_BACKOFF_MAX", "1"),
    )
    return dataclasses.replace(JOBCAST, name="jobcast-webhooks", env=env)


def redis_server(directory: Path) -> ServerSpec:
    """A throwaway Redis: nothing saved, its log in ``directory``."""
    args = ("--bind", "127.0.0.1", "--port", "{port}", "--save", "", "--appendonly", "no")
    log = ("--dir", str(directory), "--logfile", str(directory / "redis.log"))
    return ServerSpec("redis", (*args, *log), program="redis-server", cores=ANY_CORE)


def jobcast_on_redis(url: str) -> ServerSpec:
    """A Jobcast worker of a scale-out: the Redis backend, and any core the kernel picks."""
    env = (*JOBCAST.env, ("JOBS_BACKEND", "redis"), ("JOBS_REDIS_URL", url))
    return dataclasses.replace(JOBCAST, name="jobcast-redis", env=env, cores=ANY_CORE)


class Server:
    def __init__(self, spec: ServerSpec, proc: subprocess.Popen[bytes], port: int) -> None:
        self.spec = spec
        self.proc = proc
        self.port = port

    @property
    def pid(self) -> int:
        return self.proc.pid


class ProcessSet:
    """Owns every child process; ``close`` stops them all (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_server(self, spec: ServerSpec) -> Server:
        port = free_port()
        args = [arg.replace("{port}", str(port)) for arg in spec.args]
        proc = subprocess.Popen(
            [spec.program, *args],
            cwd=ROOT,
            env={**os.environ, **{k: v.replace("{port}", str(port)) for k, v in spec.env}},
            # Own session: a Ctrl-C reaches the benchmark only, which then stops this cleanly.
            start_new_session=True,
        )
        self.procs.append(proc)
        pin(proc.pid, set(spec.cores))
        _wait_listening(port, proc)
        return Server(spec, proc, port)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        # Receivers still running when the event loop was torn down (a signal mid-run).
        for pid in list(RECEIVERS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            RECEIVERS.discard(pid)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start in {timeout} s")


def build_client() -> Path | None:
    """Compile the C receiver into bench/results; None when gcc is missing."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    binary = RESULTS / "sse_client"
    source = ROOT / "bench" / "sse_client.c"
    try:
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True, timeout=60
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return binary


@dataclass(frozen=True)
class ClientRun:
    mode: str  # "sse" or "ws"
    port: int
    path: str
    subscribers: int
    warmup_ms: int
    duration_ms: int
    sample_every: int


async def start_client(binary: Path, run: ClientRun) -> asyncio.subprocess.Process:
    """Start the receiver and return once all its connections have their response head."""
    args = [run.mode, "127.0.0.1", str(run.port), run.path, str(run.subscribers)]
    args += [str(run.warmup_ms), str(run.duration_ms), str(run.sample_every)]
    proc = await asyncio.create_subprocess_exec(
        str(binary), *args, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    RECEIVERS.add(proc.pid)
    pin(proc.pid, CLIENT_CORE)
    assert proc.stdout is not None
    # The client gives up by itself after 60 s of connecting; this bound is a backstop.
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        if line.strip() != b"READY":
            raise RuntimeError("client failed to connect (its stderr says why)")
    except BaseException:  # also Ctrl-C: no receiver outlives the benchmark
        await stop_client(proc)
        raise
    return proc


async def start_clients(binary: Path, runs: list[ClientRun]) -> list[asyncio.subprocess.Process]:
    """Start receivers side by side (their windows then coincide); all or none run."""
    started = await asyncio.gather(
        *(start_client(binary, run) for run in runs), return_exceptions=True
    )
    receivers = [proc for proc in started if isinstance(proc, asyncio.subprocess.Process)]
    failure = next((error for error in started if isinstance(error, BaseException)), None)
    if failure is not None:
        for proc in receivers:
            await stop_client(proc)
        raise failure
    return receivers


async def stop_client(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()
    RECEIVERS.discard(proc.pid)
