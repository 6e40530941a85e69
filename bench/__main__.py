"""``python -m bench [--quick] [--only SECTION[,SECTION]]``: Jobcast against its references.

One table, one JSON file. Everything runs on loopback, on free ports, started and
stopped here. The servers are pinned to core 0, the receiver, the publisher, the
webhook receiver and wrk to core 1 (the Redis scale-out alone lets its workers use
any core). Each
figure is taken in the same repetition as its reference, back to back, so ratios
hold on a noisy machine; every figure is the median of REPS repetitions.

sections (all by default):
  job     the Jobs API's own scenario, first in the table: one job, one worker PATCHing it
          one request after another, S subscribers on the job's own stream (SSE and WS;
          memory and Redis backends) vs raw; and paced, its latency
  crowd   as many SSE connections as one process may open (20 000 where the file limit
          allows), all on one job's stream, paced: server CPU per event vs S = 1 000,
          idle RSS per connection, latency
  memory  server RSS per idle SSE / WebSocket connection: Jobcast vs the naive app,
          and uvicorn's floor (a bare ASGI app that only keeps the connection open)
  sse     SSE fan-out, saturated: Jobcast vs naive (sse-starlette) vs raw (uvloop)
  ws      WebSocket fan-out, saturated: Jobcast (default, ?batch=1) vs naive vs raw,
          and uvicorn's floor (frames sent in a loop, no application around them)
  paced   latency of a few changes a second: Jobcast vs raw
  poll    GET /api/jobs/{jobId} with wrk: Jobcast vs bare Starlette (needs wrk)
  hooks   write latency (create, PATCH, complete; paced) with every event delivered
          to a slow, a failing and a fast webhook receiver vs no webhooks
  output  job output at LLM speed: 200 jobs appending 50 chunks/s each (in batches),
          5 SSE subscribers per job on ?output=1: chunks/s, server CPU per chunk vs
          per job change (PATCHes to the same streams), latency, RSS per job's output
  scale   SSE fan-out on Redis: two Jobcast workers vs one (needs redis-server)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import functools
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import publisher
from bench.procs import (
    CLIENT_CORE,
    FLOOR,
    HOOK_RECEIVER,
    JOBCAST,
    NAIVE,
    RAW,
    RESULTS,
    ROOT,
    SERVER_CORE,
    ClientRun,
    ProcessSet,
    Server,
    ServerSpec,
    build_client,
    cpu_seconds,
    jobcast_on_redis,
    jobcast_with_webhooks,
    pin,
    redis_server,
    rss_kib,
    start_clients,
    stop_client,
)
from bench.report import Row, Series, machine, ratios, table

REPS = 3
PUBLISHERS = 4  # concurrent PATCH connections: keeps the server busy while one waits
PACED_RATE = 10.0
PACED_P99 = 15.0  # ms, at PACED_RATE changes a second to S = 1 000
JOB_SIZE = 1000  # subscribers of the one job, in the job section
JOB_STREAM = "/api/jobs/{job}/events"  # "{job}" is the job's id
JOB_WS = "/api/jobs/ws#{job}"  # the receiver subscribes to the fragment's job
CROWD = 20_000  # connections the crowd section opens, where the file limit allows
CROWD_RATE = 2.0  # changes a second to the job the crowd watches
CROWD_RECEIVERS = 2  # each C receiver holds its share of the crowd's sockets
CROWD_RESERVED = 64  # the server's own descriptors: listening socket, loop, logs, Redis
CROWD_CPU = 1.2  # server CPU per event at the crowd's size against at S = 1 000
CROWD_MEMORY = 14.0  # KiB of RSS per idle connection
SETTLE_MS = 1000  # between the receivers connecting and RSS read (the crowd section)
POLL_CONNECTIONS = 50
SCALE_SIZE = 1000
HOOK_RATE = 100.0  # job lives a second (create, PATCH, complete): 300 writes a second
HOOK_CONNECTIONS = 4  # the lives run on this many keep-alive connections, paced alike
HOOK_HOLD = 2  # seconds the slow receiver holds each delivery before its 200
# The hooks section's receivers, by result key: the receiver's path, what it does.
HOOK_RECEIVERS = {
    "slow": (f"/hold/{HOOK_HOLD}", f"holds each delivery {HOOK_HOLD} s, then 200"),
    "down": ("/fail", "answers 500 at once (retried)"),
    "fast": ("/ok", "answers 200 at once"),
}
HOOK_TARGET = 1.2  # the write p99 with a slow or failing receiver, against none: "unchanged"
WRITES = ("create", "patch", "complete")
OUTPUT_JOBS = 200
OUTPUT_SUBSCRIBERS = 5  # per job, each on the job's own stream with ?output=1
OUTPUT_RATE = 50.0  # chunks a second per job: tokens at LLM speed
# Chunks per append: a worker buffers its tokens and appends them in batches, as the
# Python client's writer does, so each job appends OUTPUT_RATE / OUTPUT_BATCH times a
# second (5). The writer's default, an append 0.1 s after the oldest
# waiting chunk, would make batches of about 5 at this rate: twice the appends.
OUTPUT_BATCH = 10
OUTPUT_CONNECTIONS = 4  # keep-alive connections the appends (or PATCHes) take turns on
OUTPUT_P99 = 50.0  # ms, append sent to chunk received
# RSS that a job's output adds as it grows, against its bytes: the memory store keeps a
# job's chunks in 16 KiB segments, one newline more per chunk (about 2 % here).
OUTPUT_MEMORY = 1.25
OUTPUT_SETTLE = 0.5  # seconds for the server to let go of closed streams before RSS is read
SECTIONS = ("job", "crowd", "memory", "sse", "ws", "paced", "poll", "hooks", "output", "scale")
SSE_PATH = {"jobcast": "/api/jobs/events", "naive": "/events", "raw": "/events", "floor": "/events"}
WS_PATH = "/api/jobs/ws"
# Jobcast's WebSocket modes, by result key: the query that selects it, its label.
WS_MODES = {"jobcast": ("", "default"), "jobcast_batch": ("?batch=1", "?batch=1")}
MAX_PUBLISHES = 1_000_000  # a count bound on every publishing loop, beside the time bound
Publish = Callable[[asyncio.Event], Coroutine[Any, Any, int]]  # runs until the event is set
Section = tuple[list[Row], dict[str, Any]]  # its table rows, its raw figures for the JSON


@dataclass(frozen=True)
class Plan:
    fanout_sizes: tuple[int, ...]
    ws_sizes: tuple[int, ...]
    memory_size: int
    warmup_ms: int
    window_ms: int
    paced_ms: int
    poll_seconds: int
    hooks_ms: int
    output_ms: int


QUICK = Plan((100, 1000), (1000,), 1000, 500, 1500, 3000, 2, 5000, 3000)
FULL = Plan((100, 1000, 5000), (100, 1000), 5000, 1000, 3000, 10_000, 5, 10_000, 10_000)


@dataclass
class Fanout:
    events_per_s: Series
    server_us_per_event: Series
    server_cpu_pct: Series
    receiver_cpu_pct: Series
    publisher_cpu_pct: Series
    p50_ms: Series
    p99_ms: Series

    @classmethod
    def empty(cls) -> Fanout:
        return cls(*(Series() for _ in range(7)))


@dataclass
class Writes:
    """Write latency under a paced load, and what the server's webhooks did meanwhile."""

    writes_per_s: Series  # answered: 3 * HOOK_RATE unless the server falls behind
    p50_ms: Series  # every write of the window: create, PATCH and complete
    p99_ms: Series
    create_p99_ms: Series
    patch_p99_ms: Series
    complete_p99_ms: Series
    server_us_per_write: Series  # server CPU over the window, per write answered in it
    rss_growth_mib: Series  # server RSS at the window's end, less before the load
    pending: Series  # jobcast_webhooks_pending at the window's end
    sent: Series  # jobcast_webhooks_{sent,retried,failed}_total: increase over the window
    retried: Series
    failed: Series
    received: Series  # requests the receiver got over the window

    @classmethod
    def empty(cls) -> Writes:
        return cls(*(Series() for _ in range(13)))

    def attempted(self) -> bool:
        """Whether deliveries were attempted in every repetition's window."""
        counts = zip(self.sent.values, self.retried.values, self.failed.values, strict=True)
        tried = [sum(each) for each in counts]
        got = self.received.values
        return bool(tried) and all(tried) and len(got) == len(tried) and all(got)


@dataclass
class Streamed:
    """One kind of traffic in the output section, on the same subscribers: output
    appends (``items`` = chunks) or job changes (``items`` = job events)."""

    items_per_s: Series  # delivered: the receiver's count over the window, all subscribers
    events_per_s: Series  # SSE events delivered (output: one per append and subscriber)
    server_us_per_item: Series  # server CPU over the window, per item delivered in it
    server_cpu_pct: Series
    receiver_cpu_pct: Series
    publisher_cpu_pct: Series
    p50_ms: Series  # sent (the append or PATCH) to received, every subscriber sampled
    p99_ms: Series
    written_per_s: Series  # the server's counts: chunks appended or jobs updated
    sent_per_s: Series  # and chunks or events it wrote to SSE subscribers

    @classmethod
    def empty(cls) -> Streamed:
        return cls(*(Series() for _ in range(10)))


@dataclass
class Stored:
    """What the jobs' output holds in the server once appended: RSS against bytes."""

    rss_kib_per_job: Series  # server RSS growth over the output run, per job
    kib_per_job: Series  # jobcast_output_bytes_appended_total over it, per job
    chunks_per_job: Series
    # The same over the output run's window alone, streams open at both ends: what more
    # output costs in the steady state, without what the run's start set up.
    window_rss_kib_per_job: Series
    window_kib_per_job: Series

    @classmethod
    def empty(cls) -> Stored:
        return cls(*(Series() for _ in range(5)))


@dataclass(frozen=True)
class Target:
    """What one figure measures: its subscribers are split evenly over ``servers``
    (one receiver each), its publishers take the servers in turn. A ``{job}`` in
    ``path`` is the published job's id."""

    servers: tuple[Server, ...]
    path: str


class Bench:
    def __init__(
        self, plan: Plan, client: Path, procs: ProcessSet, pythons: tuple[str, ...] = ()
    ) -> None:
        self.plan = plan
        self.client = client
        self.procs = procs
        self.pythons = pythons  # more interpreters to run Jobcast on, in the job section

    async def measure(
        self,
        target: Target,
        runs: list[ClientRun],
        publishers: list[Publish],
        into: Fanout,
        connected: Callable[[], object] | None = None,
    ) -> None:
        """One measurement: receivers connected (then ``connected()`` is called),
        publishers started, CPU over the window."""
        receivers = await start_clients(self.client, runs)
        if connected is not None:
            await asyncio.sleep(SETTLE_MS / 1000)  # the last streams' first writes land
            connected()
        window = runs[0].duration_ms / 1000
        stop = asyncio.Event()
        tasks = [asyncio.create_task(publish(stop)) for publish in publishers]
        try:
            await asyncio.sleep(runs[0].warmup_ms / 1000)
            before = _cpu(target.servers)
            await asyncio.sleep(window)
            after = _cpu(target.servers)
            reports = [await _report(receiver) for receiver in receivers]
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            for receiver in receivers:
                await stop_client(receiver)
        _record(into, reports, before, after, window)

    async def saturate(self, target: Target, mode: str, size: int, into: Fanout) -> None:
        """PUBLISHERS connections PATCH (one job each) as fast as answered."""
        servers = target.servers
        floods: list[Publish] = []
        for index in range(PUBLISHERS):
            server = servers[index % len(servers)]
            job = await job_for(server)
            floods.append(functools.partial(publisher.flood, server.port, job, limit=MAX_PUBLISHES))
        runs = [
            ClientRun(
                mode, server.port, target.path, size // len(servers), self.plan.warmup_ms,
                self.plan.window_ms, max(1, size // 50),
            )
            for server in servers
        ]  # fmt: skip
        await self.measure(target, runs, floods, into)

    async def fanout(self, targets: dict[str, Target], mode: str, size: int) -> dict[str, Fanout]:
        out = {name: Fanout.empty() for name in targets}
        for _ in range(REPS):
            for name, target in targets.items():  # interleaved: figure and references per rep
                await self.saturate(target, mode, size, out[name])
        return out

    async def paced(self, targets: dict[str, Target], size: int) -> dict[str, Fanout]:
        """Unsaturated: one connection PATCHes one job PACED_RATE times a second."""
        return await self.one_job(
            targets,
            lambda server, job: functools.partial(
                publisher.paced, server.port, job, PACED_RATE, limit=MAX_PUBLISHES
            ),
            lambda server, path: ClientRun(
                "sse", server.port, path, size, 500, self.plan.paced_ms, 1
            ),
        )

    async def sequential(
        self, targets: dict[str, Target], mode: str, size: int
    ) -> dict[str, Fanout]:
        """One connection PATCHes one job as fast as answered, one request after another
        (a worker reporting progress); ``size`` subscribers on ``target.path``."""
        return await self.one_job(
            targets,
            lambda server, job: functools.partial(
                publisher.flood, server.port, job, limit=MAX_PUBLISHES
            ),
            lambda server, path: ClientRun(
                mode, server.port, path, size, self.plan.warmup_ms, self.plan.window_ms,
                max(1, size // 50),
            ),
        )  # fmt: skip

    async def one_job(
        self,
        targets: dict[str, Target],
        publish: Callable[[Server, str], Publish],
        receive: Callable[[Server, str], ClientRun],
    ) -> dict[str, Fanout]:
        """Each repetition, each target in turn: a new job on its server, ``publish`` on
        it, one receiver (``receive``) on the target's path for the job."""
        out = {name: Fanout.empty() for name in targets}
        for _ in range(REPS):
            for name, target in targets.items():
                server = target.servers[0]
                job = await job_for(server)
                run = receive(server, target.path.replace("{job}", job))
                await self.measure(target, [run], [publish(server, job)], out[name])
        return out

    async def crowd(self, size: int, into: Fanout) -> float:
        """``size`` SSE connections to one job's stream of a freshly started Jobcast, over
        CROWD_RECEIVERS receivers; CROWD_RATE changes a second to the job. Returns the
        server's RSS per connection before the first change (KiB)."""
        server = self.procs.start_server(JOBCAST)
        try:
            await _warm(server)
            job = await publisher.create_job(server.port)
            path = JOB_STREAM.replace("{job}", job)
            receivers = CROWD_RECEIVERS if size > JOB_SIZE else 1
            runs = [
                ClientRun(
                    "sse", server.port, path, size // receivers,
                    SETTLE_MS + self.plan.warmup_ms, self.plan.paced_ms, max(1, size // 1000),
                )
                for _ in range(receivers)
            ]  # fmt: skip
            base = rss_kib(server.pid)
            pace: Publish = functools.partial(
                publisher.paced, server.port, job, CROWD_RATE, limit=MAX_PUBLISHES
            )
            held: list[int] = []
            await self.measure(
                Target((server,), path), runs, [pace], into,
                connected=lambda: held.append(rss_kib(server.pid)),
            )  # fmt: skip
        finally:
            self.procs.stop(server.proc)
        return (held[0] - base) / (size // receivers * receivers)

    async def memory(self, spec: ServerSpec, mode: str, size: int) -> float:
        """KiB of server RSS per idle connection, on a freshly started server."""
        server = self.procs.start_server(spec)
        try:
            await _warm(server)
            base = rss_kib(server.pid)
            path = WS_PATH if mode == "ws" else SSE_PATH[spec.name]
            run = ClientRun(mode, server.port, path, size, 0, 2000, 0)
            [receiver] = await start_clients(self.client, [run])
            try:
                await asyncio.sleep(1.0)  # the WS subscribe frames and first writes land
                held = rss_kib(server.pid)
            finally:
                await stop_client(receiver)
        finally:
            self.procs.stop(server.proc)
        return (held - base) / size

    async def writes(self, spec: ServerSpec, receiver: Server, path: str, into: Writes) -> None:
        """HOOK_CONNECTIONS connections run job lives, HOOK_RATE a second in all, against a
        freshly started server (one that delivered to a receiver would still be delivering).
        Every write sent in the window is timed; the webhook metrics are read around it."""
        server = self.procs.start_server(spec)
        try:
            await _warm(server)
            base = rss_kib(server.pid)
            samples: list[tuple[str, int, float]] = []
            stop = asyncio.Event()
            pace = HOOK_RATE / HOOK_CONNECTIONS
            tasks = [
                asyncio.create_task(
                    publisher.cycles(server.port, pace, stop, samples, limit=MAX_PUBLISHES)
                )
                for _ in range(HOOK_CONNECTIONS)
            ]
            try:
                await asyncio.sleep(self.plan.warmup_ms / 1000)
                before = await _hook_state(server, receiver, path)
                start = time.monotonic_ns()
                await asyncio.sleep(self.plan.hooks_ms / 1000)
                end = time.monotonic_ns()
                after = await _hook_state(server, receiver, path)
                held = rss_kib(server.pid)
            finally:
                stop.set()
                done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            failure = next((each for each in done if isinstance(each, BaseException)), None)
            if failure is not None:
                raise failure
        finally:
            self.procs.stop(server.proc)
        window = [(kind, ms) for kind, sent, ms in samples if start <= sent < end]
        _record_writes(into, window, before, after, (end - start) / 1e9, held - base)

    async def output(self, changes: Streamed, output: Streamed, stored: Stored) -> None:
        """One repetition of the output section, on a freshly started Jobcast: OUTPUT_JOBS
        jobs, their streams under job changes (PATCH progress), then under output appends,
        each at OUTPUT_RATE / OUTPUT_BATCH requests a second per job. RSS is read with no
        stream open, before and after the output run: what the output left behind."""
        server = self.procs.start_server(JOBCAST)
        try:
            await _warm(server)
            jobs = [await publisher.create_job(server.port) for _ in range(OUTPUT_JOBS)]
            patch = _rotations(server, "PATCH", [f"/api/jobs/{job}" for job in jobs])
            await self.streams(server, jobs, patch, changes, chunks=False)
            await asyncio.sleep(OUTPUT_SETTLE)
            base_kib, base = rss_kib(server.pid), await _metrics(server)
            paths = [f"/api/jobs/{job}/output" for job in jobs]
            append = _rotations(server, "POST", paths, lambda _: publisher.append(OUTPUT_BATCH))
            window = await self.streams(server, jobs, append, output, chunks=True)
            await asyncio.sleep(OUTPUT_SETTLE)
            held_kib, held = rss_kib(server.pid), await _metrics(server)
        finally:
            self.procs.stop(server.proc)

        def per_job(name: str) -> float:
            return (held.get(name, 0.0) - base.get(name, 0.0)) / len(jobs)

        stored.rss_kib_per_job.add((held_kib - base_kib) / len(jobs))
        stored.kib_per_job.add(per_job("jobcast_output_bytes_appended_total") / 1024)
        stored.chunks_per_job.add(per_job("jobcast_output_chunks_appended_total"))
        start, end = window
        stored.window_rss_kib_per_job.add((end["rss_kib"] - start["rss_kib"]) / len(jobs))
        appended = "jobcast_output_bytes_appended_total"
        stored.window_kib_per_job.add((end[appended] - start[appended]) / 1024 / len(jobs))

    async def streams(
        self,
        server: Server,
        jobs: list[str],
        publishers: list[Publish],
        into: Streamed,
        *,
        chunks: bool,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """One window of the output section: OUTPUT_SUBSCRIBERS receivers per job on its
        ``?output=1`` stream, the publishers paced; ``chunks``: the items delivered are
        output chunks (else job events). Returns the server's state (metrics, CPU, RSS)
        at the window's start and end."""
        paths = ",".join(f"/api/jobs/{job}/events?output=1" for job in jobs)
        run = ClientRun(
            "output", server.port, paths, OUTPUT_SUBSCRIBERS * len(jobs), self.plan.warmup_ms,
            self.plan.output_ms, 1,
        )  # fmt: skip
        [receiver] = await start_clients(self.client, [run])
        window = run.duration_ms / 1000
        stop = asyncio.Event()
        tasks = [asyncio.create_task(publish(stop)) for publish in publishers]
        try:
            await asyncio.sleep(run.warmup_ms / 1000)
            before = await _server_state(server)
            await asyncio.sleep(window)
            after = await _server_state(server, metrics_last=True)
            report = await _report(receiver)
        finally:
            stop.set()
            done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            await stop_client(receiver)
        failure = next((each for each in done if isinstance(each, BaseException)), None)
        if failure is not None:
            raise failure
        _record_streamed(into, report, before, after, window, chunks=chunks)
        return before, after


def _rotations(
    server: Server, method: str, paths: list[str], body: Callable[[int], bytes] = publisher.change
) -> list[Publish]:
    """OUTPUT_CONNECTIONS connections, each taking its share of ``paths`` in turn, so that
    every path gets OUTPUT_RATE / OUTPUT_BATCH requests a second; their schedules are
    staggered, so the requests of all of them come evenly spread."""
    total = OUTPUT_RATE / OUTPUT_BATCH * len(paths)  # requests a second, in all
    return [
        functools.partial(
            publisher.rotate, server.port, method, paths[each::OUTPUT_CONNECTIONS], body,
            total / OUTPUT_CONNECTIONS, limit=MAX_PUBLISHES, phase=each / total,
        )
        for each in range(OUTPUT_CONNECTIONS)
    ]  # fmt: skip


async def job_for(server: Server) -> str:
    if server.spec.needs_created_job:
        return await publisher.create_job(server.port)
    return "job_bench"  # the references take any id


async def _warm(server: Server) -> None:
    """One publish first, so lazy imports are not counted as connections."""
    job = await job_for(server)
    conn = await publisher.Connection.open(server.port)
    try:
        await conn.request("PATCH", f"/api/jobs/{job}", publisher.change(0))
    finally:
        conn.close()


async def _report(receiver: asyncio.subprocess.Process) -> dict[str, float]:
    assert receiver.stdout is not None
    report: dict[str, float] = json.loads(await asyncio.wait_for(receiver.stdout.readline(), 30))
    return report


def _cpu(servers: tuple[Server, ...]) -> tuple[float, float]:
    """The servers' CPU and this process's (the publisher's); receivers report their own."""
    return sum(cpu_seconds(server.pid) for server in servers), cpu_seconds(os.getpid())


def _record(
    into: Fanout,
    reports: list[dict[str, float]],
    before: tuple[float, float],
    after: tuple[float, float],
    window: float,
) -> None:
    """Rates and CPU add up over the receivers; latency is the worst receiver's."""
    rate = sum(report["events"] / report["seconds"] for report in reports)
    server_cpu = after[0] - before[0]
    into.events_per_s.add(rate)
    into.server_us_per_event.add(server_cpu * 1e6 / max(rate * window, 1))
    into.server_cpu_pct.add(100 * server_cpu / window)
    into.receiver_cpu_pct.add(sum(100 * r["cpu_s"] / r["seconds"] for r in reports))
    into.publisher_cpu_pct.add(100 * (after[1] - before[1]) / window)
    into.p50_ms.add(max(report["p50_ms"] for report in reports))
    into.p99_ms.add(max(report["p99_ms"] for report in reports))


async def _hook_state(server: Server, receiver: Server, path: str) -> dict[str, float]:
    """The server's webhook metrics, its CPU seconds, and the requests ``path`` of the
    receiver has had."""
    conn = await publisher.Connection.open(server.port)
    try:
        text = (await conn.request("GET", "/metrics")).decode()
    finally:
        conn.close()
    found = re.findall(r"^jobcast_webhooks_(\w+) (\S+)$", text, re.MULTILINE)
    state = {name: float(value) for name, value in found}
    state["cpu_s"] = cpu_seconds(server.pid)
    conn = await publisher.Connection.open(receiver.port)
    try:
        counts = json.loads(await conn.request("GET", "/counts"))
    finally:
        conn.close()
    state["received"] = float(counts.get(path, 0))
    return state


async def _metrics(server: Server) -> dict[str, float]:
    """The server's ``jobcast_*`` samples, by name with their labels."""
    conn = await publisher.Connection.open(server.port)
    try:
        text = (await conn.request("GET", "/metrics")).decode()
    finally:
        conn.close()
    found = re.findall(r"^(jobcast_\w+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


async def _server_state(server: Server, *, metrics_last: bool = False) -> dict[str, float]:
    """The server's metrics, its RSS, its CPU seconds and this process's (the
    publisher's), the CPU read on the window's side of the /metrics request (which it
    then leaves out)."""
    if metrics_last:
        cpu = _cpu((server,))
        state = await _metrics(server)
    else:
        state = await _metrics(server)
        cpu = _cpu((server,))
    state["cpu_s"], state["publisher_cpu_s"] = cpu
    state["rss_kib"] = rss_kib(server.pid)
    return state


def _record_streamed(
    into: Streamed,
    report: dict[str, float],
    before: dict[str, float],
    after: dict[str, float],
    window: float,
    *,
    chunks: bool,
) -> None:
    """Items are output chunks (``chunks``) or job events; rates are per second."""
    items = report["chunks"] if chunks else report["events"]
    rate = items / report["seconds"]
    server_cpu = after["cpu_s"] - before["cpu_s"]

    def per_s(name: str) -> float:
        return (after.get(name, 0.0) - before.get(name, 0.0)) / window

    sse = '{transport="sse"}'
    publisher_cpu = after["publisher_cpu_s"] - before["publisher_cpu_s"]
    into.items_per_s.add(rate)
    into.events_per_s.add(report["events"] / report["seconds"])
    into.server_us_per_item.add(server_cpu * 1e6 / max(rate * window, 1))
    into.server_cpu_pct.add(100 * server_cpu / window)
    into.receiver_cpu_pct.add(100 * report["cpu_s"] / report["seconds"])
    into.publisher_cpu_pct.add(100 * publisher_cpu / window)
    into.p50_ms.add(report["p50_ms"])
    into.p99_ms.add(report["p99_ms"])
    if chunks:
        into.written_per_s.add(per_s("jobcast_output_chunks_appended_total"))
        into.sent_per_s.add(per_s("jobcast_output_chunks_sent_total" + sse))
    else:
        into.written_per_s.add(per_s("jobcast_jobs_updated_total"))
        into.sent_per_s.add(per_s("jobcast_events_sent_total" + sse))


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with ``share`` of them at or below."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def _record_writes(
    into: Writes,
    window: list[tuple[str, float]],
    before: dict[str, float],
    after: dict[str, float],
    seconds: float,
    growth_kib: int,
) -> None:
    every = [ms for _, ms in window]
    into.writes_per_s.add(len(every) / seconds)
    into.p50_ms.add(percentile(every, 0.50))
    into.p99_ms.add(percentile(every, 0.99))
    for kind, series in zip(
        WRITES, (into.create_p99_ms, into.patch_p99_ms, into.complete_p99_ms), strict=True
    ):
        series.add(percentile([ms for each, ms in window if each == kind], 0.99))
    into.server_us_per_write.add((after["cpu_s"] - before["cpu_s"]) * 1e6 / max(len(every), 1))
    into.rss_growth_mib.add(growth_kib / 1024)
    into.pending.add(after.get("pending", 0.0))
    for name, series in (("sent", into.sent), ("retried", into.retried), ("failed", into.failed)):
        key = f"{name}_total"
        series.add(after.get(key, 0.0) - before.get(key, 0.0))
    into.received.add(after["received"] - before["received"])


def wrk(port: int, path: str, seconds: int) -> tuple[float, float]:
    """Requests/s and p99 ms from wrk (1 thread, 50 connections, on the client core)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{POLL_CONNECTIONS}", f"-d{seconds}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
        preexec_fn=lambda: pin(0, CLIENT_CORE),
    ).stdout  # fmt: skip
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if rps is None or p99 is None:
        raise RuntimeError(f"wrk printed what this does not parse:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(rps.group(1)), float(p99.group(1)) * scale


async def polling(bench: Bench, jobcast: Server, naive: Server) -> dict[str, Series]:
    job = await publisher.create_job(jobcast.port)
    conn = await publisher.Connection.open(jobcast.port)
    body = await conn.request("GET", f"/api/jobs/{job}")
    conn.close()
    # The bare endpoint answers exactly the bytes Jobcast answers.
    conn = await publisher.Connection.open(naive.port)
    await conn.request("POST", "/poll-body", body)
    conn.close()
    out = {key: Series() for key in ("jobcast_rps", "jobcast_p99", "bare_rps", "bare_p99")}
    for _ in range(REPS):
        for name, server in (("jobcast", jobcast), ("bare", naive)):
            rps, p99 = wrk(server.port, f"/api/jobs/{job}", bench.plan.poll_seconds)
            out[f"{name}_rps"].add(rps)
            out[f"{name}_p99"].add(p99)
    return out


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def detail(r: Fanout) -> str:
    """µs of server CPU per event · CPU % server/receiver/publisher · p50/p99 ms."""
    cpu = "/".join(s.show(0) for s in (r.server_cpu_pct, r.receiver_cpu_pct, r.publisher_cpu_pct))
    return f"{r.server_us_per_event.show(1)} · {cpu} · {r.p50_ms.show(1)}/{r.p99_ms.show(1)}"


def fanout_rows(label: str, size: int, res: dict[str, Fanout], modes: dict[str, str]) -> list[Row]:
    """Each Jobcast mode (result key: label) against naive and raw, then one detail row each."""
    rows: list[Row] = []
    targeted = size == 1000
    for key, mode in modes.items():
        which = f" (Jobcast {mode})" if mode else ""
        for reference, goal in (("naive", 2.0), ("raw", 0.6)):
            ratio = ratios(res[key].events_per_s, res[reference].events_per_s)
            rows.append(
                Row(
                    f"{label} S={size} events/s vs {reference}{which}",
                    res[key].events_per_s.show(0) if reference == "naive" else "",
                    f"{reference} " + res[reference].events_per_s.show(0),
                    ratio.show(2),
                    f"≥ {goal:g}x" if targeted else "",
                    verdict(ratio.median >= goal) if targeted else "",
                )
            )
    for name, r in res.items():
        shown = f"jobcast {modes[name]}" if modes.get(name) else name
        rows.append(_detail_row(shown, r))
    return rows


def _detail_row(name: str, r: Fanout) -> Row:
    label = f"  {name}: server µs/event · CPU% server/receiver/publisher · p50/p99 ms"
    return Row(label, "", detail(r), "", "", "")


def scale_rows(size: int, res: dict[str, Fanout]) -> list[Row]:
    ratio = ratios(res["two"].events_per_s, res["one"].events_per_s)
    return [
        Row(
            f"Redis scale-out S={size}: 2 workers vs 1 worker events/s",
            res["two"].events_per_s.show(0),
            "1 worker " + res["one"].events_per_s.show(0),
            ratio.show(2),
            "≥ 1.7x",
            verdict(ratio.median >= 1.7),
        ),
        _detail_row("1 worker", res["one"]),
        _detail_row("2 workers (sum; worst p50/p99)", res["two"]),
    ]


def paced_rows(size: int, res: dict[str, Fanout], stream: str) -> list[Row]:
    job, raw = res["jobcast"], res["raw"]
    return [
        Row(
            f"paced {PACED_RATE:g}/s S={size} {stream} p50 ms",
            job.p50_ms.show(2),
            "raw " + raw.p50_ms.show(2),
            ratios(job.p50_ms, raw.p50_ms).show(1),
            "",
            "",
        ),
        Row(
            f"paced {PACED_RATE:g}/s S={size} {stream} p99 ms",
            job.p99_ms.show(2),
            "raw " + raw.p99_ms.show(2),
            ratios(job.p99_ms, raw.p99_ms).show(1),
            f"≤ {PACED_P99:g} ms",
            verdict(job.p99_ms.median <= PACED_P99),
        ),
    ]


def polling_rows(res: dict[str, Series]) -> list[Row]:
    ratio = ratios(res["jobcast_rps"], res["bare_rps"])
    return [
        Row(
            f"poll GET req/s ({POLL_CONNECTIONS} conns, wrk)",
            res["jobcast_rps"].show(0),
            "bare Starlette " + res["bare_rps"].show(0),
            ratio.show(2),
            "≥ 0.8x",
            verdict(ratio.median >= 0.8),
        ),
        Row(
            "poll GET p99 ms",
            res["jobcast_p99"].show(2),
            "bare Starlette " + res["bare_p99"].show(2),
            ratios(res["jobcast_p99"], res["bare_p99"]).show(1),
            "",
            "",
        ),
    ]


def memory_rows(size: int, res: dict[str, Series]) -> list[Row]:
    rows = []
    for mode, kind in (("sse", "SSE"), ("ws", "WS")):
        jobcast, naive, floor = (res[f"{name}_{mode}"] for name in ("jobcast", "naive", "floor"))
        rows.append(
            Row(
                f"RSS KiB per idle {kind} conn S={size}",
                jobcast.show(1),
                f"naive {naive.show(1)} · uvicorn floor {floor.show(1)}",
                ratios(jobcast, naive).show(2),
                "≤ 16 KiB",
                verdict(jobcast.median <= 16),
            )
        )
    return rows


def hooks_rows(res: dict[str, Writes]) -> list[Row]:
    """Per receiver: the write p99 against no webhooks, then what the webhooks did."""
    none = res["none"]
    load = f"{3 * HOOK_RATE:g} writes/s"
    rows: list[Row] = []
    for key, (_, does) in HOOK_RECEIVERS.items():
        r = res[key]
        ratio = ratios(r.p99_ms, none.p99_ms)
        targeted = key != "fast"  # the fast receiver measures delivering itself
        if not r.attempted():
            met = "NO: no deliveries"  # the receiver was not in play: the figure says nothing
        else:
            met = verdict(ratio.median <= HOOK_TARGET) if targeted else ""
        rows.append(
            Row(
                f"write p99 ms ({load}), webhook receiver {does}",
                r.p99_ms.show(2),
                "no webhooks " + none.p99_ms.show(2),
                ratio.show(2),
                f"≤ {HOOK_TARGET:g}x" if targeted else "",
                met,
            )
        )
    for key, r in res.items():
        rows.append(_writes_row(key, r))
    return rows


def output_rows(res: dict[str, Streamed], stored: Stored) -> list[Row]:
    """Kept up, CPU per chunk against per job change, latency, then memory and details."""
    output, changes = res["output"], res["changes"]
    expected = OUTPUT_JOBS * OUTPUT_RATE * OUTPUT_SUBSCRIBERS
    kept = Series([rate / expected for rate in output.items_per_s.values])
    cpu = ratios(output.server_us_per_item, changes.server_us_per_item)
    memory = ratios(stored.rss_kib_per_job, stored.kib_per_job)
    growth = ratios(stored.window_rss_kib_per_job, stored.window_kib_per_job)
    jobs = f"{OUTPUT_JOBS} jobs x {OUTPUT_RATE:g} chunks/s, {OUTPUT_SUBSCRIBERS} SSE subs each"
    change_rate = OUTPUT_JOBS * OUTPUT_RATE / OUTPUT_BATCH
    return [
        Row(
            f"output chunks/s delivered ({jobs})",
            output.items_per_s.show(0),
            f"expected {expected:,.0f}".replace(",", " "),
            kept.show(2),
            "kept up (≥ 0.98x)",
            verdict(kept.median >= 0.98),
        ),
        Row(
            "output server µs per delivered chunk vs per delivered job change",
            output.server_us_per_item.show(2),
            f"job changes ({change_rate:g} PATCH/s, same streams) "
            + changes.server_us_per_item.show(2),
            cpu.show(2),
            "≤ 1x",
            verdict(cpu.median <= 1),
        ),
        Row(
            "output append→receive p50 / p99 ms",
            f"{output.p50_ms.show(1)} / {output.p99_ms.show(1)}",
            f"job changes {changes.p50_ms.show(1)} / {changes.p99_ms.show(1)}",
            ratios(output.p99_ms, changes.p99_ms).show(2),
            f"p99 ≤ {OUTPUT_P99:g} ms",
            verdict(output.p99_ms.median <= OUTPUT_P99),
        ),
        Row(
            "output RSS KiB a job's output adds as it grows (the window, streams open) vs its "
            "bytes (KiB)",
            stored.window_rss_kib_per_job.show(1),
            f"stored {stored.window_kib_per_job.show(1)}",
            growth.show(2),
            f"≤ {OUTPUT_MEMORY:g}x",
            verdict(growth.median <= OUTPUT_MEMORY),
        ),
        Row(
            "  output RSS KiB per job after the run, no stream open, vs its bytes (KiB): the "
            "bytes and a constant",
            "",
            f"{stored.rss_kib_per_job.show(1)} vs {stored.kib_per_job.show(1)} in "
            f"{stored.chunks_per_job.show(0)} chunks",
            memory.show(2),
            "",
            "",
        ),
        *(_streamed_row(name, r) for name, r in res.items()),
    ]


def _streamed_row(name: str, r: Streamed) -> Row:
    label = (
        f"  {name}: server µs/item · CPU% server/receiver/publisher · events/s · "
        "server written/sent per s"
    )
    cpu_pcts = (r.server_cpu_pct, r.receiver_cpu_pct, r.publisher_cpu_pct)
    shown = (
        f"{r.server_us_per_item.show(2)} · {'/'.join(s.show(0) for s in cpu_pcts)} · "
        f"{r.events_per_s.show(0)} · {r.written_per_s.show(0)}/{r.sent_per_s.show(0)}"
    )
    return Row(label, "", shown, "", "", "")


def _writes_row(name: str, r: Writes) -> Row:
    label = (
        f"  {name}: writes/s · p50 ms · p99 create/PATCH/complete ms · server µs/write · "
        "RSS +MiB · webhooks pending at end · sent/retried/failed, receiver got (in window)"
    )
    p99s = "/".join(s.show(1) for s in (r.create_p99_ms, r.patch_p99_ms, r.complete_p99_ms))
    counts = "/".join(s.show(0) for s in (r.sent, r.retried, r.failed))
    shown = (
        f"{r.writes_per_s.show(0)} · {r.p50_ms.show(2)} · {p99s} · "
        f"{r.server_us_per_write.show(0)} · {r.rss_growth_mib.show(1)} · {r.pending.show(0)} · "
        f"{counts}, {r.received.show(0)}"
    )
    return Row(label, "", shown, "", "", "")


def not_measured(figure: str, why: str) -> Section:
    return [Row(figure, "", why, "", "", "not measured")], {}


def crowd_size(nofile: int) -> int:
    """CROWD, or as many connections as the server may open under the file limit (every
    process of the run gets the same, hard, limit)."""
    return min(CROWD, nofile - CROWD_RESERVED)


def crowd_rows(size: int, res: dict[str, Fanout], idle_kib: Series) -> list[Row]:
    crowd, small = res["crowd"], res["small"]
    cpu = ratios(crowd.server_us_per_event, small.server_us_per_event)
    return [
        Row(
            f"SSE S={size} on one job, paced {CROWD_RATE:g}/s: server µs per event vs S=1000",
            crowd.server_us_per_event.show(2),
            "S=1000 " + small.server_us_per_event.show(2),
            cpu.show(2),
            f"≤ {CROWD_CPU:g}x",
            verdict(cpu.median <= CROWD_CPU),
        ),
        Row(
            f"SSE S={size}: RSS KiB per idle connection",
            idle_kib.show(1),
            "",
            "",
            f"≤ {CROWD_MEMORY:g} KiB",
            verdict(idle_kib.median <= CROWD_MEMORY),
        ),
        Row(
            f"SSE S={size}, paced {CROWD_RATE:g}/s: p50 / p99 ms",
            f"{crowd.p50_ms.show(1)} / {crowd.p99_ms.show(1)}",
            f"S=1000 {small.p50_ms.show(1)} / {small.p99_ms.show(1)}",
            "",
            "",
            "",
        ),
        _detail_row(f"S={size}", crowd),
        _detail_row("S=1000", small),
    ]


async def crowd_section(bench: Bench, nofile: int) -> Section:
    """Each repetition, on freshly started servers: S = 1 000, then the crowd."""
    size = crowd_size(nofile)
    res = {"small": Fanout.empty(), "crowd": Fanout.empty()}
    idle_kib = Series()
    for _ in range(REPS):
        await bench.crowd(JOB_SIZE, res["small"])
        idle_kib.add(await bench.crowd(size, res["crowd"]))
    data = {f"crowd_{size}": _values(res), "crowd_idle_kib": idle_kib.values}
    return crowd_rows(size, res, idle_kib), data


async def memory_section(bench: Bench) -> Section:
    size = bench.plan.memory_size
    kinds = {
        f"{spec.name}_{mode}": (spec, mode)
        for mode in ("sse", "ws")
        for spec in (JOBCAST, NAIVE, FLOOR)
    }
    mem = {key: Series() for key in kinds}
    for _ in range(REPS):
        for key, (spec, mode) in kinds.items():
            mem[key].add(await bench.memory(spec, mode, size))
    return memory_rows(size, mem), {"memory": {k: v.values for k, v in mem.items()}}


async def sse_section(bench: Bench, servers: dict[str, Server]) -> Section:
    targets = {name: Target((server,), SSE_PATH[name]) for name, server in servers.items()}
    rows: list[Row] = []
    data: dict[str, Any] = {}
    for size in bench.plan.fanout_sizes:
        res = await bench.fanout(targets, "sse", size)
        rows += fanout_rows("SSE fan-out", size, res, {"jobcast": ""})
        data[f"sse_fanout_{size}"] = _values(res)
    return rows, data


async def ws_section(bench: Bench, servers: dict[str, Server]) -> Section:
    jobcast = servers["jobcast"]
    targets = {key: Target((jobcast,), WS_PATH + query) for key, (query, _) in WS_MODES.items()}
    targets |= {name: Target((servers[name],), WS_PATH) for name in ("naive", "raw", "floor")}
    modes = {key: label for key, (_, label) in WS_MODES.items()}
    rows: list[Row] = []
    data: dict[str, Any] = {}
    for size in bench.plan.ws_sizes:
        res = await bench.fanout(targets, "ws", size)
        rows += fanout_rows("WS fan-out", size, res, modes)
        rows.append(floor_row(size, res))
        data[f"ws_fanout_{size}"] = _values(res)
    return rows, data


def floor_row(size: int, res: dict[str, Fanout]) -> Row:
    """uvicorn's own ceiling for one frame per message: every send made in a loop."""
    floor, naive = res["floor"].events_per_s, res["naive"].events_per_s
    return Row(
        f"WS fan-out S={size} events/s, uvicorn floor (one send per frame, no app) vs naive",
        "",
        f"floor {floor.show(0)} · naive {naive.show(0)}",
        ratios(floor, naive).show(2),
        "",
        "",
    )


def job_rows(kind: str, size: int, res: dict[str, Fanout]) -> list[Row]:
    """Jobcast (memory) against raw, Jobcast on Redis against Jobcast on memory."""
    memory, raw = res["jobcast"].events_per_s, res["raw"].events_per_s
    to_raw = ratios(memory, raw)
    rows = [
        Row(
            f"{kind} one job S={size}, one sequential publisher: events/s vs raw",
            memory.show(0),
            "raw " + raw.show(0),
            to_raw.show(2),
            "≥ 0.6x" if kind == "SSE" else "",
            verdict(to_raw.median >= 0.6) if kind == "SSE" else "",
        )
    ]
    if "redis" in res:
        on_redis = ratios(res["redis"].events_per_s, memory)
        rows.append(
            Row(
                f"{kind} one job S={size}, one sequential publisher: Redis backend vs memory",
                res["redis"].events_per_s.show(0),
                "memory " + memory.show(0),
                on_redis.show(2),
                "≥ 0.8x",
                verdict(on_redis.median >= 0.8),
            )
        )
    this = "python " + ".".join(platform.python_version_tuple()[:2])
    for name in [name for name in res if name.startswith("python ")]:
        other = ratios(res[name].events_per_s, memory)
        rows.append(
            Row(
                f"{kind} one job S={size}, one sequential publisher: Jobcast on {name} vs {this}",
                res[name].events_per_s.show(0),
                f"{this} " + memory.show(0),
                other.show(2),
                "",
                "",
            )
        )
    shown = {"jobcast": f"jobcast memory ({this})", "redis": "jobcast redis", "raw": "raw"}
    rows += [_detail_row(shown.get(name, f"jobcast on {name}"), r) for name, r in res.items()]
    return rows


async def job_section(bench: Bench, servers: dict[str, Server]) -> Section:
    """The Jobs API's own scenario: one job, its worker, its watchers."""
    jobcast, raw = servers["jobcast"], servers["raw"]
    rows: list[Row] = []
    data: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="jobcast-bench-redis-") as directory:
        started = await _jobcast_on_redis(bench, Path(directory))
        on_redis = started[1] if started else None
        others = {}
        try:
            for program in bench.pythons:
                spec = dataclasses.replace(JOBCAST, program=program)
                others[f"python {python_version(program)}"] = server = bench.procs.start_server(
                    spec
                )
                await _warm(server)
            for kind, mode, path, raw_path in (
                ("SSE", "sse", JOB_STREAM, SSE_PATH["raw"]),
                ("WS", "ws", JOB_WS, JOB_WS),
            ):
                targets = {"jobcast": Target((jobcast,), path)}
                if on_redis is not None:
                    targets["redis"] = Target((on_redis,), path)
                targets["raw"] = Target((raw,), raw_path)
                targets |= {name: Target((server,), path) for name, server in others.items()}
                res = await bench.sequential(targets, mode, JOB_SIZE)
                rows += job_rows(kind, JOB_SIZE, res)
                data[f"job_{mode}_{JOB_SIZE}"] = _values(res)
        finally:
            for server in [*reversed(started or ()), *others.values()]:
                bench.procs.stop(server.proc)
    if on_redis is None:
        rows.append(not_measured("one job on the Redis backend", "redis-server not on PATH")[0][0])
    targets = {"jobcast": Target((jobcast,), JOB_STREAM), "raw": Target((raw,), SSE_PATH["raw"])}
    res = await bench.paced(targets, JOB_SIZE)
    rows += paced_rows(JOB_SIZE, res, "one job's stream")
    data[f"job_paced_{JOB_SIZE}"] = _values(res)
    return rows, data


def python_version(program: str) -> str:
    """``major.minor`` of the interpreter ``program``."""
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    return subprocess.run(
        [program, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def parse_pythons(text: str) -> tuple[str, ...]:
    """``--pythons``: interpreters that run and can import Jobcast's server, from here."""
    programs = tuple(name.strip() for name in text.split(",") if name.strip())
    for program in programs:
        try:
            subprocess.run(
                [program, "-c", "import app.serve, uvloop"], cwd=ROOT, capture_output=True,
                check=True, timeout=60,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            raise argparse.ArgumentTypeError(
                f"{program} does not run Jobcast's server (make one with: python3.12 -m venv "
                ".venv-3.12 && .venv-3.12/bin/pip install -e '.[redis]')"
            ) from None
    return programs


async def _jobcast_on_redis(bench: Bench, directory: Path) -> tuple[Server, Server] | None:
    """Redis on the client core and a Jobcast on it, on the server core; None without
    redis-server."""
    if not shutil.which("redis-server"):
        return None
    redis_spec = dataclasses.replace(redis_server(directory), cores=frozenset(CLIENT_CORE))
    redis = bench.procs.start_server(redis_spec)
    url = f"redis://127.0.0.1:{redis.port}/0"
    spec = dataclasses.replace(jobcast_on_redis(url), cores=frozenset(SERVER_CORE))
    server = bench.procs.start_server(spec)
    await _warm(server)
    return redis, server


async def paced_section(bench: Bench, servers: dict[str, Server]) -> Section:
    targets = {name: Target((servers[name],), SSE_PATH[name]) for name in ("jobcast", "raw")}
    res = await bench.paced(targets, 1000)
    return paced_rows(1000, res, "all-jobs stream"), {"paced_1000": _values(res)}


async def poll_section(bench: Bench, servers: dict[str, Server]) -> Section:
    if not shutil.which("wrk"):
        return not_measured("poll GET req/s", "wrk not on PATH")
    res = await polling(bench, servers["jobcast"], servers["naive"])
    return polling_rows(res), {"polling": {k: v.values for k, v in res.items()}}


async def scale_section(bench: Bench) -> Section:
    figure = f"Redis scale-out S={SCALE_SIZE}: 2 workers vs 1 worker events/s"
    if not shutil.which("redis-server"):
        return not_measured(figure, "redis-server not on PATH")
    with tempfile.TemporaryDirectory(prefix="jobcast-bench-redis-") as directory:
        redis = bench.procs.start_server(redis_server(Path(directory)))
        try:
            res = await scale_out(bench, f"redis://127.0.0.1:{redis.port}/0")
        finally:
            bench.procs.stop(redis.proc)
    return scale_rows(SCALE_SIZE, res), {f"redis_scale_{SCALE_SIZE}": _values(res)}


async def scale_out(bench: Bench, redis_url: str) -> dict[str, Fanout]:
    """SSE fan-out through one Jobcast worker, then two on the same Redis, per repetition."""
    res = {"one": Fanout.empty(), "two": Fanout.empty()}
    path = SSE_PATH["jobcast"]
    worker = jobcast_on_redis(redis_url)
    first = bench.procs.start_server(worker)
    try:
        await _warm(first)
        for _ in range(REPS):
            await bench.saturate(Target((first,), path), "sse", SCALE_SIZE, res["one"])
            # Started for its figure only: an idle second worker would still follow the feed.
            second = bench.procs.start_server(worker)
            try:
                await _warm(second)
                pair = Target((first, second), path)
                await bench.saturate(pair, "sse", SCALE_SIZE, res["two"])
            finally:
                bench.procs.stop(second.proc)
    finally:
        bench.procs.stop(first.proc)
    return res


async def hooks_section(bench: Bench) -> Section:
    """Each repetition: no webhooks, then each receiver, back to back, each server fresh."""
    receiver = bench.procs.start_server(HOOK_RECEIVER)
    try:
        res = {name: Writes.empty() for name in ("none", *HOOK_RECEIVERS)}
        for _ in range(REPS):
            await bench.writes(JOBCAST, receiver, "", res["none"])
            for key, (path, _) in HOOK_RECEIVERS.items():
                spec = jobcast_with_webhooks(f"http://127.0.0.1:{receiver.port}{path}")
                await bench.writes(spec, receiver, path, res[key])
    finally:
        bench.procs.stop(receiver.proc)
    data = {name: {k: v.values for k, v in vars(r).items()} for name, r in res.items()}
    return hooks_rows(res), {"hooks": data}


async def output_section(bench: Bench) -> Section:
    """Each repetition: job changes, then output, on one freshly started Jobcast."""
    res = {"output": Streamed.empty(), "changes": Streamed.empty()}
    stored = Stored.empty()
    for _ in range(REPS):
        await bench.output(res["changes"], res["output"], stored)
    data = {name: {k: v.values for k, v in vars(r).items()} for name, r in res.items()}
    data["stored"] = {k: v.values for k, v in vars(stored).items()}
    return output_rows(res, stored), {"output": data}


SectionOnServers = Callable[[Bench, dict[str, Server]], Coroutine[Any, Any, Section]]
# The sections measured on the one set of Jobcast, naive and raw servers, in table order.
ON_SHARED_SERVERS: dict[str, SectionOnServers] = {
    "job": job_section,
    "sse": sse_section,
    "ws": ws_section,
    "paced": paced_section,
    "poll": poll_section,
}


def _values(res: dict[str, Fanout]) -> dict[str, Any]:
    return {name: vars(fanout) for name, fanout in res.items()}


async def run(
    plan: Plan,
    sections: frozenset[str],
    client: Path,
    procs: ProcessSet,
    nofile: int,
    pythons: tuple[str, ...],
) -> Section:
    bench = Bench(plan, client, procs, pythons)
    rows: list[Row] = []
    data: dict[str, Any] = {}
    # Memory first, on fresh servers: later runs would leave freed memory to reuse.
    memory = await memory_section(bench) if "memory" in sections else ([], {})
    data |= memory[1]
    shared = [name for name in ON_SHARED_SERVERS if name in sections]
    if shared:
        servers = {spec.name: procs.start_server(spec) for spec in (JOBCAST, NAIVE, RAW, FLOOR)}
        for server in servers.values():
            await _warm(server)
        for name in shared:
            section_rows, section_data = await ON_SHARED_SERVERS[name](bench, servers)
            rows += section_rows
            data |= section_data
        for server in servers.values():  # idle now; the scale-out may use core 0 too
            procs.stop(server.proc)
    if "crowd" in sections:  # its own servers, one at a time
        section_rows, section_data = await crowd_section(bench, nofile)
        rows += section_rows
        data |= section_data
    if "hooks" in sections:  # its own servers, one at a time
        section_rows, section_data = await hooks_section(bench)
        rows += section_rows
        data |= section_data
    if "output" in sections:  # its own servers, one at a time
        section_rows, section_data = await output_section(bench)
        rows += section_rows
        data |= section_data
    if "scale" in sections:
        section_rows, section_data = await scale_section(bench)
        rows += section_rows
        data |= section_data
    rows += memory[0]
    return rows, data


def parse_sections(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(names - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or '(none given)'}; sections: "
            + ", ".join(SECTIONS)
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short run (about 3 minutes)")
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=frozenset(SECTIONS),
        metavar="SECTION[,SECTION]",
        help="run these sections only (default: all): " + ", ".join(SECTIONS),
    )
    parser.add_argument(
        "--pythons",
        type=parse_pythons,
        default=(),
        metavar="PYTHON[,PYTHON]",
        help="also run Jobcast on these interpreters in the job section, side by side (each "
        "with Jobcast installed: python3.12 -m venv .venv-3.12 && .venv-3.12/bin/pip install "
        "-e '.[redis]')",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    sections: frozenset[str] = args.only
    nofile = raise_nofile()
    pin(0, CLIENT_CORE)  # this process publishes: it belongs on the client core
    client = build_client()
    if client is None:
        raise SystemExit("bench: gcc is needed to build the C receiver (apt-get install gcc)")
    procs = ProcessSet()
    # SIGTERM stops the run like Ctrl-C does: through the clean-up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    try:
        rows, data = uvloop.run(run(plan, sections, client, procs, nofile, args.pythons))
    except KeyboardInterrupt:
        raise SystemExit("bench: interrupted (every process it started is stopped)") from None
    finally:
        procs.close()
    info = machine()
    title = _title(info, nofile, time.monotonic() - started, sections)
    print(table(title, rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "plan": vars(plan),
        "sections": [name for name in SECTIONS if name in sections],
        "results": data,
        "table": [vars(r) for r in rows],
    }
    # A partial run keeps its own file, so it never overwrites a full run's results.
    chosen = [name for name in SECTIONS if name in sections]
    name = "latest.json" if len(chosen) == len(SECTIONS) else f"latest-{'-'.join(chosen)}.json"
    (RESULTS / name).write_text(json.dumps(payload, indent=2, default=str))


def _title(
    info: dict[str, str], nofile: int, seconds: float, sections: frozenset[str]
) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    libs = ", ".join(f"{name} {info[name]}" for name in ("starlette", "uvicorn", "uvloop"))
    libs += ", " + ", ".join(
        f"{name} {info[name]}" for name in ("httptools", "sse-starlette", "websockets", "orjson")
    )
    lines = [
        f"Jobcast benchmark — {now}, `{info['command']}` ({seconds:.0f} s)",
        f"Machine: {info['nproc']} cores, {info['cpu']}, Linux {info['kernel']}, "
        f"Python {info['python']}; {libs}; RLIMIT_NOFILE {nofile}",
        "Server pinned to core 0; C epoll receiver + publisher (4 keep-alive PATCH "
        "connections) + wrk on core 1. SSE: the all-jobs stream. WS: one subscribe-all per "
        "connection; events = job messages, a batch frame counting each. Each cell: median "
        f"[min..max] of {REPS} interleaved repetitions; ratio = median of per-repetition ratios.",
    ]
    if "hooks" in sections:
        lines.append(
            f"Webhooks: {HOOK_CONNECTIONS} connections run {HOOK_RATE:g} job lives a second "
            "(create, PATCH, complete), each on a freshly started Jobcast (memory backend), "
            "with no webhooks or with JOBS_WEBHOOK_EVENTS=all to one receiver (uvicorn, core "
            "1); latency = each write's, sent to answered, pooled over the window."
        )
    if "output" in sections:
        lines.append(
            f"Output: {OUTPUT_JOBS} jobs each append {OUTPUT_RATE:g} chunks/s of ~20 bytes of "
            f"JSON in batches of {OUTPUT_BATCH} (a buffered writer flushing every "
            f"{1000 * OUTPUT_BATCH / OUTPUT_RATE:g} ms: {OUTPUT_RATE / OUTPUT_BATCH:g} appends/s "
            f"per job), paced over {OUTPUT_CONNECTIONS} keep-alive connections; "
            f"{OUTPUT_SUBSCRIBERS} SSE subscribers per job on ?output=1, one C receiver; "
            "against job changes (PATCH progress, as many requests, no output) on the same "
            "streams of the same freshly started Jobcast, back to back; latency = the append "
            "(or PATCH) sent to its event received, every subscriber sampled; RSS read with "
            "no stream open, before and after the output run."
        )
    if "scale" in sections:
        lines.append(
            "Redis scale-out: Jobcast workers NOT pinned (any core, sharing core 1 with the "
            "receivers and publisher, which stay there); one receiver per worker (S/2 each), "
            "publishers spread over the workers; server CPU = the workers' (redis-server not "
            "counted); latency = the worse receiver's."
        )
    return lines


if __name__ == "__main__":
    main()
